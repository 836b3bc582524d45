"""Load profiles: how hard and how often each mesh is measured."""

from __future__ import annotations

from pydantic import Field, model_validator

from meshbench.config.common import Duration, StrictModel


class LoadProfile(StrictModel):
    """How one mesh is loaded: the study's Fortio settings plus the repetition plan."""

    qps: int = Field(6000, ge=0, description="Requested QPS; 0 asks for as fast as possible.")
    connections: int = Field(1, ge=1, le=1024)
    duration: Duration = Field(60.0, description="Length of each measured run.")
    warmup: bool = Field(True, description="Run one identical, discarded run first.")
    warmup_duration: Duration | None = Field(None, description="Defaults to `duration`.")
    runs_per_iteration: int = Field(3, ge=1, le=100)
    iterations: int = Field(5, ge=1, le=99)
    min_positive: int = Field(10, ge=0, description="Fewer positive measured runs fail the run.")
    histogram_resolution: float = Field(0.00005, gt=0, le=0.01, description="Seconds.")
    duration_tolerance: float = Field(
        0.05, gt=0, lt=1, description="Largest accepted relative gap between actual and requested."
    )

    @model_validator(mode="after")
    def _min_positive_reachable(self) -> LoadProfile:
        planned = self.iterations * self.runs_per_iteration
        if self.min_positive > planned:
            raise ValueError(
                f"min_positive ({self.min_positive}) exceeds the {planned} measured runs planned "
                f"(iterations {self.iterations} × runs_per_iteration {self.runs_per_iteration})"
            )
        return self

    @property
    def effective_warmup_duration(self) -> float:
        return self.warmup_duration or self.duration

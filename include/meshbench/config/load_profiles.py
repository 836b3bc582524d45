"""Load profiles: how hard and how often each mesh is measured.

A profile is one load step (``qps`` and ``connections``, as the study ran it) or a ladder:
``steps``, each with its connections and either ``max`` (closed loop, as fast as the path
answers) or a target rate. Every step of a ladder runs inside each iteration, on the same
install, as its own measured runs (with their own paired baseline where that is on).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from meshbench.config.common import Duration, StrictModel

MAX_RATE = "max"


class LoadStep(StrictModel):
    """One rung of a ladder: how many connections, at what rate."""

    connections: int = Field(ge=1, le=1024)
    qps: int | Literal["max"] = Field(
        description="Target requests per second over all connections, or 'max' (closed loop)."
    )

    @model_validator(mode="after")
    def _rate_reachable_per_connection(self) -> LoadStep:
        if self.qps != MAX_RATE and self.qps < self.connections:
            raise ValueError(
                f"qps {self.qps} is below one request per second on each of the "
                f"{self.connections} connections"
            )
        return self

    @property
    def target_qps(self) -> int:
        """The target rate; 0 for ``max``, as ``LoadProfile.qps`` spells it."""
        return 0 if self.qps == MAX_RATE else int(self.qps)

    @property
    def key(self) -> str:
        """A short name for the step, unique within a ladder: ``c4-max``, ``c8-q2000``."""
        rate = MAX_RATE if self.qps == MAX_RATE else f"q{self.qps}"
        return f"c{self.connections}-{rate}"


class LoadProfile(StrictModel):
    """How one mesh is loaded: the study's Fortio settings plus the repetition plan."""

    qps: int = Field(6000, ge=0, description="Requested QPS; 0 asks for as fast as possible.")
    connections: int = Field(1, ge=1, le=1024)
    fixed_rate: bool = Field(
        False,
        description="Pace requests at `qps` with a rate-controlled load generator. Without it "
        "local runs go as fast as possible (wrk), as the study's unreachable target did; "
        "Fortio always paces at `qps`. Ladder steps with a target rate set it.",
    )
    steps: list[LoadStep] | None = Field(
        None, min_length=1, description="A ladder: replaces `qps` and `connections`."
    )
    step_index: int = Field(
        1, ge=1, description="Which step of the ladder this is (set per step, not in the config)."
    )
    duration: Duration = Field(60.0, description="Length of each measured run.")
    warmup: bool = Field(True, description="Run one identical, discarded run first.")
    warmup_duration: Duration | None = Field(None, description="Defaults to `duration`.")
    runs_per_iteration: int = Field(
        3, ge=1, le=100, description="Measured runs per iteration, of each step of a ladder."
    )
    iterations: int = Field(5, ge=1, le=99)
    min_positive: int = Field(10, ge=0, description="Fewer positive measured runs fail the run.")
    histogram_resolution: float = Field(0.00005, gt=0, le=0.01, description="Seconds.")
    duration_tolerance: float = Field(
        0.05, gt=0, lt=1, description="Largest accepted relative gap between actual and requested."
    )

    @model_validator(mode="after")
    def _steps_distinct(self) -> LoadProfile:
        keys = [step.key for step in self.steps or []]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"steps: each step must differ; repeated: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _min_positive_reachable(self) -> LoadProfile:
        planned = self.planned_measured_runs
        if self.min_positive > planned:
            steps = f" × {len(self.ladder())} steps" if self.steps else ""
            raise ValueError(
                f"min_positive ({self.min_positive}) exceeds the {planned} measured runs planned "
                f"(iterations {self.iterations} × runs_per_iteration {self.runs_per_iteration}"
                f"{steps})"
            )
        return self

    @property
    def effective_warmup_duration(self) -> float:
        return self.warmup_duration or self.duration

    @property
    def planned_measured_runs(self) -> int:
        return self.iterations * self.runs_per_iteration * len(self.ladder())

    @property
    def is_ladder(self) -> bool:
        return bool(self.steps) and len(self.steps) > 1

    def ladder(self) -> list[LoadStep]:
        """The steps in the order they run; a profile without ``steps`` is one step."""
        if self.steps:
            return list(self.steps)
        return [LoadStep(connections=self.connections, qps=self.qps or MAX_RATE)]

    def at_step(self, index: int) -> LoadProfile:
        """The profile of step ``index`` (1-based) alone, as one load-generator run uses it."""
        if not self.steps:
            if index != 1:
                raise ValueError(f"load step {index}: this profile has one step")
            return self
        if not 1 <= index <= len(self.steps):
            raise ValueError(f"load step {index}: the ladder has {len(self.steps)} steps")
        step = self.steps[index - 1]
        return self.model_copy(
            update={
                "qps": step.target_qps,
                "connections": step.connections,
                "fixed_rate": step.qps != MAX_RATE,
                "steps": None,
                "step_index": index,
            }
        )

    def step_key(self) -> str:
        """The key of the one step this profile runs (see ``LoadStep.key``)."""
        return self.ladder()[0].key if not self.steps else self.steps[self.step_index - 1].key

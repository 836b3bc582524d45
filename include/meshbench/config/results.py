"""What happens to results: where artifacts go, regression detection, daily aggregation."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from meshbench.config.common import StrictModel


class ArtifactSettings(StrictModel):
    """Where raw results, reports and charts are written before anything else reads them.

    A local folder by default; ``s3://bucket/prefix`` (through the Airflow connection
    ``conn_id``) when tasks run on several workers.
    """

    base_uri: str | None = Field(None, description="Defaults to file://<state folder>/artifacts.")
    conn_id: str | None = Field(None, description="Airflow connection for s3:// URIs.")

    @field_validator("base_uri")
    @classmethod
    def _scheme(cls, uri: str | None) -> str | None:
        if uri is not None and not re.match(r"^(file|s3|gs|gcs|abfs|az)://", uri):
            raise ValueError("must be a URI such as file:///var/meshbench or s3://bucket/prefix")
        return uri


class RegressionNotifications(StrictModel):
    """Where new regressions are announced besides the task log (always written).

    A channel is used only when its provider is installed and its Airflow connection exists;
    otherwise the log says which one is missing.
    """

    slack_webhook_conn_id: str | None = Field(
        "meshbench_slack", description="Connection for apache-airflow-providers-slack."
    )
    smtp_conn_id: str | None = Field(
        "meshbench_smtp", description="Connection for apache-airflow-providers-smtp."
    )
    email_to: list[str] = Field(default_factory=list, description="Recipients of the email.")


SeriesMetric = Literal["qps", "avg_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms"]


class OtavaSettings(StrictModel):
    """Apache Otava's E-divisive means with a t-test, run on a series' daily medians.

    The defaults are the measured ones (benchmarks/results/regression_methods.txt): 5 %
    false alarms per 40-day history at 5 %/3 % noise, a 10 % step found in every history
    at up to 3 % noise.
    """

    window: int = Field(30, ge=3, le=365, description="Days per sliding window (window_len).")
    max_pvalue: float = Field(
        0.0001, gt=0, lt=1, description="Largest t-test p-value of a change point."
    )
    min_magnitude: float = Field(
        0.05, ge=0, lt=10, description="Smallest relative change of the mean that counts."
    )


class RegressionSettings(StrictModel):
    """Regression detection over history (meshbench.analysis.regression).

    ``method: otava`` (the default) finds change points in each series' daily medians with
    Apache Otava (settings under ``otava``). ``method: mann-whitney-u`` compares each day's
    positive measured runs of one environment × mesh × mesh version × load profile with
    the runs of a trailing window of earlier days by a two-sided Mann-Whitney U test; a
    day is flagged when the p-value is below ``alpha``, the medians differ by at least
    ``min_change`` and the day's median lies more than ``day_noise_factor`` robust
    standard deviations of the window's daily medians away. ``environments`` holds
    per-environment overrides, merged over these settings (``for_environment``).
    """

    method: Literal["otava", "mann-whitney-u"] = "otava"
    otava: OtavaSettings = OtavaSettings()
    enabled: bool = True
    metrics: list[SeriesMetric] = Field(
        default_factory=lambda: ["qps", "avg_ms", "p90_ms", "p99_ms", "p999_ms"]
    )
    window_days: int = Field(14, ge=2, le=365, description="Calendar days before the tested day.")
    min_window_days: int = Field(7, ge=2, description="Fewer days with runs: not tested.")
    min_runs_per_day: int = Field(3, ge=2, description="Fewer positive runs: day not tested.")
    alpha: float = Field(0.01, gt=0, lt=0.5, description="Significance level of the test.")
    min_change: float = Field(
        0.05, ge=0, lt=10, description="Smallest relative change of the median that counts."
    )
    day_noise_factor: float = Field(
        4.0, ge=0, description="Change in robust SDs of the window's daily medians; 0: off."
    )
    history_days: int = Field(
        180, ge=2, le=3650, description="History replayed to find earlier change points."
    )
    notifications: RegressionNotifications = RegressionNotifications()
    environments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-environment overrides of these settings, merged over them.",
    )

    def for_environment(self, environment: str | None) -> RegressionSettings:
        """These settings with ``environments[environment]`` merged over them."""
        override = self.environments.get(environment or "")
        if not override:
            return self
        merged = _merged(self.model_dump(exclude={"environments"}), override)
        try:
            return RegressionSettings.model_validate(merged)
        except ValueError as error:
            raise ValueError(f"regression.environments.{environment}: {error}") from error

    @model_validator(mode="after")
    def _overrides_valid(self) -> RegressionSettings:
        for environment, override in self.environments.items():
            if "environments" in override:
                raise ValueError(f"regression.environments.{environment} cannot nest environments")
            self.for_environment(environment)
        return self

    @model_validator(mode="after")
    def _window_fits(self) -> RegressionSettings:
        if self.min_window_days > self.window_days:
            raise ValueError(
                f"min_window_days ({self.min_window_days}) exceeds window_days ({self.window_days})"
            )
        if self.history_days < self.window_days:
            raise ValueError(
                f"history_days ({self.history_days}) is shorter than window_days "
                f"({self.window_days})"
            )
        return self


class AggregationSettings(StrictModel):
    """How the daily summary treats runs the deviation check flags (meshbench.analysis.aggregate).

    Every positive run counts in the means by default, as the study defined them; flagged
    runs are listed with their reason. Leaving them out is this explicit setting, recorded
    in each summary row and shown in every table it affects.
    """

    exclude_flagged_runs: bool = False


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, nested mappings merged key by key."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result

"""Synthetic benchmark histories for testing and measuring regression detection.

Shaped after real runs: every day a fresh pair of clusters (a day-level offset), several
runs a day with their own noise, and now and then a run hit by a hiccup (a heavy tail).
The study's Equinix runs vary by about 1 % between runs; the defaults here are noisier on
purpose, so the measured false-positive rate is an upper bound for such environments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert

from meshbench.analysis.regression import DayRuns
from meshbench.results.models import Measurement, Run

FIRST_DAY = date(2026, 1, 1)


@dataclass(frozen=True)
class NoiseModel:
    run_cv: float = 0.02  # relative SD between runs of one day (the study: about 0.01)
    day_cv: float = 0.01  # relative SD of a day's level (a new cluster pair each day)
    outlier_rate: float = 0.03  # share of runs hit by a hiccup
    outlier_size: float = 0.30  # how much slower such a run is


def synthetic_days(
    seed: int,
    days: int = 40,
    runs_per_day: int = 15,
    level: float = 0.68,
    step_after_day: int | None = None,
    step: float = 0.0,
    noise: NoiseModel | None = None,
    versions: dict[int, str] | None = None,
) -> list[DayRuns]:
    """Days 1..``days`` of one metric; days after ``step_after_day`` are ``step`` higher.

    ``versions`` maps the first day of each mesh version to the version (default one
    unnamed version throughout).
    """
    noise = noise or NoiseModel()
    rng = np.random.default_rng(seed)
    starts = sorted((versions or {1: ""}).items())
    result = []
    for number in range(1, days + 1):
        day_level = level * (1 + rng.normal(0, noise.day_cv))
        if step_after_day is not None and number > step_after_day:
            day_level *= 1 + step
        values = day_level * (1 + rng.normal(0, noise.run_cv, runs_per_day))
        hiccups = rng.random(runs_per_day) < noise.outlier_rate
        values[hiccups] *= 1 + noise.outlier_size
        version = [name for first, name in starts if first <= number][-1]
        result.append(DayRuns(day=day_of(number), mesh_version=version, values=values))
    return result


def day_of(number: int) -> date:
    return FIRST_DAY + timedelta(days=number - 1)


def as_run_frame(
    days: list[DayRuns],
    environment: str = "synthetic",
    mesh: str = "istio",
    column: str = "p99_ms",
    profile: str = "q6000-c1-d60s",
) -> pd.DataFrame:
    """One row per run, in the shape of ``fetch_run_history``."""
    rows = [
        {
            "environment": environment,
            "mesh": mesh,
            "mesh_version_key": day.mesh_version,
            "benchmark_date": day.day,
            "load_profile_key": profile,
            column: float(value),
        }
        for day in days
        for value in day.values
    ]
    return pd.DataFrame(rows)


# Other metrics of a synthetic run, as fractions of its p99 (a plausible latency shape).
_SHAPE = {"min_ms": 0.5, "p50_ms": 0.76, "avg_ms": 0.78, "p75_ms": 0.79, "p90_ms": 0.83}
_TAIL = {"p999_ms": 1.4, "max_ms": 3.0}


def insert_history(
    engine: Engine,
    days: list[DayRuns],
    environment: str = "synthetic",
    mesh: str = "istio",
    qps: int = 6000,
    duration_s: float = 60.0,
    negative: dict[date, str] | None = None,
) -> None:
    """Store a synthetic history as runs and positive measured runs (values are p99 in ms).

    ``negative`` adds one negative measured run with the given reason on those dates. Runs
    are marked ``synthetic`` in their settings and raw JSON, never passed off as measured.
    """
    negative = negative or {}
    with engine.begin() as connection:
        for day in days:
            started = datetime.combine(day.day, time(12), tzinfo=UTC)
            run_id = connection.execute(
                insert(Run).returning(Run.id),
                {
                    "source_key": f"synthetic:{environment}:{mesh}:{day.day}",
                    "environment": environment,
                    "mesh": mesh,
                    "mesh_version": day.mesh_version or None,
                    "benchmark_date": day.day,
                    "attempt": 1,
                    "qps": qps,
                    "connections": 1,
                    "duration_s": duration_s,
                    "iterations": 1,
                    "runs_per_iteration": len(day.values),
                    "settings": {"synthetic": True},
                    "state": "success",
                    "started_at": started,
                },
            ).scalar_one()
            rows = []
            for index, p99 in enumerate(day.values, start=1):
                avg = _SHAPE["avg_ms"] * p99
                rows.append(
                    {
                        "run_id": run_id,
                        "iteration": 1,
                        "phase": "measured",
                        "run_index": index,
                        "positive": True,
                        "requested_qps": float(qps),
                        "requested_duration_s": duration_s,
                        "actual_duration_s": duration_s,
                        "actual_qps": 1000.0 / avg,
                        "connections": 1,
                        "request_count": int(duration_s * 1000.0 / avg),
                        "error_count": 0,
                        "stddev_ms": 0.1 * p99,
                        "p99_ms": float(p99),
                        **{column: factor * p99 for column, factor in _SHAPE.items()},
                        **{column: factor * p99 for column, factor in _TAIL.items()},
                        "raw": {"synthetic": True},
                    }
                )
            connection.execute(insert(Measurement), rows)
            if day.day in negative:
                connection.execute(
                    insert(Measurement),
                    {
                        "run_id": run_id,
                        "iteration": 1,
                        "phase": "measured",
                        "run_index": len(day.values) + 1,
                        "positive": False,
                        "reason": negative[day.day],
                        "raw": {"synthetic": True},
                    },
                )

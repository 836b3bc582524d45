"""What each mesh adds and costs along a load ladder: the answer `make run` prints.

Per mesh, from the positive measured runs of a day (the latest attempt):

- the throughput ceiling: the best mean achieved rate over the steps run as fast as
  possible, with the 95 % interval of that step's runs;
- the latency it adds at one fixed rate: measured p99 minus the p99 of the paired baseline
  run made right before it (same iteration, step and run index), averaged over the pairs
  with a Student-t interval; pairing removes the drift both runs shared;
- its CPU per 1000 requests at that rate: the CPU seconds of the mesh's roles (proxies,
  gateways, tunnels, control plane) per 1000 requests, which is numerically vCPU per
  1000 requests per second;
- its memory at that rate: the peak memory of the mesh's components summed, per run.

The fixed rate compared is the highest target at which no mesh's runs are saturated
(achieved below 95 % of the target), so every mesh is compared where it keeps up; when
every fixed step saturates somewhere, the lowest is shown and marked saturated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy import stats
from sqlalchemy import Engine, text

from meshbench.backend import PHASE_MEASURED, PHASE_PAIRED_BASELINE
from meshbench.cost import MESH_ROLES

_RUNS_SQL = """
SELECT r.id AS run_id, r.environment, r.mesh, coalesce(r.mesh_version, '') AS mesh_version_key,
       m.iteration, m.phase, m.run_index, m.step_index, m.step_key, m.step_connections,
       m.step_target_qps, m.requested_qps, m.saturated, m.actual_qps, m.p50_ms, m.p99_ms,
       m.request_count,
       m.context -> 'resources' AS resources
FROM measurement m JOIN run r ON r.id = m.run_id
WHERE m.positive AND m.phase IN ('measured', 'paired-baseline')
  AND r.environment = :environment AND r.benchmark_date = :day
  AND r.attempt = (SELECT max(latest.attempt) FROM run latest
                   WHERE latest.environment = r.environment AND latest.mesh = r.mesh
                     AND latest.benchmark_date = r.benchmark_date)
ORDER BY r.mesh, m.step_index, m.iteration, m.run_index
"""
# The part of the machine's busy time no process was charged with, as the CPU chart shows it.
UNATTRIBUTED = "kernel and background"
# A measured run and its paired baseline share these: the baseline ran right before it.
PAIR_KEYS = ["run_id", "iteration", "step_index", "run_index"]


@dataclass(frozen=True)
class Interval:
    """A mean with its 95 % Student-t interval over ``n`` values (no interval below 2)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float], confidence: float = 0.95) -> Interval:
        data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
        if data.size == 0:
            return cls(None, None, None, 0)
        mean = float(data.mean())
        if data.size == 1:
            return cls(mean, None, None, 1)
        half = (
            float(stats.t.ppf((1 + confidence) / 2, data.size - 1))
            * float(data.std(ddof=1))
            / math.sqrt(data.size)
        )
        return cls(mean, mean - half, mean + half, int(data.size))

    def text(self, digits: int = 3, unit: str = "") -> str:
        if self.mean is None:
            return "—"
        value = f"{self.mean:.{digits}f}{unit}"
        if self.low is None:
            return f"{value} (n={self.n}, no interval)"
        return f"{value} [{self.low:.{digits}f}, {self.high:.{digits}f}] (n={self.n})"


@dataclass(frozen=True)
class MeshResult:
    mesh: str
    mesh_version_key: str
    ceiling_qps: Interval
    ceiling_step: str | None
    fixed_step: str | None
    fixed_step_saturated: bool
    added_p99_ms: Interval
    mesh_cpu_per_1000: Interval
    path_cpu_per_1000: Interval
    mesh_memory_mb: Interval


def fetch_ladder(engine: Engine, environment: str, day: date) -> pd.DataFrame:
    """Positive measured and paired-baseline runs of ``day``'s latest attempts, with steps."""
    with engine.connect() as connection:
        return pd.read_sql(
            text(_RUNS_SQL), connection, params={"environment": environment, "day": day}
        )


def _resource(resources: object, key: str) -> float | None:
    if not isinstance(resources, dict):
        return None
    value = resources.get(key)
    return float(value) if value is not None else None


def mesh_memory_mb(resources: object) -> float | None:
    """The peak memory of a run's mesh components summed, in MiB (None when none has one)."""
    if not isinstance(resources, dict):
        return None
    peaks = [
        component.get("peak_memory_bytes")
        for component in resources.get("components") or []
        if component.get("role") in MESH_ROLES
    ]
    known = [float(peak) for peak in peaks if peak is not None]
    return sum(known) / 2**20 if known else None


def comparison_step(frame: pd.DataFrame) -> tuple[str | None, bool]:
    """The fixed-rate step every mesh is compared at, and whether any mesh saturated there."""
    measured = frame[(frame["phase"] == PHASE_MEASURED) & frame["requested_qps"].notna()]
    if measured.empty:
        return None, False
    by_step = measured.groupby(["step_key", "requested_qps"])["saturated"].any().reset_index()
    kept = by_step[~by_step["saturated"]]
    if not kept.empty:
        return str(kept.sort_values("requested_qps").iloc[-1]["step_key"]), False
    return str(by_step.sort_values("requested_qps").iloc[0]["step_key"]), True


def paired_differences(runs: pd.DataFrame, column: str = "p99_ms") -> pd.DataFrame:
    """Every measured run of ``runs`` beside the paired baseline run made right before it.

    The baseline's columns carry the suffix ``_baseline``; ``<column>_added`` is the
    measured value minus the baseline's, NaN for a measured run without a positive paired
    baseline. Regression detection watches these differences run by run.
    """
    measured = runs[runs["phase"] == PHASE_MEASURED]
    baseline = runs[runs["phase"] == PHASE_PAIRED_BASELINE]
    pairs = measured.merge(baseline, how="left", on=PAIR_KEYS, suffixes=("", "_baseline"))
    pairs[f"{column}_added"] = pairs[column] - pairs[f"{column}_baseline"]
    return pairs


def _added_p99(runs: pd.DataFrame, step: str | None) -> Interval:
    if step is None:
        return Interval.of([])
    return Interval.of(paired_differences(runs[runs["step_key"] == step])["p99_ms_added"])


def mesh_results(frame: pd.DataFrame) -> list[MeshResult]:
    """One result per mesh and version of ``frame`` (see ``fetch_ladder``)."""
    if frame.empty:
        return []
    step, saturated = comparison_step(frame)
    results = []
    for (mesh, version), runs in frame.groupby(["mesh", "mesh_version_key"], sort=False):
        measured = runs[runs["phase"] == PHASE_MEASURED]
        # Runs the load generator did not pace: the ceiling is the best of them.
        closed_loop = measured[measured["requested_qps"].isna()]
        ceiling, ceiling_step = Interval.of([]), None
        if not closed_loop.empty:
            means = closed_loop.groupby("step_key")["actual_qps"].mean()
            ceiling_step = str(means.idxmax())
            ceiling = Interval.of(
                closed_loop[closed_loop["step_key"] == ceiling_step]["actual_qps"]
            )
        at_step = measured[measured["step_key"] == step] if step else measured.iloc[0:0]
        results.append(
            MeshResult(
                mesh=str(mesh),
                mesh_version_key=str(version),
                ceiling_qps=ceiling,
                ceiling_step=ceiling_step,
                fixed_step=step,
                fixed_step_saturated=saturated,
                added_p99_ms=_added_p99(runs, step),
                mesh_cpu_per_1000=Interval.of(
                    _resource(r, "mesh_cpu_seconds_per_1000_requests") for r in at_step["resources"]
                ),
                path_cpu_per_1000=Interval.of(
                    _resource(r, "path_cpu_seconds_per_1000_requests") for r in at_step["resources"]
                ),
                mesh_memory_mb=Interval.of(mesh_memory_mb(r) for r in at_step["resources"]),
            )
        )
    return results


def ladder_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Per mesh, version, step and saturation: mean achieved rate, p50 and p99 of the
    measured runs. A step whose runs partly missed their target gives two points: saturated
    runs are never averaged with the runs that kept up."""
    measured = frame[frame["phase"] == PHASE_MEASURED].copy()
    if measured.empty:
        return pd.DataFrame(
            columns=["mesh", "step_index", "step_key", "qps", "p50_ms", "p99_ms", "saturated"]
        )
    measured["saturated"] = measured["saturated"].fillna(False).astype(bool)
    if "mesh_version_key" not in measured:
        measured["mesh_version_key"] = ""
    return (
        measured.groupby(
            ["mesh", "mesh_version_key", "step_index", "step_key", "saturated"], sort=True
        )
        .agg(qps=("actual_qps", "mean"), p50_ms=("p50_ms", "mean"), p99_ms=("p99_ms", "mean"))
        .reset_index()
    )


def cpu_by_role(frame: pd.DataFrame, step: str | None) -> pd.DataFrame:
    """Mean CPU seconds per 1000 requests by role (and the unattributed part) per mesh at
    ``step``, from the measured runs' resource accounts."""
    rows = []
    counted: dict[str, int] = {}
    measured = frame[(frame["phase"] == PHASE_MEASURED) & (frame["step_key"] == step)]
    for run in measured.to_dict("records"):
        resources = run["resources"]
        if not isinstance(resources, dict) or not resources.get("requests"):
            continue
        counted[run["mesh"]] = counted.get(run["mesh"], 0) + 1
        per_1000 = 1000.0 / float(resources["requests"])
        parts = dict(resources.get("cpu_seconds_by_role") or {})
        parts[UNATTRIBUTED] = resources.get("unattributed_cpu_seconds") or 0.0
        for role, seconds in parts.items():
            rows.append({"mesh": run["mesh"], "role": role, "per_1000": float(seconds) * per_1000})
    if not rows:
        return pd.DataFrame(columns=["mesh", "role", "per_1000"])
    table = pd.DataFrame(rows)
    # Mean over the runs with an account; a run that lacks a role counts it as zero.
    summed = table.groupby(["mesh", "role"], sort=False)["per_1000"].sum().reset_index()
    summed["per_1000"] = summed["per_1000"] / summed["mesh"].map(counted)
    return summed


def results_table(results: list[MeshResult], title: str):
    """The per-mesh answer as a rich table (``make run``, ``meshbench report``)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    fixed = next((r.fixed_step for r in results if r.fixed_step), None)
    saturated = any(r.fixed_step_saturated for r in results)
    for column in (
        "mesh",
        "throughput ceiling, QPS [95 % CI]",
        f"added p99 at {fixed or 'a fixed rate'}, ms [95 % CI]"
        + (" (saturated)" if saturated else ""),
        f"mesh vCPU per 1000 rps at {fixed or 'a fixed rate'} [95 % CI]",
        "whole machine vCPU per 1000 rps",
        "mesh memory, MiB [95 % CI]",
    ):
        table.add_column(column, overflow="fold")
    for result in results:
        ceiling = result.ceiling_qps.text(0)
        if result.ceiling_step:
            ceiling += f" at {result.ceiling_step}"
        table.add_row(
            result.mesh + (f" {result.mesh_version_key}" if result.mesh_version_key else ""),
            ceiling,
            result.added_p99_ms.text(3),
            result.mesh_cpu_per_1000.text(3),
            result.path_cpu_per_1000.text(3),
            result.mesh_memory_mb.text(1),
        )
    return table

"""The results page's load-ladder section: every load step of a day per mesh, what each mesh
adds and costs, and the latency-vs-throughput and CPU charts.

The per-mesh figures are those ``make run`` prints, from ``meshbench.analysis.ladder``; the
step rows come from the ``v_ladder`` view, which keeps a step's saturated runs apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from meshbench.analysis import charts, ladder
from meshbench.analysis.report import mesh_label
from meshbench.backend import PHASE_MEASURED
from meshbench.config.common import MESH_NAMES
from meshbench.ui import data
from meshbench.ui.formatting import MISSING, is_missing, latency_digits, number

LATENCY_CHART = "ladder"
CPU_CHART = "cpu"
CHART_KINDS = (LATENCY_CHART, CPU_CHART)
NO_LADDER_NOTE = "No load ladder on this date: every mesh ran a single load step."
NO_RUNS_NOTE = "No positive measured runs on this date, so no load steps to show."
STEP_PERCENTILES = {"p50": "p50_ms", "p90": "p90_ms", "p99": "p99_ms", "p99.9": "p999_ms"}


class NoChart(LookupError):
    """The day has nothing this chart could draw; the message says what is missing."""


@dataclass(frozen=True)
class LadderSection:
    """What the template shows: the tables when a ladder exists, otherwise a note or the
    reason the ladder could not be read."""

    exists: bool = False
    note: str | None = None
    problem: str | None = None
    mend_command: str | None = None
    step_headers: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    mesh_headers: list[tuple[str, str]] = field(default_factory=list)
    meshes: list[dict[str, Any]] = field(default_factory=list)
    fixed_step: str | None = None
    fixed_step_saturated: bool = False
    cpu_chart: bool = False


def _mesh_order(mesh: str) -> int:
    return MESH_NAMES.index(mesh) if mesh in MESH_NAMES else len(MESH_NAMES)


def has_ladder(runs: pd.DataFrame) -> bool:
    """Whether some mesh ran more than one load step (a single-step study day has none)."""
    measured = runs[runs["phase"] == PHASE_MEASURED] if not runs.empty else runs
    if measured.empty:
        return False
    steps = measured.groupby(["mesh", "mesh_version_key"])["step_key"].nunique()
    return bool((steps > 1).any())


def _target(value: Any) -> str:
    if is_missing(value):
        return "max"
    return f"{float(value):g}"


def _saturation(row: dict[str, Any]) -> str:
    if row["saturated"]:
        return "SATURATED"
    # A step run as fast as possible has no target to miss.
    return MISSING if is_missing(row["step_target_qps"]) else "reached"


def _added_p99(row: dict[str, Any], digits: int) -> str:
    if is_missing(row["p99_added_ms"]):
        return MISSING
    shown = number(row["p99_added_ms"], digits)
    return f"{shown} (baseline saturated)" if row["baseline_saturated"] else shown


def step_rows(steps: pd.DataFrame) -> tuple[list[str], list[dict[str, Any]]]:
    """Headers and one row per mesh, step and saturation flag, in the page's mesh order."""
    if steps.empty:
        return [], []
    digits = latency_digits(steps[["p50_ms", "p90_ms"]].to_numpy(dtype=float).ravel())
    records = steps.astype(object).where(steps.notna(), None).to_dict(orient="records")
    records.sort(
        key=lambda r: (
            _mesh_order(r["mesh"]),
            r["mesh"],
            r["mesh_version_key"],
            r["step_index"],
            bool(r["saturated"]),
        )
    )
    rows = []
    for record in records:
        share = record["achieved_share"]
        runs = str(record["n_runs"])
        if record["n_step_runs"] != record["n_runs"]:
            runs += f" of {record['n_step_runs']}"
        cells = [
            ("step", record["step_key"], None),
            ("connections", str(record["step_connections"]), None),
            ("target QPS", _target(record["step_target_qps"]), None),
            ("achieved QPS", number(record["achieved_qps"], 2), record["achieved_qps"]),
            ("of target", MISSING if share is None else f"{100 * share:.1f} %", share),
            ("runs", runs, None),
            *(
                (title, number(record[column], digits), record[column])
                for title, column in STEP_PERCENTILES.items()
            ),
            ("added p99 vs paired baseline", _added_p99(record, digits), record["p99_added_ms"]),
            ("saturation", _saturation(record), None),
        ]
        rows.append(
            {
                "mesh": mesh_label(record["mesh"], record["mesh_version_key"] or None),
                "step": record["step_key"],
                "saturated": bool(record["saturated"]),
                "cells": cells,
            }
        )
    return [name for name, _, _ in rows[0]["cells"]], rows


def mesh_headers(fixed_step: str | None, saturated: bool) -> list[tuple[str, str]]:
    """(column key, header) of the per-mesh table, worded as ``make run`` prints it."""
    at = fixed_step or "a fixed rate"
    return [
        ("ceiling", "throughput ceiling, QPS [95 % CI]"),
        ("added p99", f"added p99 at {at}, ms [95 % CI]" + (" (saturated)" if saturated else "")),
        ("mesh vCPU", f"mesh vCPU per 1000 rps at {at} [95 % CI]"),
        ("machine vCPU", "whole machine vCPU per 1000 rps"),
        ("mesh memory", f"mesh memory at {at}, MiB [95 % CI]"),
    ]


def mesh_rows(results: list[ladder.MeshResult]) -> list[dict[str, Any]]:
    """One row per mesh: ceiling, added p99 and CPU per 1000 requests with their intervals."""
    rows = []
    ordered = sorted(results, key=lambda r: (_mesh_order(r.mesh), r.mesh, r.mesh_version_key))
    for result in ordered:
        ceiling = result.ceiling_qps.text(0)
        if result.ceiling_step:
            ceiling += f" at {result.ceiling_step}"
        rows.append(
            {
                "mesh": mesh_label(result.mesh, result.mesh_version_key or None),
                "cells": [
                    ("ceiling", ceiling, result.ceiling_qps.mean),
                    ("added p99", result.added_p99_ms.text(3), result.added_p99_ms.mean),
                    ("mesh vCPU", result.mesh_cpu_per_1000.text(3), result.mesh_cpu_per_1000.mean),
                    (
                        "machine vCPU",
                        result.path_cpu_per_1000.text(3),
                        result.path_cpu_per_1000.mean,
                    ),
                    ("mesh memory", result.mesh_memory_mb.text(1), result.mesh_memory_mb.mean),
                ],
            }
        )
    return rows


def build(engine: Engine, environment: str, day: date) -> LadderSection:
    """The section for one environment and date; database errors propagate to the caller."""
    runs = ladder.fetch_ladder(engine, environment, day)
    if runs.empty:
        return LadderSection(note=NO_RUNS_NOTE)
    if not has_ladder(runs):
        return LadderSection(note=NO_LADDER_NOTE)
    step_headers, steps = step_rows(data.ladder_steps(engine, environment, day))
    fixed_step, fixed_saturated = ladder.comparison_step(runs)
    return LadderSection(
        exists=True,
        step_headers=step_headers,
        steps=steps,
        mesh_headers=mesh_headers(fixed_step, fixed_saturated),
        meshes=mesh_rows(ladder.mesh_results(runs)),
        fixed_step=fixed_step,
        fixed_step_saturated=fixed_saturated,
        cpu_chart=not ladder.cpu_by_role(runs, fixed_step).empty,
    )


def chart(kind: str, engine: Engine, environment: str, day: date) -> bytes:
    """The PNG of one ladder chart; ``NoChart`` when the day has nothing for it."""
    runs = ladder.fetch_ladder(engine, environment, day)
    title = f"{environment} · {day}"
    if kind == LATENCY_CHART:
        points = ladder.ladder_points(runs) if not runs.empty else pd.DataFrame()
        if points.empty:
            raise NoChart(f"no positive measured runs for {environment} on {day}")
        return charts.latency_throughput_chart(points, f"Latency against throughput · {title}")
    step, _ = ladder.comparison_step(runs) if not runs.empty else (None, False)
    if step is None:
        raise NoChart(f"no fixed-rate step for {environment} on {day}: CPU is compared at one")
    by_role = ladder.cpu_by_role(runs, step)
    if by_role.empty:
        raise NoChart(f"no run at {step} for {environment} on {day} recorded what it cost")
    return charts.cpu_per_request_chart(by_role, f"CPU per 1000 requests at {step} · {title}")

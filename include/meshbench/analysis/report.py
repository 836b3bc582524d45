"""The comparison table: the study's columns (QPS, avg, p90, p99, p99.9 in ms) plus spread."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from meshbench.analysis.aggregate import Summary
from meshbench.config import MESH_NAMES

STUDY_COLUMNS = {
    "qps": "QPS",
    "avg_ms": "avg",
    "p90_ms": "p90",
    "p99_ms": "p99",
    "p999_ms": "p99.9",
}
MESH_LABELS = {
    "baseline": "baseline (no mesh)",
    "envoy-mtls": "envoy-mtls (emulated)",
    "wireguard": "wireguard (emulated)",
    "istio": "Istio",
    "kuma": "Kuma",
    "nsm": "NSM vl3",
}


def mesh_label(mesh: str, version: str | None) -> str:
    label = MESH_LABELS.get(mesh, mesh)
    return f"{label} {version}" if version else label


def _mesh_order(mesh: str) -> int:
    return MESH_NAMES.index(mesh) if mesh in MESH_NAMES else len(MESH_NAMES)


def comparison_frame(summary: Summary) -> pd.DataFrame:
    """One row per environment × date × mesh × version × load profile, the study's columns
    (means) followed by n, median, standard deviation and 95 % CI of QPS and avg latency."""
    if summary.empty:
        return pd.DataFrame()
    rows = summary.rows
    keys = ["environment", "benchmark_date", "mesh", "mesh_version_key", "load_profile_key"]
    values = ["mean", "median", "stddev", "ci_low", "ci_high", "overhead"]
    wide = rows.set_index([*keys, "metric"])[values].unstack("metric")
    counts = rows.groupby(keys)[["n_positive", "n_negative", "n_excluded"]].max()
    frame = pd.DataFrame(index=wide.index)
    frame["n"] = counts["n_positive"].astype(int)
    frame["negative"] = counts["n_negative"].astype(int)
    frame["excluded"] = counts["n_excluded"].astype(int)
    flagged = rows.groupby(keys)["flagged_runs"].first() if "flagged_runs" in rows else None
    frame["flagged"] = flagged.map(len).astype(int) if flagged is not None else 0
    for metric, title in STUDY_COLUMNS.items():
        frame[title] = wide[("mean", metric)]
    for metric, title in (("qps", "QPS"), ("avg_ms", "avg")):
        frame[f"{title} median"] = wide[("median", metric)]
        frame[f"{title} sd"] = wide[("stddev", metric)]
        frame[f"{title} ci95 low"] = wide[("ci_low", metric)]
        frame[f"{title} ci95 high"] = wide[("ci_high", metric)]
    if wide[("overhead", "avg_ms")].notna().any():
        frame["avg added vs paired baseline"] = wide[("overhead", "avg_ms")]
        frame["QPS ratio vs paired baseline"] = wide[("overhead", "qps")]
    frame = frame.reset_index()
    frame["order"] = frame["mesh"].map(_mesh_order)
    frame = frame.sort_values(["environment", "benchmark_date", "load_profile_key", "order"])
    return frame.drop(columns="order").reset_index(drop=True)


def means_label(summary_or_rows: Summary | pd.DataFrame) -> str:
    """What the means are over: said in every table the exclusion setting affects."""
    rows = summary_or_rows.rows if isinstance(summary_or_rows, Summary) else summary_or_rows
    excluded = "flagged_excluded" in rows and bool(rows["flagged_excluded"].any())
    if excluded:
        return (
            "mean of positive runs EXCLUDING runs flagged by the deviation check "
            "(setting exclude_flagged_runs)"
        )
    return "mean of every positive run"


def flagged_lines(flagged: pd.DataFrame, excluded: bool) -> list[str]:
    """One line per flagged run: where it is and why it was flagged."""
    if flagged.empty:
        return []
    state = "left out of the means" if excluded else "kept in the means"
    return [
        f"{row['environment']} {row['benchmark_date']} {row['mesh']} run {row['run_id']} "
        f"iteration {row['iteration']} run {row['run_index']} ({state}): {row['flag_reason']}"
        for row in flagged.to_dict(orient="records")
    ]


def _fmt(value: object, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{value:.{digits}f}"


def comparison_tables(summary: Summary) -> list[Table]:
    """Rich tables, one per environment × date × load profile."""
    frame = comparison_frame(summary)
    tables = []
    if frame.empty:
        return tables
    has_overhead = "avg added vs paired baseline" in frame.columns
    for (environment, day, profile), part in frame.groupby(
        ["environment", "benchmark_date", "load_profile_key"], sort=False
    ):
        table = Table(
            title=f"{environment} · {day} · {profile} (latency in ms; {means_label(summary)})"
        )
        table.add_column("mesh")
        for title in (
            "n",
            "neg",
            "flagged",
            *STUDY_COLUMNS.values(),
            "QPS 95% CI",
            "avg median",
            "avg sd",
            "avg 95% CI",
        ):
            table.add_column(title, justify="right")
        if has_overhead:
            table.add_column("avg added", justify="right")
            table.add_column("QPS ratio", justify="right")
        for values in part.to_dict(orient="records"):
            cells = [
                mesh_label(values["mesh"], values["mesh_version_key"] or None),
                str(values["n"]),
                str(values["negative"]),
                f"{values['flagged']} (excl.)" if values["excluded"] else str(values["flagged"]),
                _fmt(values["QPS"]),
                _fmt(values["avg"]),
                _fmt(values["p90"]),
                _fmt(values["p99"]),
                _fmt(values["p99.9"]),
                f"{_fmt(values['QPS ci95 low'])}–{_fmt(values['QPS ci95 high'])}",
                _fmt(values["avg median"], 3),
                _fmt(values["avg sd"], 3),
                f"{_fmt(values['avg ci95 low'], 3)}–{_fmt(values['avg ci95 high'], 3)}",
            ]
            if has_overhead:
                cells += [
                    _fmt(values["avg added vs paired baseline"], 3),
                    _fmt(values["QPS ratio vs paired baseline"], 3),
                ]
            table.add_row(*cells)
        tables.append(table)
    return tables

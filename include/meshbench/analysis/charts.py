"""PNG charts of a day's comparison and of the trend over dates (matplotlib, no display)."""

from __future__ import annotations

import io
from datetime import date

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from meshbench.analysis.report import mesh_label

LATENCY_COLUMNS = {"avg": "avg", "p90": "p90", "p99": "p99", "p99.9": "p99.9"}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _labels(frame: pd.DataFrame) -> list[str]:
    return [
        mesh_label(mesh, version or None)
        for mesh, version in zip(frame["mesh"], frame["mesh_version_key"], strict=True)
    ]


def qps_chart(frame: pd.DataFrame, title: str) -> bytes:
    """Mean QPS per mesh with its 95 % confidence interval as error bars."""
    figure, axes = plt.subplots(figsize=(7, 4))
    means = frame["QPS"].to_numpy(dtype=float)
    low = np.nan_to_num(means - frame["QPS ci95 low"].to_numpy(dtype=float))
    high = np.nan_to_num(frame["QPS ci95 high"].to_numpy(dtype=float) - means)
    positions = np.arange(len(frame))
    axes.bar(positions, means, yerr=[low, high], capsize=6, color="#4c72b0")
    axes.set_xticks(positions, _labels(frame), rotation=15, ha="right")
    axes.set_ylabel("requests per second (mean, 95 % CI)")
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def latency_chart(frame: pd.DataFrame, title: str) -> bytes:
    """avg, p90, p99 and p99.9 latency, grouped per mesh."""
    figure, axes = plt.subplots(figsize=(8, 4))
    positions = np.arange(len(frame))
    width = 0.8 / len(LATENCY_COLUMNS)
    for index, (column, label) in enumerate(LATENCY_COLUMNS.items()):
        axes.bar(
            positions + (index - 1.5) * width,
            frame[column].to_numpy(dtype=float),
            width,
            label=label,
        )
    axes.set_xticks(positions, _labels(frame), rotation=15, ha="right")
    axes.set_ylabel("latency (ms, mean of positive runs)")
    axes.set_title(title)
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def trend_chart(
    history: pd.DataFrame,
    title: str,
    metric: str = "avg_ms",
    span: tuple[date, date] | None = None,
) -> bytes:
    """One line per mesh over benchmark dates, with the 95 % CI as a band; ``span`` fixes
    the date axis (otherwise a single date is drawn across years)."""
    figure, axes = plt.subplots(figsize=(8, 4))
    data = history[history["metric"] == metric].sort_values("benchmark_date")
    for (mesh, version), part in data.groupby(["mesh", "mesh_version_key"], sort=True):
        dates = pd.to_datetime(part["benchmark_date"])
        axes.plot(dates, part["mean"], marker="o", label=mesh_label(mesh, version or None))
        if part["ci_low"].notna().any():
            axes.fill_between(
                dates, part["ci_low"].astype(float), part["ci_high"].astype(float), alpha=0.15
            )
    if not data.empty:
        # A lone date would otherwise be drawn on an axis spanning years.
        dates = pd.to_datetime(data["benchmark_date"])
        pad = max((dates.max() - dates.min()) * 0.05, pd.Timedelta(days=1))
        axes.set_xlim(dates.min() - pad, dates.max() + pad)
        axes.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=8))
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    axes.set_ylabel({"avg_ms": "average latency (ms)", "qps": "QPS"}.get(metric, metric))
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if not data.empty:
        axes.legend()
    if span is not None:
        axes.set_xlim(
            pd.Timestamp(span[0]) - pd.Timedelta(days=0.5),
            pd.Timestamp(span[1]) + pd.Timedelta(days=0.5),
        )
    figure.autofmt_xdate()
    return _png(figure)


def latency_throughput_chart(points: pd.DataFrame, title: str) -> bytes:
    """p50 and p99 against the achieved rate, one line per mesh along its ladder steps;
    saturated steps (below 95 % of their target) are drawn hollow."""
    figure, (p50_axes, p99_axes) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for mesh, part in points.groupby("mesh", sort=False):
        part = part.sort_values("qps")
        for axes, column in ((p50_axes, "p50_ms"), (p99_axes, "p99_ms")):
            (line,) = axes.plot(part["qps"], part[column], marker="o", label=mesh_label(mesh, None))
            saturated = part[part["saturated"]]
            axes.scatter(
                saturated["qps"],
                saturated[column],
                s=80,
                facecolors="white",
                edgecolors=line.get_color(),
                zorder=3,
            )
    for axes, name in ((p50_axes, "p50"), (p99_axes, "p99")):
        axes.set_xlabel("achieved requests per second (mean per step)")
        axes.set_ylabel(f"{name} latency (ms)")
        # Without a mesh the ceiling is tens of times higher: both axes span decades.
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.grid(alpha=0.3)
    p99_axes.legend(title="hollow: saturated step")
    figure.suptitle(title)
    return _png(figure)


def cpu_per_request_chart(by_role: pd.DataFrame, title: str) -> bytes:
    """CPU seconds per 1000 requests per mesh, stacked by role (vCPU per 1000 rps)."""
    figure, axes = plt.subplots(figsize=(8, 4))
    meshes = list(dict.fromkeys(by_role["mesh"]))
    positions = np.arange(len(meshes))
    bottom = np.zeros(len(meshes))
    for role, part in by_role.groupby("role", sort=False):
        values = part.set_index("mesh")["per_1000"].reindex(meshes).fillna(0.0).to_numpy()
        axes.bar(positions, values, bottom=bottom, label=role)
        bottom += values
    axes.set_xticks(positions, [mesh_label(mesh, None) for mesh in meshes], rotation=15, ha="right")
    axes.set_ylabel("CPU seconds per 1000 requests")
    axes.set_title(title)
    axes.legend(fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)

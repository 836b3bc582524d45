"""How closely does a local fixed-rate step achieve its target rate?

One set of namespaces with nginx (the ``baseline`` mesh), then a ladder of fixed-rate steps
run through the local measurement path (``LocalBackend.run_load``: one h2load per
connection at target / connections rps, counters read before and after, the log converted
to a Fortio-shaped result), one run per step, lowest target first, after one unmeasured
warm-up run at the lowest target.

Prints achieved / target per step (a step under 95 % of its target is saturated: the rule
the results loader applies), the median and worst ratio over the unsaturated steps (target:
median at least 0.98), what h2load's pacing did (requests sent more than one timer tick
late, the 99th percentile of the send lag) and the latency as measured and from the
intended send time; plus the machine's state. Saves the text under
``benchmarks/results/fixed_rate_accuracy-<UTC timestamp>.txt``.

Run as root (namespaces): ``.venv/bin/python benchmarks/fixed_rate_accuracy.py
[--targets 250,500,1000,2000,4000,8000] [--connections 4] [--duration 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshbench.backend import PHASE_MEASURED, PHASE_WARMUP, RunContext
from meshbench.config import LoadProfile, load_config
from meshbench.local import binaries
from meshbench.local.backend import LocalBackend

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_TARGETS = (250, 500, 1000, 2000, 4000, 8000)
# Below this share of its target a step is saturated (the results loader's rule).
SATURATED_BELOW = 0.95
TARGET_MEDIAN_RATIO = 0.98


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--targets",
        default=",".join(map(str, DEFAULT_TARGETS)),
        help="target rates in rps, comma separated (default %(default)s)",
    )
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--network-mode", choices=("auto", "netns", "loopback"), default=None)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def machine_line() -> str:
    def output(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True).stdout.strip()

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    commit = output("git", "rev-parse", "--short", "HEAD")
    return f"machine: {os.cpu_count()} cores, load average {load}; commit {commit}"


def percentile_us(histogram: dict[str, Any] | None, percentile: float) -> float | None:
    for entry in (histogram or {}).get("Percentiles") or ():
        if entry["Percentile"] == percentile:
            return entry["Value"] * 1e6
    return None


def describe_step(target: int, outcome_raw: dict[str, Any], context: dict[str, Any]) -> dict:
    meshbench = outcome_raw["meshbench"]
    ratio = outcome_raw["ActualQPS"] / target
    generator = context["resources"]["components"][0]
    return {
        "target": target,
        "achieved": outcome_raw["ActualQPS"],
        "ratio": ratio,
        "saturated": ratio < SATURATED_BELOW,
        "late": meshbench["requests_sent_late"],
        "requests": meshbench["requests"],
        "lag_p99_us": (meshbench["send_lag_us"] or {}).get("p99"),
        "p50_us": percentile_us(outcome_raw["DurationHistogram"], 50.0),
        "p99_us": percentile_us(outcome_raw["DurationHistogram"], 99.0),
        "intended_p99_us": percentile_us(meshbench["intended_start_latency"], 99.0),
        "timer_ms": meshbench["rate_timer_seconds"] * 1000,
        "generator_cpu_seconds": generator["cpu_seconds"],
        "load_after": context["machine"]["load_average_1m_after"],
        "cpu_idle": context["machine"]["cpu_idle_fraction"],
    }


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    targets = [int(value) for value in args.targets.split(",")]
    config = load_config()
    if args.network_mode is not None:
        local = config.environments.local.model_copy(update={"network_mode": args.network_mode})
        config = config.model_copy(
            update={"environments": config.environments.model_copy(update={"local": local})}
        )
    load = LoadProfile(
        duration=args.duration,
        warmup=False,
        runs_per_iteration=1,
        iterations=1,
        min_positive=0,
        steps=[{"connections": args.connections, "qps": target} for target in targets],
    )
    ctx = RunContext(
        config=config,
        environment="local",
        mesh="baseline",
        dag_id="benchmark_fixed_rate_accuracy",
        run_id=f"fixed-rate-{time.time_ns()}",
        load=load,
        labels={"source": "benchmarks/fixed_rate_accuracy.py"},
    )
    backend = LocalBackend(config, "baseline")
    started = datetime.now(UTC)
    machine_before = machine_line()
    steps: list[dict[str, Any]] = []
    try:
        backend.create_clusters(ctx)
        backend.install_mesh(ctx, 1)
        backend.wait_mesh_ready(ctx, 1)
        backend.deploy_workloads(ctx, 1)
        backend.wait_workloads_ready(ctx, 1)
        warmup = backend.run_load(ctx.at_step(1), 1, PHASE_WARMUP, 1)
        if warmup.failure:
            raise RuntimeError(f"warm-up failed: {warmup.failure}")
        for index, target in enumerate(targets, start=1):
            outcome = backend.run_load(ctx.at_step(index), 1, PHASE_MEASURED, 1)
            if outcome.raw_result is None or outcome.failure:
                raise RuntimeError(f"step {index} ({target} rps) failed: {outcome.failure}")
            steps.append(describe_step(target, outcome.raw_result, outcome.context))
            step = steps[-1]
            print(
                f"{target} rps: achieved {step['achieved']:,.1f} ({step['ratio']:.4f})"
                + (" saturated" if step["saturated"] else ""),
                flush=True,
            )
        info = backend.run_info(ctx)
    finally:
        backend.uninstall_mesh(ctx, 1)
        backend.delete_clusters(ctx)

    unsaturated = [step["ratio"] for step in steps if not step["saturated"]]
    versions = info.get("versions", {})
    lines = [
        f"fixed-rate accuracy · {started:%Y-%m-%dT%H:%M:%S}Z · baseline (client -> nginx), "
        f"{args.connections} connections, {args.duration:g} s per step, one run per step",
        f"{machine_before} (before); {machine_line()} (after)",
        f"network mode {info.get('network_mode')}, CPU placement {info.get('cpu_placement')} "
        f"{info.get('cpus')}, h2load (nghttp2) {binaries.version('h2load')}, "
        f"nginx {versions.get('nginx')}",
        "",
        "target rps  achieved rps  achieved/target  state      timer ms  sent late  "
        "lag p99 µs  p50 µs  p99 µs  p99 from intended µs  h2load CPU s  load 1m",
    ]
    for step in steps:
        lines.append(
            f"{step['target']:>10}  {step['achieved']:>12,.1f}  {step['ratio']:>15.4f}  "
            f"{'saturated' if step['saturated'] else 'paced':<9}  {step['timer_ms']:>8.1f}  "
            f"{step['late']:>9}  {_us(step['lag_p99_us']):>10}  {_us(step['p50_us']):>6}  "
            f"{_us(step['p99_us']):>6}  {_us(step['intended_p99_us']):>20}  "
            f"{step['generator_cpu_seconds']:>12.3f}  {step['load_after']:>7.2f}"
        )
    lines.append("")
    if unsaturated:
        median = statistics.median(unsaturated)
        verdict = "meets" if median >= TARGET_MEDIAN_RATIO else "misses"
        lines.append(
            f"unsaturated steps ({len(unsaturated)} of {len(steps)}): median achieved/target "
            f"{median:.4f}, worst {min(unsaturated):.4f}; {verdict} the target median "
            f"of {TARGET_MEDIAN_RATIO}"
        )
    else:
        lines.append(f"every step is saturated (under {SATURATED_BELOW:.0%} of its target)")
    lines.append(
        f"saturated: under {SATURATED_BELOW:.0%} of the target. sent late: requests h2load "
        "sent more than one timer tick after their intended time (it had fallen behind); "
        "lag: actual minus intended send time; p99 from intended: latency from the intended "
        "send time (measured latency + lag)."
    )
    report = "\n".join(lines)
    print(report)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"fixed_rate_accuracy-{started:%Y%m%dT%H%M%SZ}.txt"
    out.write_text(report + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

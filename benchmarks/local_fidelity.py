"""Does meshbench's local environment measure what wrk measures by hand?

One set of namespaces with nginx (the ``baseline`` mesh), then pairs of runs, interleaved
A B A B ...: A is a measured run through meshbench (``LocalBackend.run_load``: wrk with the
report script, counters read before and after, the result converted to Fortio's shape);
B is wrk invoked directly with the same arguments (threads, connections, duration,
timeout, URL) in the same client namespace and on the same CPUs, its QPS read from its own
summary. Interleaving exposes both to the same background activity, which on small VMs
moves single-connection QPS by tens of per cent.

Prints the ratio meshbench QPS / direct QPS per pair and its mean, median, spread and 95 %
confidence interval (target: at least 0.97), and saves everything under
``benchmarks/results/``.

Run as root (namespaces): ``.venv/bin/python benchmarks/local_fidelity.py --pairs 8``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scipy import stats

from meshbench.backend import PHASE_MEASURED, RunContext
from meshbench.config import LoadProfile, load_config
from meshbench.loadgen import wrk as wrk_loadgen
from meshbench.local import binaries, machine
from meshbench.local.backend import LocalBackend

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 0.97
_REQUESTS_PER_SECOND = re.compile(r"Requests/sec:\s+([0-9.]+)")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="A B pairs (default 8)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument(
        "--status-codes",
        choices=("counted", "inferred"),
        default=None,
        help="meshbench's status counting (default: benchmarks.yaml)",
    )
    parser.add_argument(
        "--cpu-placement",
        choices=("shared", "split", "none"),
        default=None,
        help="CPU placement of the clusters (default: benchmarks.yaml)",
    )
    parser.add_argument("--network-mode", choices=("auto", "netns", "loopback"), default=None)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def direct_wrk(
    settings: wrk_loadgen.WrkSettings, namespace: str | None, cpus: list[int] | None
) -> dict[str, Any]:
    """wrk by hand: the same arguments as meshbench's, minus meshbench's report script."""
    argv = [
        str(binaries.find("wrk")),
        "--threads",
        str(settings.threads),
        "--connections",
        str(settings.connections),
        "--duration",
        f"{settings.duration_seconds}s",
        "--timeout",
        f"{wrk_loadgen.REQUEST_TIMEOUT_SECONDS}s",
        settings.url,
    ]
    if cpus:
        argv = ["taskset", "--cpu-list", ",".join(map(str, cpus)), *argv]
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    before = machine.MachineSample.take()
    completed = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=settings.duration_seconds + 60
    )
    after = machine.MachineSample.take()
    match = _REQUESTS_PER_SECOND.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        raise RuntimeError(
            f"direct wrk failed ({completed.returncode}): {completed.stdout}{completed.stderr}"
        )
    return {
        "qps": float(match.group(1)),
        "command": " ".join(argv),
        "machine": machine.describe_interval(before, after, None),
        "output": completed.stdout,
    }


def summarise(ratios: list[float]) -> dict[str, float]:
    """Ratios are averaged on a log scale (a pair at 0.5 and one at 2.0 cancel out); the
    95 % confidence interval is Student's t on the log ratios, taken back to ratios."""
    logs = [math.log(ratio) for ratio in ratios]
    log_mean = statistics.fmean(logs)
    log_spread = statistics.stdev(logs) if len(logs) > 1 else 0.0
    half_width = (
        stats.t.ppf(0.975, len(logs) - 1) * log_spread / len(logs) ** 0.5
        if len(logs) > 1
        else float("nan")
    )
    return {
        "n": len(ratios),
        "geometric_mean": math.exp(log_mean),
        "arithmetic_mean": statistics.fmean(ratios),
        "median": statistics.median(ratios),
        "stdev": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
        "min": min(ratios),
        "max": max(ratios),
        "ci95_low": math.exp(log_mean - half_width),
        "ci95_high": math.exp(log_mean + half_width),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    config = load_config()
    local_updates = {
        key: value
        for key, value in (
            ("status_codes", args.status_codes),
            ("cpu_placement", args.cpu_placement),
            ("network_mode", args.network_mode),
        )
        if value is not None
    }
    local = config.environments.local.model_copy(update=local_updates)
    config = config.model_copy(
        update={"environments": config.environments.model_copy(update={"local": local})}
    )
    load = LoadProfile(
        qps=0,
        connections=args.connections,
        duration=args.duration,
        warmup=False,
        runs_per_iteration=args.pairs,
        iterations=1,
        min_positive=0,
    )
    ctx = RunContext(
        config=config,
        environment="local",
        mesh="baseline",
        dag_id="benchmark_local_fidelity",
        run_id=f"fidelity-{time.time_ns()}",
        load=load,
        labels={"source": "benchmarks/local_fidelity.py"},
    )
    backend = LocalBackend(config, "baseline")
    pairs: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    try:
        backend.create_clusters(ctx)
        backend.install_mesh(ctx, 1)
        backend.wait_mesh_ready(ctx, 1)
        backend.deploy_workloads(ctx, 1)
        backend.wait_workloads_ready(ctx, 1)
        state = backend.folder(ctx).read()
        assert state is not None
        topology = state.topology
        client_cpus = topology.cpus.get("client")
        # Both sides warm up the path once, unmeasured.
        backend.run_load(ctx, 1, "warmup", 1)
        for index in range(1, args.pairs + 1):
            outcome = backend.run_load(ctx, 1, PHASE_MEASURED, index)
            if outcome.raw_result is None or outcome.failure:
                raise RuntimeError(f"meshbench run {index} failed: {outcome.failure}")
            settings = wrk_loadgen.WrkSettings(
                url=outcome.raw_result["URL"],
                connections=args.connections,
                duration_seconds=args.duration,
                threads=outcome.context["threads"],
            )
            direct = direct_wrk(settings, topology.namespace("client"), client_cpus)
            meshbench_qps = outcome.raw_result["ActualQPS"]
            pairs.append(
                {
                    "pair": index,
                    "meshbench_qps": meshbench_qps,
                    "direct_qps": direct["qps"],
                    "ratio": meshbench_qps / direct["qps"],
                    "meshbench_machine": outcome.context["machine"],
                    "direct_machine": direct["machine"],
                    "meshbench_command": outcome.context["wrk_command"],
                    "direct_command": direct["command"],
                }
            )
            print(
                f"pair {index}: meshbench {meshbench_qps:,.0f} QPS, direct wrk "
                f"{direct['qps']:,.0f} QPS, ratio {pairs[-1]['ratio']:.4f}",
                flush=True,
            )
        info = backend.run_info(ctx)
    finally:
        backend.uninstall_mesh(ctx, 1)
        backend.delete_clusters(ctx)

    summary = summarise([pair["ratio"] for pair in pairs])
    mean_idle = statistics.fmean(p["meshbench_machine"]["cpu_idle_fraction"] for p in pairs)
    if summary["ci95_low"] >= TARGET_RATIO:
        verdict = "meets the target (the whole 95 % CI is at or above it)"
    elif summary["ci95_high"] < TARGET_RATIO:
        verdict = "misses the target (the whole 95 % CI is below it)"
    else:
        verdict = (
            f"inconclusive: the 95 % CI spans the target (geometric "
            f"mean {'above' if summary['geometric_mean'] >= TARGET_RATIO else 'below'} it); "
            f"more pairs or a quieter machine narrow it"
        )
    lines = [
        f"local fidelity, {started:%Y-%m-%d %H:%M} UTC: baseline, c={args.connections}, "
        f"{args.duration} s runs, {summary['n']} interleaved pairs",
        f"network mode {info.get('network_mode')}, CPU placement {info.get('cpu_placement')} "
        f"{info.get('cpus')}, status codes {info.get('status_codes')}, "
        f"wrk {info.get('versions', {}).get('wrk')}, nginx {info.get('versions', {}).get('nginx')}",
        f"meshbench/direct QPS ratio: geometric mean {summary['geometric_mean']:.4f} "
        f"(95 % CI {summary['ci95_low']:.4f}-{summary['ci95_high']:.4f}), median "
        f"{summary['median']:.4f}, arithmetic mean {summary['arithmetic_mean']:.4f}, "
        f"stdev {summary['stdev']:.4f}, range {summary['min']:.4f}-{summary['max']:.4f}",
        f"mean QPS: meshbench {statistics.fmean(p['meshbench_qps'] for p in pairs):,.0f}, "
        f"direct {statistics.fmean(p['direct_qps'] for p in pairs):,.0f}",
        f"target {TARGET_RATIO}: {verdict}",
        f"machine during the pairs: load average (1 min) "
        f"{min(p['meshbench_machine']['load_average_1m_after'] for p in pairs):.2f}-"
        f"{max(p['meshbench_machine']['load_average_1m_after'] for p in pairs):.2f}, "
        f"CPU idle {mean_idle:.0%} on average during meshbench runs",
    ]
    print("\n".join(lines))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"local_fidelity-{started:%Y%m%dT%H%M%SZ}"
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "started_at": started.isoformat(),
                "arguments": {k: str(v) for k, v in vars(args).items()},
                "summary": summary,
                "target": TARGET_RATIO,
                "run_info": info,
                "pairs": pairs,
            },
            indent=2,
        )
    )
    stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"saved {stem}.json and {stem}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())

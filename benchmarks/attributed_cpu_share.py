"""How much of the machine's busy CPU does a local run's cost accounting attribute to the
components on the path?

Every local measurement records under ``context["resources"]`` (``local/resources.py``) the
CPU time of each component by role (load generator, server app, proxies, tunnel), the
machine's busy CPU time over the load generator's window (``/proc/stat``) and
``attributed_share``: the components' sum over that busy time. The rest, unattributed, is
the kernel's work no process is charged for plus whatever else ran on the machine.

This runs each enabled local mesh (``environments.local.meshes``) through the pipeline the
DAGs run (``pipeline.inprocess.run_in_process``: create_clusters, install, readiness,
warm-up, measure, teardown; nothing loaded into the database), at a few load steps in one
ladder (by default one closed-loop step and two fixed-rate steps), several runs per step.
The meshes take turns, round after round, each round starting with a different mesh, so
background drift reaches them alike. Before each round it also samples the machine's busy
CPU over a window of the same length with nothing of the benchmark running: the background
that ends up unattributed during a run.

Printed per mesh and step: the attributed share (median, min, max), the unattributed CPU
seconds per 1000 requests and per second of the window, the share of the busy time
``/proc/stat`` counts as softirq and irq, and the 1-minute load average before and after
the runs, so a reader can judge the background load; plus the machine (CPU model, kernel,
its CPU time accounting, load average, commit). No figure is judged against a target.
Saves the text under ``benchmarks/results/attributed_cpu_share-<UTC timestamp>.txt``.

Run as root (namespaces; the wireguard mesh needs them): ``.venv/bin/python
benchmarks/attributed_cpu_share.py [--steps 4:max,4:500,4:2000] [--rounds 3] [--runs 2]
[--duration 5] [--mesh baseline ...]``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshbench.backend import PHASE_MEASURED
from meshbench.config import BenchmarkConfig, LoadProfile, load_config
from meshbench.config.load_profiles import MAX_RATE
from meshbench.local import machine
from meshbench.local.meshes import LOCAL_MESHES
from meshbench.local.runner import with_paired_baseline
from meshbench.paths import STATE_ENV_VAR
from meshbench.pipeline.inprocess import InProcessRun, run_in_process
from meshbench.results.loader import is_saturated, negative_reason

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# One closed-loop step, as fast as the path answers, and two paced ones: a low rate where
# the path is mostly idle between requests, and demo's rate, which every local data plane
# sustains on 2 cores.
DEFAULT_STEPS = "4:max,4:500,4:2000"
# The kernel settings that decide where softirq time is charged.
ACCOUNTING_OPTIONS = (
    "CONFIG_TICK_CPU_ACCOUNTING",
    "CONFIG_VIRT_CPU_ACCOUNTING_GEN",
    "CONFIG_IRQ_TIME_ACCOUNTING",
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mesh",
        action="append",
        dest="meshes",
        choices=LOCAL_MESHES,
        help="only this mesh (repeatable; default: every mesh enabled in the local environment)",
    )
    parser.add_argument(
        "--steps",
        default=DEFAULT_STEPS,
        help="load steps as connections:rate (rate a number or 'max'), comma separated "
        "(default %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="set-ups per mesh (default 3)")
    parser.add_argument(
        "--runs", type=int, default=2, help="measured runs per step and round (default 2)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per set-up")
    parser.add_argument(
        "--paired-baseline",
        action="store_true",
        help="also measure the direct path before each mesh run (off: the baseline mesh is "
        "measured beside the others anyway)",
    )
    parser.add_argument("--network-mode", choices=("auto", "netns", "loopback"), default=None)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="keep the runs' artifacts here (default: a temporary folder, removed afterwards)",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def parse_steps(text: str) -> list[dict[str, Any]]:
    steps = []
    for item in text.split(","):
        connections, _, rate = item.strip().partition(":")
        steps.append(
            {"connections": int(connections), "qps": rate if rate == MAX_RATE else int(rate)}
        )
    return steps


def _output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def kernel_accounting() -> str:
    """How the running kernel accounts CPU time, from its build configuration."""
    text = ""
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{platform.release()}")):
        try:
            text = (
                gzip.decompress(path.read_bytes()).decode()
                if path.suffix == ".gz"
                else path.read_text()
            )
            break
        except OSError:
            continue
    if not text:
        return "kernel configuration not readable"
    settings = []
    for option in ACCOUNTING_OPTIONS:
        value = "y" if f"{option}=y" in text else "off"
        settings.append(f"{option.removeprefix('CONFIG_')}={value}")
    return ", ".join(settings)


def machine_line() -> str:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    commit = _output(
        "git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"
    )
    return f"{os.cpu_count()} cores, load average {load}; commit {commit}"


def idle_window(seconds: float) -> dict[str, float]:
    """The machine's busy CPU over ``seconds`` with nothing of the benchmark running."""
    before = machine.read_cpu_times()
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = machine.read_cpu_times()
    busy = (after.busy_ticks - before.busy_ticks) / machine.CLOCK_TICKS
    kernel = (after.softirq + after.irq - before.softirq - before.irq) / machine.CLOCK_TICKS
    return {"busy_vcpu": busy / elapsed, "softirq_irq_vcpu": kernel / elapsed}


@dataclass
class Cell:
    """The positive measured runs of one mesh at one step."""

    mesh: str
    index: int
    key: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def describe_run(record: Any) -> dict[str, Any]:
    """What one measured run's cost record and machine record say."""
    raw = record.outcome.raw_result or {}
    context = record.outcome.context or {}
    cost = context["resources"]
    machine_seconds = cost["machine"]
    busy = machine_seconds["busy_seconds"]
    # The accounted window is /proc/stat's, read around the load generator's start and exit,
    # a little longer than the run it measured: wall seconds from the CPU time it spans.
    described = context["machine"]
    window = busy / max(1.0 - described["cpu_idle_fraction"], 1e-9) / described["cpu_count"]
    requests = cost["requests"]
    unattributed = cost["unattributed_cpu_seconds"]
    target = raw.get("RequestedQPS")
    target_qps = None if target in (None, MAX_RATE) else float(target) or None
    return {
        "qps": raw["ActualQPS"],
        "saturated": is_saturated(raw["ActualQPS"], target_qps),
        "busy_vcpu": busy / window,
        "attributed_share": cost["attributed_share"],
        "unattributed_per_1000": unattributed * 1000 / requests,
        "unattributed_vcpu": unattributed / window,
        "softirq_irq_share": (machine_seconds["softirq"] + machine_seconds["irq"]) / busy,
        "roles": {role: seconds / busy for role, seconds in cost["cpu_seconds_by_role"].items()},
        "load_before": context["machine"]["load_average_1m_before"],
        "load_after": context["machine"]["load_average_1m_after"],
    }


def collect(cells: dict[tuple[str, int], Cell], mesh: str, run: InProcessRun) -> None:
    tolerance = run.ctx.load.duration_tolerance
    steps = run.ctx.load.ladder()
    for record in run.measurements:
        if record.phase != PHASE_MEASURED:
            continue
        cell = cells.setdefault(
            (mesh, record.step), Cell(mesh, record.step, steps[record.step - 1].key)
        )
        reason = negative_reason(record, tolerance)
        resources = (record.outcome.context or {}).get("resources") or {}
        if reason is not None:
            cell.left_out.append(reason)
        elif not resources.get("machine", {}).get("busy_seconds") or not resources["requests"]:
            cell.left_out.append("no busy time or no requests in its cost record")
        else:
            cell.runs.append(describe_run(record))


def spread(values: Iterable[float], digits: int = 3) -> str:
    values = sorted(values)
    if not values:
        return "-"
    return (
        f"{statistics.median(values):.{digits}f} [{values[0]:.{digits}f}, {values[-1]:.{digits}f}]"
    )


def bounds(values: Iterable[float]) -> str:
    values = sorted(values)
    return f"{values[0]:.2f}-{values[-1]:.2f}" if values else "-"


def with_network_mode(config: BenchmarkConfig, mode: str | None) -> BenchmarkConfig:
    if mode is None:
        return config
    local = config.environments.local.model_copy(update={"network_mode": mode})
    environments = config.environments.model_copy(update={"local": local})
    return config.model_copy(update={"environments": environments})


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    scratch = None
    if args.state_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="meshbench-attributed-cpu-")
        os.environ[STATE_ENV_VAR] = scratch.name
    else:
        os.environ[STATE_ENV_VAR] = str(args.state_dir)
    config = with_network_mode(load_config(), args.network_mode)
    config = with_paired_baseline(config, args.paired_baseline)
    enabled = [mesh for environment, mesh in config.matrix if environment == "local"]
    meshes = [mesh for mesh in enabled if not args.meshes or mesh in args.meshes]
    missing = sorted(set(args.meshes or ()) - set(enabled))
    if missing:
        raise SystemExit(f"not enabled in the local environment: {', '.join(missing)}")
    load = LoadProfile(
        steps=parse_steps(args.steps),
        duration=args.duration,
        warmup=args.warmup > 0,
        warmup_duration=args.warmup or None,
        runs_per_iteration=args.runs,
        iterations=1,
        min_positive=0,
    )
    keys = [step.key for step in load.ladder()]
    started = datetime.now(UTC)
    before = machine_line()
    print(
        f"{len(meshes)} meshes × {args.rounds} rounds × {len(keys)} steps ({', '.join(keys)}) "
        f"× {args.runs} runs of {args.duration:g} s",
        flush=True,
    )
    cells: dict[tuple[str, int], Cell] = {}
    idle: list[dict[str, float]] = []
    info: dict[str, Any] = {}
    failures: list[str] = []
    for round_number in range(1, args.rounds + 1):
        idle.append(idle_window(args.duration))
        # Each round starts with the next mesh: no mesh always runs first after the pause.
        shift = (round_number - 1) % len(meshes)
        for mesh in meshes[shift:] + meshes[:shift]:
            run = run_in_process(
                config,
                "local",
                mesh,
                dag_id=f"benchmark_attributed_cpu_{mesh.replace('-', '_')}",
                run_id=f"attributed-cpu-{round_number}-{time.time_ns()}",
                load=load,
                loads_results=False,
                purpose="test",
            )
            collect(cells, mesh, run)
            failures += [
                f"round {round_number} {mesh} {task}: {why}" for task, why in run.failures.items()
            ]
            failures += [
                f"round {round_number} {mesh}: {problem}" for problem in run.teardown_problems
            ]
            info.setdefault(mesh, run.info)
            shares = [
                cell.runs[-1]["attributed_share"]
                for (name, _), cell in sorted(cells.items())
                if name == mesh and cell.runs
            ]
            print(
                f"round {round_number} {mesh}: {run.state}, attributed share of the last run "
                f"per step {', '.join(f'{share:.3f}' for share in shares)}",
                flush=True,
            )
    finished = datetime.now(UTC)

    any_info = next(iter(info.values()), {})
    versions = {
        name: version
        for details in info.values()
        for name, version in (details.get("versions") or {}).items()
    }
    lines = [
        f"attributed CPU share · {started:%Y-%m-%dT%H:%M:%S}Z to {finished:%H:%M:%S}Z · "
        f"{', '.join(meshes)} · steps {', '.join(keys)} · {args.rounds} rounds × {args.runs} "
        f"runs of {args.duration:g} s per step, warm-up {args.warmup:g} s, paired baseline "
        f"{'on' if args.paired_baseline else 'off'}",
        f"machine: {cpu_model()}; kernel {platform.release()} ({kernel_accounting()})",
        f"machine: {before} (before); {machine_line()} (after)",
        f"network mode {any_info.get('network_mode')}, CPU placement "
        f"{any_info.get('cpu_placement')} {any_info.get('cpus')}; versions "
        + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())),
        f"idle machine (nothing of the benchmark running, {len(idle)} windows of "
        f"{args.duration:g} s, one before each round): busy {spread(d['busy_vcpu'] for d in idle)} "
        f"vCPU, of it softirq+irq {spread(d['softirq_irq_vcpu'] for d in idle)} vCPU",
        "",
        "values: median [min, max] over the positive measured runs of the mesh at the step",
        f"{'mesh':<11} {'step':<9} {'n':>2} {'QPS':>8} {'busy vCPU':>20} "
        f"{'attributed share':>22} {'unattributed CPU s/1000 req':>28} "
        f"{'unattributed vCPU':>20} {'softirq+irq / busy':>22} {'load 1m before':>14} "
        f"{'load 1m after':>13}",
    ]
    for (_, _), cell in sorted(
        cells.items(), key=lambda item: (meshes.index(item[0][0]), item[0][1])
    ):
        runs = cell.runs
        qps = f"{statistics.median(r['qps'] for r in runs):,.0f}" if runs else "-"
        saturated = sum(r["saturated"] for r in runs)
        lines.append(
            f"{cell.mesh:<11} {cell.key:<9} {len(runs):>2} {qps:>8} "
            f"{spread((r['busy_vcpu'] for r in runs), 2):>20} "
            f"{spread(r['attributed_share'] for r in runs):>22} "
            f"{spread((r['unattributed_per_1000'] for r in runs), 4):>28} "
            f"{spread((r['unattributed_vcpu'] for r in runs), 3):>20} "
            f"{spread(r['softirq_irq_share'] for r in runs):>22} "
            f"{bounds(r['load_before'] for r in runs):>14} "
            f"{bounds(r['load_after'] for r in runs):>13}"
            + (f"  ({saturated} saturated)" if saturated else "")
            + (f"  ({len(cell.left_out)} left out)" if cell.left_out else "")
        )
    lines += ["", "attributed by role, median share of the busy time:"]
    for (_, _), cell in sorted(
        cells.items(), key=lambda item: (meshes.index(item[0][0]), item[0][1])
    ):
        roles = sorted({role for run in cell.runs for role in run["roles"]})
        lines.append(
            f"  {cell.mesh:<11} {cell.key:<9} "
            + ", ".join(
                f"{role} {statistics.median(run['roles'].get(role, 0.0) for run in cell.runs):.3f}"
                for role in roles
            )
        )
    left_out = [
        f"{cell.mesh} {cell.key}: {reason}" for cell in cells.values() for reason in cell.left_out
    ]
    if left_out or failures:
        lines += ["", "left out or failed:", *(f"  {item}" for item in left_out + failures)]
    lines += [
        "",
        "busy vCPU: the machine's busy CPU seconds (/proc/stat: user, nice, system, irq, "
        "softirq, steal) per second of the accounted window (read around the load "
        "generator's start and exit). attributed share: the components' CPU seconds (their "
        "/proc/<pid>/stat, the load generator's resource usage) over that busy time. "
        "unattributed: busy time no component was charged for, per 1000 answered requests "
        "and per second of the window (vCPU). softirq+irq / busy: what /proc/stat counts as "
        "softirq and irq; with tick-based accounting and IRQ_TIME_ACCOUNTING off a tick that "
        "lands in a softirq is charged to the interrupted process too, so this part overlaps "
        "with attributed time where the softirq ran in a component's context (a sender's "
        "veth transmit) and is unattributed where it ran in ksoftirqd, the idle task or "
        "another process.",
    ]
    report = "\n".join(lines)
    print(report)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"attributed_cpu_share-{started:%Y%m%dT%H%M%SZ}.txt"
    out.write_text(report + "\n")
    print(f"saved {out}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

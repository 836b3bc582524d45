"""``meshbench local run`` and ``meshbench local reap``: the embedded local environment
from the command line, without Airflow."""

from __future__ import annotations

import argparse
import logging
import time
from typing import TYPE_CHECKING, Any

from meshbench.cli import CommandError
from meshbench.config import ConfigError, parse_duration
from meshbench.config.load_profiles import MAX_RATE, LoadProfile
from meshbench.local.meshes import LOCAL_MESHES

if TYPE_CHECKING:
    from meshbench.config import BenchmarkConfig
    from meshbench.config.load_profiles import LoadStep

log = logging.getLogger(__name__)


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def _rate(value: str) -> int:
    """A target rate; 0 stands for ``max``, as ``LoadProfile.qps`` spells it."""
    if value == MAX_RATE:
        return 0
    try:
        return _positive(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a whole number of at least 1 nor {MAX_RATE!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    local = subparsers.add_parser(
        "local", help="run the embedded local environment (no Airflow) or reap its leftovers"
    )
    commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="benchmark one local mesh end to end and print the result table"
    )
    run.add_argument("--mesh", required=True, choices=LOCAL_MESHES)
    run.add_argument(
        "--profile",
        default=None,
        metavar="NAME",
        help="load profile from benchmarks.yaml (study, demo, ladder, …); its values are the "
        "defaults of the options below, and a ladder runs every step (default: the local "
        "environment's profile, sized by the defaults shown)",
    )
    run.add_argument(
        "--duration",
        type=_duration,
        default=None,
        help="length of each measured run, whole seconds (default 10s, or the --profile's)",
    )
    run.add_argument(
        "--warmup",
        type=_duration,
        default=None,
        help="length of the discarded warm-up run (default: the profile's, else --duration)",
    )
    run.add_argument("--no-warmup", action="store_true", help="skip the warm-up run")
    run.add_argument(
        "--iterations",
        type=_positive,
        default=None,
        help="mesh set-ups measured one after another (default 1, or the --profile's)",
    )
    run.add_argument(
        "--runs",
        type=_positive,
        default=None,
        help="measured runs per iteration, of each step (default 1, or the --profile's)",
    )
    run.add_argument(
        "--connections",
        type=_positive,
        default=None,
        help="connections (default: the load profile's, 1 in the study); makes a ladder "
        "one step, as the trigger form does",
    )
    run.add_argument(
        "--qps",
        type=_rate,
        default=None,
        help="one step paced at this many requests per second over all connections (h2load), "
        "or 'max' (as fast as the path answers, wrk); makes a ladder one step",
    )
    run.add_argument(
        "--no-paired-baseline",
        action="store_true",
        help="do not measure the direct path before each mesh run",
    )
    run.add_argument(
        "--load",
        action="store_true",
        help="store the run and its measurements in the results database",
    )
    run.set_defaults(handler=_run)

    reap = commands.add_parser(
        "reap", help="remove leftovers of crashed local runs (recorded processes only)"
    )
    reap.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="PREFIX",
        help="leave this run (mb-<slug>) alone; repeatable",
    )
    reap.add_argument(
        "--min-idle",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="spare runs active more recently than this (default 30m; a live DAG run "
        "touches its state at every task and measurement)",
    )
    reap.add_argument(
        "--all",
        action="store_true",
        help="also reap runs that look active (only when no benchmark is running)",
    )
    reap.set_defaults(handler=_reap)


# What `local run` measures without --profile: one short set-up, not the study's hours.
DEFAULT_DURATION_SECONDS = 10.0
DEFAULT_ITERATIONS = 1
DEFAULT_RUNS = 1


def cli_load(config: BenchmarkConfig, args: argparse.Namespace) -> LoadProfile:
    """The load profile ``local run`` measures: ``--profile`` (or the local environment's
    profile) with the options given on the command line applied as the trigger form's are."""
    from meshbench.pipeline.steps import effective_load

    if args.profile is None:
        base = config.load_profile_for("local")
        duration = args.duration or DEFAULT_DURATION_SECONDS
        iterations = args.iterations or DEFAULT_ITERATIONS
        runs = args.runs or DEFAULT_RUNS
        warmup_duration = args.warmup or duration
    else:
        if args.profile not in config.load_profiles:
            raise CommandError(
                f"no load profile named {args.profile!r}; known: {', '.join(config.load_profiles)}"
            )
        base = config.load_profiles[args.profile]
        # The profile's own values, unless an option says otherwise.
        duration, iterations, runs = args.duration, args.iterations, args.runs
        warmup_duration = args.warmup
    if args.qps is not None and not base.steps:
        # A one-step profile paces only when it says fixed_rate; a target rate asked for here
        # means a paced step, so the profile becomes a one-step ladder that effective_load
        # then sets to that rate, exactly as it collapses a ladder.
        base = base.model_copy(update={"steps": base.ladder()})
    sizes = {
        "iterations": iterations,
        "runs_per_iteration": runs,
        "connections": args.connections,
        "qps": args.qps,
    }
    updates: dict[str, Any] = {"warmup": base.warmup and not args.no_warmup}
    if duration is not None:
        updates["duration"] = duration
    if warmup_duration is not None:
        updates["warmup_duration"] = warmup_duration
    try:
        # Sized as a triggered DAG run is (fewer runs lower min_positive with them; connections
        # or a rate make a ladder one step), so the run's state means what a DAG run's does.
        sized = effective_load(base, sizes)
        return LoadProfile.model_validate({**sized.model_dump(), **updates})
    except Exception as exc:
        given = {name: value for name, value in (sizes | updates).items() if value is not None}
        raise ConfigError(f"load settings {given}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from meshbench.config import load_config
    from meshbench.local.runner import CLI_LOAD_PROFILE, with_paired_baseline
    from meshbench.pipeline.inprocess import run_in_process
    from meshbench.pipeline.steps import RunObserver
    from meshbench.results.loader import SATURATION_THRESHOLD, negative_reason

    config = load_config()
    load = cli_load(config, args)
    steps = load.ladder() if load.steps else None
    if args.no_paired_baseline:
        config = with_paired_baseline(config, False)
    engine = None
    if args.load:
        from meshbench.results import migrate
        from meshbench.results.db import get_engine

        engine = get_engine()
        migrate.upgrade(engine)
    dag_id = f"meshbench_local_{args.mesh.replace('-', '_')}_cli"
    run_id = f"cli__{time.strftime('%Y%m%dT%H%M%S')}"
    console = Console(width=200)
    if steps is None:
        shape = f"c={load.connections}"
    else:
        shape = f"{len(steps)} step(s) {', '.join(step.key for step in steps)}"
    profile = f"profile {args.profile}, " if args.profile else ""
    console.print(
        f"[bold]meshbench local run[/bold]: {args.mesh}, {profile}{load.iterations} "
        f"iteration(s) × {load.runs_per_iteration} run(s) of {load.duration:g} s"
        f"{' per step' if steps else ''}, {shape}, at least {load.min_positive} positive"
    )
    run = run_in_process(
        config,
        "local",
        args.mesh,
        dag_id=dag_id,
        run_id=run_id,
        load=load,
        load_profile_name=CLI_LOAD_PROFILE,
        engine=engine,
        loads_results=args.load,
        observer=RunObserver(
            after_load_run=lambda record: console.print(
                f"  iteration {record.iteration} {record.phase} run {record.run_index}"
                f"{f' at {steps[record.step - 1].key}' if steps else ''}: "
                f"{_short(record.outcome)}"
            )
        ),
    )
    tolerance = load.duration_tolerance
    console.print(result_table(run.measurements, tolerance, steps))
    if any(_saturated(record) for record in run.measurements):
        console.print(
            f"saturated: achieved under {SATURATION_THRESHOLD:.0%} of the step's target rate; "
            "kept, and never averaged with the step's unsaturated runs"
        )
    negatives = {id(record): negative_reason(record, tolerance) for record in run.measurements}
    for record in run.measurements:
        if negatives[id(record)] is not None:
            console.print(
                f"[red]negative[/red] iteration {record.iteration} {record.phase} run "
                f"{record.run_index}{f' at {_step_key(record, steps)}' if steps else ''}: "
                f"{negatives[id(record)]}"
            )
    for task_id, reason in run.failures.items():
        console.print(f"[red]failed:[/red] {task_id}: {reason}")
    for problem in run.teardown_problems:
        console.print(f"[red]teardown problem:[/red] {problem}")
    if run.loaded is not None:
        positive = sum(1 for reason in negatives.values() if reason is None)
        console.print(
            f"loaded as run {run.loaded['run_id']} (attempt {run.loaded['attempt']}): "
            f"{len(run.measurements)} measurement(s), {positive} positive, "
            f"{len(run.measurements) - positive} negative"
        )
    console.print(f"raw results: {run.artifacts}")
    console.print(
        f"run {run.state}: {run.positive_measured} positive measured run(s), "
        f"at least {load.min_positive} needed"
    )
    return 0 if run.state == "success" and not run.teardown_problems else 1


def _short(outcome: Any) -> str:
    raw = outcome.raw_result or {}
    qps = raw.get("ActualQPS")
    text = f"{qps:,.0f} QPS" if qps is not None else "no result"
    return f"{text}; {outcome.failure}" if outcome.failure else text


def _step_key(record: Any, steps: list[LoadStep] | None) -> str:
    """The step a measurement was made at, as its artifact records it."""
    described = (record.outcome.context or {}).get("step") or {}
    if described.get("key"):
        return str(described["key"])
    return steps[record.step - 1].key if steps and record.step <= len(steps) else ""


def _saturated(record: Any) -> bool:
    """Paced at a target rate and short of it, as the results loader judges it."""
    from meshbench.results.loader import is_saturated

    raw = record.outcome.raw_result or {}
    target = raw.get("RequestedQPS")
    if target in (None, MAX_RATE) or not isinstance(raw.get("ActualQPS"), int | float):
        return False
    try:
        target_qps = float(target)
    except (TypeError, ValueError):
        return False
    return target_qps > 0 and is_saturated(raw["ActualQPS"], target_qps)


def result_table(
    measurements: list[Any], tolerance: float, steps: list[LoadStep] | None = None
) -> Any:
    """One row per measurement; with ``steps`` (a ladder) each row names its step."""
    from rich.table import Table

    from meshbench.results.loader import negative_reason

    table = Table(title="local measurements (latencies in µs)")
    columns = ["it", *(["step"] if steps else []), "phase", "run", "path", "QPS"]
    columns += ["avg", "p50", "p90", "p99", "p99.9", "max", "requests", "errors", "sockets"]
    columns += ["CPU idle", "background CPU s", "load 1m", "verdict"]
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("step", "phase", "path", "verdict") else "right"
        )
    for record in measurements:
        outcome = record.outcome
        raw = outcome.raw_result or {}
        histogram = raw.get("DurationHistogram") or {}
        percentiles = {
            entry["Percentile"]: entry["Value"] for entry in histogram.get("Percentiles") or []
        }
        machine = outcome.context.get("machine") or {}

        def micro(seconds: float | None) -> str:
            return "" if seconds is None else f"{seconds * 1e6:,.0f}"

        verdict = negative_reason(record, tolerance)
        verdict_text = "[green]positive[/green]" if verdict is None else "[red]negative[/red]"
        if _saturated(record):
            verdict_text += " [yellow]saturated[/yellow]"
        table.add_row(
            str(record.iteration),
            *([_step_key(record, steps)] if steps else []),
            record.phase,
            str(record.run_index),
            str(outcome.context.get("path", "")),
            f"{raw['ActualQPS']:,.0f}" if "ActualQPS" in raw else "",
            micro(histogram.get("Avg")),
            micro(percentiles.get(50.0)),
            micro(percentiles.get(90.0)),
            micro(percentiles.get(99.0)),
            micro(percentiles.get(99.9)),
            micro(histogram.get("Max")),
            str(histogram.get("Count", "")),
            str((raw.get("ErrorsDurationHistogram") or {}).get("Count", "")),
            str(raw.get("SocketCount", "")),
            f"{machine['cpu_idle_fraction']:.0%}" if "cpu_idle_fraction" in machine else "",
            f"{machine['background_cpu_seconds']:.2f}"
            if "background_cpu_seconds" in machine
            else "",
            f"{machine['load_average_1m_after']:.2f}" if "load_average_1m_after" in machine else "",
            verdict_text,
        )
    return table


def _reap(args: argparse.Namespace) -> int:
    from meshbench.local.reaper import DEFAULT_MIN_IDLE_SECONDS, reap

    if args.all:
        min_idle = 0.0
    elif args.min_idle is not None:
        min_idle = args.min_idle
    else:
        min_idle = DEFAULT_MIN_IDLE_SECONDS
    report = reap(keep=args.keep, min_idle_seconds=min_idle)
    for label, items in (
        ("stopped", report.stopped),
        ("deleted namespace", report.namespaces),
        ("deleted interface", report.interfaces),
        ("removed socket", report.sockets),
        ("removed state", report.state_folders),
    ):
        for item in items:
            print(f"{label}: {item}")
    for item in report.active:
        print(f"spared, recently active: {item}")
    for item in report.unrecorded_processes:
        print(f"left alone (not recorded by meshbench): {item}")
    for problem in report.problems:
        print(f"problem: {problem}")
    if not report.removed_anything and not report.problems:
        print("nothing to reap")
    if report.problems:
        raise CommandError(f"{len(report.problems)} leftover(s) could not be removed")
    return 0

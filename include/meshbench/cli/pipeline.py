"""``meshbench demo``, ``meshbench ui`` and ``meshbench airflow``: the pipeline on this machine."""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from typing import Any

from meshbench.cli import CommandError

DEMO_PROFILE = "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run every enabled local benchmark DAG through Airflow, aggregate, print the report",
    )
    demo.add_argument(
        "--profile",
        default=DEMO_PROFILE,
        help="load profile to run (default: demo; 'study' is full length)",
    )
    demo.add_argument(
        "--mesh",
        action="append",
        dest="meshes",
        help="only this mesh (repeatable; default: every enabled local mesh)",
    )
    demo.set_defaults(handler=_demo)

    ui = subparsers.add_parser(
        "ui", help="start the Airflow UI with scheduler (airflow standalone)"
    )
    ui.set_defaults(handler=_ui)

    stop = subparsers.add_parser(
        "stop",
        help="stop this checkout's `meshbench ui` (Airflow and what it started) and its "
        "private Postgres",
    )
    stop.set_defaults(handler=_stop)

    passthrough = subparsers.add_parser(
        "airflow",
        help="run an Airflow CLI command against meshbench's Airflow",
        description="For example: meshbench airflow backfill create --dag-id "
        "meshbench_local_baseline --from-date 2026-11-01 --to-date 2026-11-03",
    )
    passthrough.add_argument("args", nargs=argparse.REMAINDER)
    passthrough.set_defaults(handler=_airflow)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from meshbench.config import LOAD_PROFILE_ENV_VAR, load_config

    console = Console(width=200)
    os.environ[LOAD_PROFILE_ENV_VAR] = args.profile
    config = load_config()
    meshes = [mesh for env, mesh in config.matrix if env == "local"]
    if args.meshes:
        unknown = sorted(set(args.meshes) - set(meshes))
        if unknown:
            raise CommandError(f"not enabled in the local environment: {', '.join(unknown)}")
        meshes = [mesh for mesh in meshes if mesh in args.meshes]
    if not meshes:
        raise CommandError("no local mesh is enabled in the configuration")

    # A demo leaves nothing running: the private Postgres goes if the demo started it.
    started_postgres = not private_postgres_running()
    try:
        return _run_demo(args, console, config, meshes)
    finally:
        if started_postgres and private_postgres_running():
            from meshbench.postgres import PrivatePostgres

            PrivatePostgres.for_project().stop()
            console.print("stopped the private Postgres this run had started")


def _run_demo(args: argparse.Namespace, console: Any, config: Any, meshes: list[str]) -> int:
    from meshbench.airflow_env import airflow_environment, prepare_airflow, run_airflow
    from meshbench.analysis import ladder
    from meshbench.analysis.aggregate import fetch_measurements, summarize
    from meshbench.analysis.daily import CPU_CHART, LADDER_CHART
    from meshbench.analysis.report import comparison_tables
    from meshbench.config import LOAD_PROFILE_ENV_VAR
    from meshbench.dagfactory import RUN_PURPOSE_ENV_VAR
    from meshbench.paths import state_dir
    from meshbench.pipeline.artifacts import ArtifactStore
    from meshbench.results import migrate
    from meshbench.results.db import get_engine

    engine = get_engine()
    migrate.upgrade(engine)
    console.print(
        f"[bold]meshbench demo[/]: load profile {args.profile!r}, meshes "
        f"{', '.join(meshes)}; results database {engine.url}"
    )
    # A demo is a test of the pipeline: it never stands for the day's scheduled result.
    env = prepare_airflow(
        airflow_environment({LOAD_PROFILE_ENV_VAR: args.profile, RUN_PURPOSE_ENV_VAR: "test"})
    )

    started = datetime.now(UTC).replace(microsecond=0)
    logical = started.isoformat()
    logs = state_dir() / "logs" / f"demo-{started:%Y%m%dT%H%M%S}"
    failed = []
    for mesh in meshes:
        dag_id = f"meshbench_local_{mesh}"
        console.print(f"→ airflow dags test {dag_id} {logical}")
        began = time.monotonic()
        result = run_airflow(
            ["dags", "test", dag_id, logical], env=env, check=False, log_file=logs / f"{dag_id}.log"
        )
        state = "succeeded" if result.returncode == 0 else f"failed (exit {result.returncode})"
        console.print(f"  {state} in {time.monotonic() - began:.0f} s; log {logs / dag_id}.log")
        if result.returncode != 0:
            failed.append(dag_id)
    console.print(f"→ airflow dags test meshbench_aggregate {logical}")
    run_airflow(
        ["dags", "test", "meshbench_aggregate", logical],
        env=env,
        check=False,
        log_file=logs / "meshbench_aggregate.log",
    )

    day = started.date()
    summary = summarize(fetch_measurements(engine, "local", day))
    for table in comparison_tables(summary):
        console.print(table)
    results = ladder.mesh_results(ladder.fetch_ladder(engine, "local", day))
    if results:
        console.print(ladder.results_table(results, f"What each mesh adds and costs · {day}"))
    report_dir = ArtifactStore(config).report_dir("local", day.isoformat())
    console.print("Report and charts:")
    names = ("report.html", "report.md", "qps.png", "latency.png", "trend.png")
    for name in (*names, LADDER_CHART, CPU_CHART):
        path = report_dir / name
        console.print(f"  {path}" + ("" if path.exists() else "  (missing)"))
    if failed:
        raise CommandError(f"DAG run(s) failed: {', '.join(failed)}; logs in {logs}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from meshbench.airflow_env import (
        _airflow_bin,
        airflow_environment,
        airflow_home,
        prepare_airflow,
    )
    from meshbench.standalone import admin_password, run_standalone

    started_postgres = not private_postgres_running()
    env = prepare_airflow(airflow_environment())
    port = env["AIRFLOW__API__PORT"]
    passwords = airflow_home() / "simple_auth_manager_passwords.json.generated"
    print(
        f"Starting Airflow (api-server, scheduler, dag-processor, triggerer) on "
        f"http://127.0.0.1:{port}; the local benchmark DAGs start paused (unpause one to run "
        "it). Stop with Ctrl+C or `make stop`."
    )
    password = admin_password(airflow_home())
    print(
        f"Log in as 'admin'; the password is in {passwords}"
        + (f": {password}" if password else " once the server has started (printed again then)")
    )
    return run_standalone(_airflow_bin(), env, airflow_home(), started_postgres)


def private_postgres_running() -> bool:
    from meshbench.postgres import PostgresUnavailable, PrivatePostgres

    try:
        return PrivatePostgres.for_project().is_running()
    except PostgresUnavailable:
        return False


def _stop(args: argparse.Namespace) -> int:
    from meshbench.standalone import stop_everything

    stopped = stop_everything()
    print("stopped: " + "; ".join(stopped) if stopped else "nothing of this checkout was running")
    return 0


def _airflow(args: argparse.Namespace) -> int:
    from meshbench.airflow_env import airflow_environment, migrate_results, run_airflow

    forwarded = args.args[1:] if args.args[:1] == ["--"] else args.args
    env = airflow_environment()
    # A scheduler or backfill started through here must find the results schema in place.
    migrate_results(env)
    return run_airflow(forwarded, env=env, check=False).returncode

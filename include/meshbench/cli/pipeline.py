"""``meshbench demo``, ``meshbench ui`` and ``meshbench airflow``: the pipeline on this machine."""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

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

    from meshbench.airflow_env import airflow_environment, prepare_airflow, run_airflow
    from meshbench.analysis.aggregate import fetch_measurements, summarize
    from meshbench.analysis.report import comparison_tables
    from meshbench.config import LOAD_PROFILE_ENV_VAR, load_config
    from meshbench.dagfactory import RUN_PURPOSE_ENV_VAR
    from meshbench.pipeline.artifacts import ArtifactStore
    from meshbench.postgres import state_dir
    from meshbench.results import migrate
    from meshbench.results.db import get_engine

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
    report_dir = ArtifactStore(config).report_dir("local", day.isoformat())
    console.print("Report and charts:")
    for name in ("report.html", "report.md", "qps.png", "latency.png", "trend.png"):
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

    env = prepare_airflow(airflow_environment())
    passwords = Path(airflow_home()) / "simple_auth_manager_passwords.json.generated"
    port = env["AIRFLOW__API__PORT"]
    print(
        f"Starting Airflow (api-server, scheduler, dag-processor, triggerer) on "
        f"http://127.0.0.1:{port}"
    )
    print(
        f"Log in as 'admin'; the password is in {passwords} once the server has started"
        + (f": {json.loads(passwords.read_text()).get('admin')}" if passwords.exists() else "")
    )
    os.execve(_airflow_bin(), [_airflow_bin(), "standalone"], env)
    return 0  # not reached


def _airflow(args: argparse.Namespace) -> int:
    from meshbench.airflow_env import airflow_environment, migrate_results, run_airflow

    forwarded = args.args[1:] if args.args[:1] == ["--"] else args.args
    env = airflow_environment()
    # A scheduler or backfill started through here must find the results schema in place.
    migrate_results(env)
    return run_airflow(forwarded, env=env, check=False).returncode

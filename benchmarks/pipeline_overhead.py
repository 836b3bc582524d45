"""What the pipeline costs around the load generator, measured in one run.

Runs one local benchmark DAG through Airflow (`airflow dags test`, the demo profile by
default) and prints:

- the DAG run's wall time divided by the load generator's own time inside it (the sum of
  the runs' actual durations as the load generator measured them, and the sum of the
  wall time of each load step including start-up and result conversion);
- the DAG folder's parse time (DagBag over `dags/`, several times, in fresh interpreters),
  with the configuration as it is or, with ``--all-environments``, with every environment
  enabled (each DAG's docs render its plan, so this is the parse a full deployment pays).

The output is saved under benchmarks/results/. Usage:

    .venv/bin/python benchmarks/pipeline_overhead.py [--mesh baseline] [--profile demo]
        [--all-environments] [--parse-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from airflow.sdk import ObjectStoragePath
from sqlalchemy import text

from meshbench.airflow_env import airflow_environment, prepare_airflow, run_airflow
from meshbench.config import CONFIG_ENV_VAR, LOAD_PROFILE_ENV_VAR, config_path
from meshbench.paths import project_root, state_dir
from meshbench.results import migrate
from meshbench.results.db import get_engine

RESULTS = Path(__file__).with_name("results")
PARSE_SCRIPT = """
import os, time
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag({dags!r})
elapsed = time.perf_counter() - start
assert not bag.import_errors, bag.import_errors
print(elapsed, len(bag.dags))
"""


def parse_times(
    repeats: int, env: dict[str, str], bytecode_cache: bool = True
) -> tuple[list[float], int]:
    """Parse times in fresh interpreters. With ``bytecode_cache`` the modules' bytecode is
    written by a first, discarded parse and read by the timed ones, as in a DAG processor of
    ``make ui`` or the compose image; without it every parse compiles every module again
    (what a shell with PYTHONDONTWRITEBYTECODE=1 would measure)."""
    times, count = [], 0
    script = PARSE_SCRIPT.format(dags=str(project_root() / "dags"))
    env = dict(env)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not bytecode_cache:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="meshbench-no-bytecode-")
    for attempt in range(repeats + 1):
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        seconds, count = out.stdout.strip().splitlines()[-1].split()
        if attempt > 0 or not bytecode_cache:
            times.append(float(seconds))
    return times[:repeats], int(count)


def every_environment_enabled(folder: Path) -> Path:
    """A copy of the configuration in use with every environment enabled."""
    document = yaml.safe_load(config_path().read_text())
    for settings in document["environments"].values():
        settings["enabled"] = True
    path = folder / "every-environment.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def parse_line(repeats: int, env: dict[str, str], what: str) -> str:
    lines = []
    for cached in (True, False):
        parse, dag_count = parse_times(repeats, env, bytecode_cache=cached)
        lines.append(
            f"DAG folder parse time ({dag_count} DAGs, {what}, "
            f"{'bytecode cached' if cached else 'no bytecode cache'}, {len(parse)} fresh "
            f"interpreters): median {statistics.median(parse):.2f} s, min {min(parse):.2f} s, "
            f"max {max(parse):.2f} s"
        )
    return "\n".join(lines)


def machine_line() -> str:
    def output(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True).stdout.strip()

    load = Path("/proc/loadavg").read_text().split()[0]
    commit = output("git", "rev-parse", "--short", "HEAD")
    return f"machine: {output('nproc')} cores, load average {load}; commit {commit}"


def save(report: str, logical: datetime) -> None:
    print(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"pipeline_overhead-{logical:%Y%m%dT%H%M%S}.txt"
    out.write_text(report + "\n")
    print(f"saved {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", default="baseline")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--parse-repeats", type=int, default=5)
    parser.add_argument(
        "--all-environments", action="store_true", help="parse with every environment enabled"
    )
    parser.add_argument("--parse-only", action="store_true", help="skip the DAG run")
    args = parser.parse_args()

    env = prepare_airflow(airflow_environment({LOAD_PROFILE_ENV_VAR: args.profile}))
    parse_env, what = env, "configuration as it is"
    scratch = tempfile.TemporaryDirectory()
    if args.all_environments:
        parse_env = {**env, CONFIG_ENV_VAR: str(every_environment_enabled(Path(scratch.name)))}
        what = "every environment enabled"
    if args.parse_only:
        logical = datetime.now(UTC).replace(microsecond=0)
        save(
            "\n".join(
                [
                    f"pipeline overhead · {logical.isoformat()} · parse only",
                    machine_line(),
                    parse_line(args.parse_repeats, parse_env, what),
                ]
            ),
            logical,
        )
        return 0
    engine = get_engine()
    migrate.upgrade(engine)
    dag_id = f"meshbench_local_{args.mesh}"
    logical = datetime.now(UTC).replace(microsecond=0)
    log = state_dir() / "logs" / f"pipeline-overhead-{logical:%Y%m%dT%H%M%S}.log"

    began = time.perf_counter()
    result = run_airflow(
        ["dags", "test", dag_id, logical.isoformat()], env=env, check=False, log_file=log
    )
    dag_wall = time.perf_counter() - began
    if result.returncode != 0:
        print(f"the DAG run failed; see {log}", file=sys.stderr)
        return 1

    with engine.connect() as connection:
        run_id, artifacts = connection.execute(
            text(
                "SELECT id, settings->>'artifacts' FROM run WHERE dag_id = :dag "
                "ORDER BY id DESC LIMIT 1"
            ),
            {"dag": dag_id},
        ).one()
        load_seconds, runs = connection.execute(
            text(
                "SELECT coalesce(sum(actual_duration_s), 0), count(*) FROM measurement "
                "WHERE run_id = :run"
            ),
            {"run": run_id},
        ).one()
    run_dir = ObjectStoragePath(artifacts)
    step_seconds = sum(
        json.loads(path.read_text())["wall_seconds"]
        for folder in run_dir.iterdir()
        if folder.name.startswith("iteration_")
        for path in folder.iterdir()
    )
    lines = [
        f"pipeline overhead · {logical.isoformat()} · {dag_id} · load profile {args.profile!r}",
        machine_line(),
        f"DAG run wall time (airflow dags test):          {dag_wall:8.1f} s",
        f"load generator time, {runs} runs (actual durations): {load_seconds:8.1f} s",
        f"load steps' wall time (start-up + conversion):  {step_seconds:8.1f} s",
        f"ratio DAG wall / load generator time:           {dag_wall / load_seconds:8.2f}",
        f"ratio DAG wall / load steps' wall time:         {dag_wall / step_seconds:8.2f}",
        parse_line(args.parse_repeats, parse_env, what),
    ]
    save("\n".join(lines), logical)
    return 0


if __name__ == "__main__":
    sys.exit(main())

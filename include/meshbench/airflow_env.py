"""The project's own Airflow: settings, metadata database, pools, and CLI calls.

Used by ``make run`` (the demo), ``make ui`` and the end-to-end tests. Airflow's metadata
lives in its own database on the private Postgres (or ``$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``);
results go to the results database through the ``meshbench_results`` connection.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from meshbench.config import BenchmarkConfig, load_config
from meshbench.paths import project_root, state_dir
from meshbench.postgres import AIRFLOW_DATABASE, PrivatePostgres
from meshbench.results.db import RESULTS_CONN_ID, normalise_url, resolve_database_url

log = logging.getLogger(__name__)

AGGREGATE_POOL = ("meshbench_aggregate", 1, "meshbench aggregation")
UI_PORT = 8080


def airflow_home() -> Path:
    home = state_dir() / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    return home


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def airflow_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment for Airflow commands run on this machine."""
    env = dict(os.environ)
    results_url = resolve_database_url()
    metadata_url = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if not metadata_url:
        server = PrivatePostgres.for_project().ensure_running()
        metadata_url = server.url(AIRFLOW_DATABASE).replace("+psycopg", "+psycopg2")
    root = project_root()
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home()),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
            # Two cores: Airflow's own processes must not crowd the benchmark.
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": env.get(
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin"
            ),
            "AIRFLOW__API__PORT": env.get("AIRFLOW__API__PORT", str(UI_PORT)),
            # This machine only, unless the operator says otherwise.
            "AIRFLOW__API__HOST": env.get("AIRFLOW__API__HOST", "127.0.0.1"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
            f"AIRFLOW_CONN_{RESULTS_CONN_ID.upper()}": make_url(results_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False),
            # The EKS kubeconfig's exec plugin runs a bare python3: the venv comes first.
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.pop("MESHBENCH_DATABASE_URL", None)  # tasks use the Airflow connection
    env.update(extra or {})
    return env


def run_airflow(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    check: bool = True,
    capture: bool = False,
    log_file: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    command = [_airflow_bin(), *args]
    log.debug("running %s", " ".join(command))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("w") as handle:
            result = subprocess.run(
                command,
                env=env or airflow_environment(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
                timeout=timeout,
            )
    else:
        result = subprocess.run(
            command,
            env=env or airflow_environment(),
            text=True,
            capture_output=capture,
            check=False,
            timeout=timeout,
        )
    if check and result.returncode != 0:
        where = f"; see {log_file}" if log_file else ""
        detail = (result.stderr or "")[-2000:] if capture else ""
        raise RuntimeError(f"airflow {' '.join(args)} exited {result.returncode}{where}{detail}")
    return result


def pools(config: BenchmarkConfig) -> list[tuple[str, int, str]]:
    found = {}
    for environment, _ in config.iter_pairs(enabled_only=False):
        pool = config.environment(environment).pool
        found[pool.name] = (pool.name, pool.slots, f"meshbench {environment} environment")
    reaper = config.reaper.pool
    found[reaper.name] = (reaper.name, reaper.slots, "meshbench reaper")
    found[AGGREGATE_POOL[0]] = AGGREGATE_POOL
    return list(found.values())


def results_url_of(env: dict[str, str]) -> str:
    """The results database that Airflow's tasks will use under ``env``."""
    raw = env.get(f"AIRFLOW_CONN_{RESULTS_CONN_ID.upper()}")
    return normalise_url(raw) if raw else resolve_database_url()


def migrate_results(env: dict[str, str]) -> None:
    """Bring the results database to the newest schema before any DAG can run."""
    from meshbench.results import migrate
    from meshbench.results.db import get_engine

    migrate.upgrade(get_engine(results_url_of(env)))


def prepare_airflow(env: dict[str, str] | None = None) -> dict[str, str]:
    """Migrate both databases and create the pools; returns the environment."""
    env = env or airflow_environment()
    migrate_results(env)
    run_airflow(["db", "migrate"], env=env, capture=True)
    for name, slots, description in pools(load_config()):
        run_airflow(["pools", "set", name, str(slots), description], env=env, capture=True)
    return env

"""An Airflow of the tests' own: fresh metadata and results databases, a short profile."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from meshbench.airflow_env import airflow_environment, run_airflow
from meshbench.config import DEFAULT_CONFIG_PATH
from meshbench.results import migrate

E2E_PROFILES = {
    # Two iterations of one short measured run: enough to see an iteration fail and the
    # next one run, short enough for CI.
    "e2e": {
        "qps": 6000,
        "connections": 1,
        "duration": "2s",
        "warmup": True,
        "warmup_duration": "1s",
        "runs_per_iteration": 1,
        "iterations": 2,
        "min_positive": 1,
    },
    "e2e-tiny": {
        "qps": 6000,
        "connections": 1,
        "duration": "1s",
        "warmup": False,
        "runs_per_iteration": 1,
        "iterations": 1,
        "min_positive": 1,
    },
    "e2e-strict": {
        "qps": 6000,
        "connections": 1,
        "duration": "2s",
        "warmup": False,
        "runs_per_iteration": 1,
        "iterations": 2,
        "min_positive": 2,
    },
}


def processes_mentioning(prefix: str) -> list[str]:
    """Command lines of running processes that name ``prefix`` (a run's files and names)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if prefix in command and "pytest" not in command:
            found.append(f"{entry.name}: {command[:200]}")
    return found


@dataclass
class AirflowStack:
    env: dict[str, str]
    results: Engine
    artifacts: Path
    home: Path

    def dags_test(self, dag_id: str, logical_date: str, **extra_env: str):
        env = {**self.env, **extra_env}
        log = self.home / "logs-e2e" / f"{dag_id}-{logical_date[:10]}.log"
        return run_airflow(
            ["dags", "test", dag_id, logical_date], env=env, check=False, log_file=log
        ), log


def _psycopg2(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg2").render_as_string(False)


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory, fresh_database) -> AirflowStack:
    if os.geteuid() != 0:
        pytest.skip("the local environment's network namespaces need root")
    home = tmp_path_factory.mktemp("airflow-home")
    artifacts = home / "artifacts"
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    document["load_profiles"].update(E2E_PROFILES)
    document["artifacts"] = {"base_uri": artifacts.as_uri()}
    document["defaults"]["retries"] = 0
    # A scheduler started by a test must run only the DAG the test unpauses.
    document["environments"]["local"]["paused_on_creation"] = True
    config_path = home / "benchmarks.yaml"
    config_path.write_text(yaml.safe_dump(document))

    results_url = fresh_database("meshbench_e2e_results")
    results = create_engine(results_url)
    migrate.upgrade(results)
    env = airflow_environment(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _psycopg2(
                fresh_database("meshbench_e2e_airflow")
            ),
            "AIRFLOW_CONN_MESHBENCH_RESULTS": make_url(results_url)
            .set(drivername="postgresql")
            .render_as_string(False),
            "MESHBENCH_CONFIG": str(config_path),
            "MESHBENCH_LOAD_PROFILE": "e2e",
            "AIRFLOW__CORE__PARALLELISM": "2",
        }
    )
    result = run_airflow(["db", "migrate"], env=env, check=False, capture=True)
    assert result.returncode == 0, result.stderr[-3000:]
    stack = AirflowStack(env=env, results=results, artifacts=artifacts, home=home)
    yield stack
    results.dispose()


def namespaces_with(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.startswith(prefix)]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class AirflowServices:
    """api-server, scheduler and dag-processor, as the UI and backfills need them."""

    processes: list[subprocess.Popen]
    port: int
    logs: Path

    def stop(self) -> None:
        import signal

        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def start_services(env: dict[str, str], logs: Path) -> AirflowServices:
    from meshbench.airflow_env import _airflow_bin

    port = free_port()
    env = {
        **env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    }
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for command in (["api-server", "--port", str(port)], ["scheduler"], ["dag-processor"]):
        log = (logs / f"{command[0]}.log").open("w")
        processes.append(
            subprocess.Popen(
                [_airflow_bin(), *command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return AirflowServices(processes=processes, port=port, logs=logs)

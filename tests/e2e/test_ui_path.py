"""The path users take, through a real scheduler started as `make ui` starts it
(`meshbench ui`, airflow standalone) on a clean state folder: its own private Postgres,
migrations, the trigger form's checks, a failed-then-cleared load, a manual run beside the
scheduled one, and a stop that leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from meshbench.config import DEFAULT_CONFIG_PATH
from meshbench.pipeline.artifacts import safe_name
from tests.e2e.conftest import E2E_PROFILES, free_port, namespaces_with

pytestmark = [pytest.mark.airflow, pytest.mark.netns, pytest.mark.postgres, pytest.mark.slow]

MESHBENCH = str(Path(sys.executable).with_name("meshbench"))
DAG_ID = "meshbench_local_baseline"
WAIT_SECONDS = 600


class Api:
    def __init__(self, port: int, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = self.call(
            "POST", "/auth/token", {"username": "admin", "password": password}, auth=False
        )[1]["access_token"]

    def call(self, method: str, path: str, body=None, auth: bool = True, accept="json"):
        headers = {"content-type": "application/json"}
        headers["accept"] = "text/html" if accept == "html" else "application/json"
        if auth:
            headers["authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read().decode()
                return response.status, (json.loads(raw) if accept == "json" else raw)
        except urllib.error.HTTPError as error:
            raw = error.read().decode()
            return error.code, (json.loads(raw) if accept == "json" else raw)

    def runs(self) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=50")[1]["dag_runs"]

    def clear_load(self, run_id: str, log: Path, until: tuple[str, ...] = ("success",)) -> None:
        """Clear a failed load_results (a new attempt of the DAG run) and wait for its end."""
        status, body = self.call(
            "POST",
            f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
            {
                "dag_run_id": run_id,
                "task_ids": ["load_results"],
                "dry_run": False,
                "only_failed": True,
                "reset_dag_runs": True,
            },
        )
        assert status == 200, body
        time.sleep(5)  # the cleared run leaves its old state
        self.wait_for(run_id, until, log)

    def wait_for(self, run_id_or_type: str, states: tuple[str, ...], log: Path) -> dict:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            for run in self.runs():
                if run_id_or_type in (run["dag_run_id"], run["run_type"]) and (
                    run["state"] in states
                ):
                    return run
            time.sleep(3)
        raise AssertionError(f"no {run_id_or_type} run reached {states}\n{log.read_text()[-4000:]}")


def processes_of(state: Path) -> list[str]:
    """Processes started under this state folder (Airflow's and the runs' inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"MESHBENCH_STATE={state}".encode() in environ:
                found.append(f"{entry.name}: {command[:150]}")
    return found


def wait_for_rows(engine, sql: str, timeout: float = WAIT_SECONDS, **params):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            rows = connection.execute(text(sql), params).all()
        if rows:
            return rows
        time.sleep(3)
    raise AssertionError(f"nothing for {sql} in {timeout} s")


def test_make_ui_path_from_a_clean_state(tmp_path_factory) -> None:
    if os.geteuid() != 0:
        pytest.skip("the local environment's network namespaces need root")
    began = time.monotonic()
    state = Path(tmp_path_factory.mktemp("clean-state"))
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    document["load_profiles"].update(E2E_PROFILES)
    document["defaults"]["retry_delay"] = 1
    config_path = state / "benchmarks.yaml"
    config_path.write_text(yaml.safe_dump(document))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MESHBENCH"))},
        "MESHBENCH_STATE": str(state),
        "MESHBENCH_CONFIG": str(config_path),
        "MESHBENCH_LOAD_PROFILE": "e2e-tiny",
        # The first attempt's load fails (as against an unmigrated database); a clear mends it.
        "MESHBENCH_INJECT_FAILURE": "load_results@1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__CORE__PARALLELISM": "2",
    }
    log = state / "ui.log"
    ui = subprocess.Popen(
        [MESHBENCH, "ui"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 400
        while "Airflow answers" not in log.read_text():
            assert ui.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(2)
        password = json.loads(
            (state / "airflow" / "simple_auth_manager_passwords.json.generated").read_text()
        )["admin"]
        assert f"password {password}" in log.read_text()
        api = Api(port, password)
        url = subprocess.run(
            [MESHBENCH, "db", "url", "--with-password"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        results = create_engine(url)

        # Trigger-time refusals, in words, before any run exists.
        for conf, words in (
            ({"duration": "0s"}, "duration must be a positive length of time"),
            ({"bogus": 1}, "unknown parameter 'bogus'"),
        ):
            status, body = api.call(
                "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf}
            )
            assert status == 400 and words in body["detail"], body
        deadline = time.monotonic() + 300
        while api.call("GET", f"/api/v2/dags/{DAG_ID}")[0] != 200:  # the dag-processor parses
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(3)
        assert api.runs() == []
        assert api.call("GET", f"/api/v2/dags/{DAG_ID}")[1]["is_paused"] is True

        # Unpaused, the scheduler makes today's scheduled run; its load fails, a clear
        # (Airflow's ordinary retry) loads the measured runs: positive, once.
        api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        failed = api.wait_for("scheduled", ("failed",), log)
        api.clear_load(failed["dag_run_id"], log)
        rows = wait_for_rows(
            results,
            "SELECT r.purpose, r.attempt, m.positive, count(*) FROM run r JOIN measurement m "
            "ON m.run_id = r.id WHERE m.phase = 'measured' GROUP BY 1, 2, 3",
        )
        assert [tuple(r) for r in rows] == [("scheduled", 1, True, 1)]

        # The results page shows it once the aggregation (asset-triggered) has run.
        wait_for_rows(results, "SELECT 1 FROM daily_summary WHERE mesh = 'baseline'")
        status, page = api.call("GET", "/meshbench/?environment=local", accept="html")
        assert status == 200 and "Comparison · local" in page, page[:2000]

        # A manual short run of the same date is kept but does not replace it.
        today = datetime.now(UTC).date()
        status, manual = api.call(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            {"logical_date": datetime.now(UTC).isoformat(), "conf": {"qps": 3000}},
        )
        assert status == 200, manual
        # Its first attempt's load fails as well (the injected fault): cleared the same way.
        api.wait_for(manual["dag_run_id"], ("failed",), log)
        api.clear_load(manual["dag_run_id"], log)
        wait_for_rows(results, "SELECT 1 FROM run WHERE purpose = 'manual'")
        time.sleep(20)  # the aggregation after the manual load
        with results.connect() as connection:
            standing = connection.execute(
                text("SELECT purpose, is_latest_attempt FROM v_run ORDER BY attempt")
            ).all()
            compared = (
                connection.execute(
                    text("SELECT load_profile_key FROM v_comparison WHERE benchmark_date = :d"),
                    {"d": today},
                )
                .scalars()
                .all()
            )
        assert [tuple(r) for r in standing] == [("scheduled", True), ("manual", False)]
        assert compared == ["q6000-c1-d1s"]

        # A run marked failed by hand while it measures: teardowns run, what it measured is
        # loaded, and it ends failed, also after a clear of its load.
        status, stopped = api.call(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            {
                "logical_date": datetime.now(UTC).isoformat(),
                "conf": {"runs_per_iteration": 6, "duration": "4s"},
            },
        )
        assert status == 200, stopped
        run_id = stopped["dag_run_id"]
        first = (
            (state / "artifacts" / "runs" / safe_name(DAG_ID) / safe_name(run_id) / "attempt-01")
            / "iteration_01"
            / "measured-01.json"
        )
        deadline = time.monotonic() + WAIT_SECONDS
        while not first.exists():  # the first of its measured runs is kept
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(1)
        status, body = api.call(
            "PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"}
        )
        assert status == 200, body
        api.wait_for(run_id, ("failed",), log)
        time.sleep(10)  # a late success would show here
        assert next(r for r in api.runs() if r["dag_run_id"] == run_id)["state"] == "failed"
        api.clear_load(run_id, log, until=("failed",))
        rows = wait_for_rows(
            results,
            "SELECT r.state, r.settings->'stopped_from_outside', count(*) FILTER (WHERE m.positive) "
            "FROM run r JOIN measurement m ON m.run_id = r.id WHERE r.dag_run_id = :run "
            "AND m.phase = 'measured' GROUP BY 1, 2",
            run=run_id,
        )
        [(run_state, stopped_tasks, positives)] = rows
        assert run_state == "failed" and "iteration_01.measure" in stopped_tasks, rows
        assert positives >= 1, "the runs measured before the stop are kept"
        results.dispose()
    finally:
        if ui.poll() is None:
            ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=180)
    stopped = log.read_text()
    assert "stopped the private Postgres this start had started" in stopped
    assert processes_of(state) == []
    prefixes = {p.name.split(".")[0] for p in (state / "local").glob("mb-*")}
    assert prefixes, "the runs left their summaries, naming their resources"
    assert [n for n in namespaces_with("mb-") if n.rsplit("-", 1)[0] in prefixes] == []
    print(f"make ui path end to end: {time.monotonic() - began:.0f} s")

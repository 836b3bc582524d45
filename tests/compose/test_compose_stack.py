"""docker-compose.yaml brought up for real: a benchmark DAG run through its Celery workers.

Builds the stand-in images (tests/compose/stack.py), starts the stack with two default-queue
workers, triggers meshbench_local_baseline with a short load through the REST API, and
checks the run's rows in the results database, the queues each worker serves and the
queue of a Kubernetes environment's tasks. `docker-compose down -v` runs whatever happens.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.compose.stack import (
    BENCHMARK_LOCK,
    MESHBENCH_IMAGE,
    ROOT,
    ComposeStack,
    build_images,
    docker_answers,
)

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(3600)]

LOCAL_DAG = "meshbench_local_baseline"
KUBERNETES_DAG = "meshbench_existing_baseline"
LOCAL_QUEUE = "meshbench_local"
DEFAULT_QUEUE = "default"
# One iteration of two measured runs of 3 s (after a warm-up run).
SHORT_LOAD = {"iterations": 1, "runs_per_iteration": 2, "duration": "3s"}
DEFAULT_WORKERS = 2
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"
RESULT_FILE = Path(os.environ.get("MESHBENCH_STATE") or ROOT / ".state") / "compose-check-last.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def queues_by_worker(stack: ComposeStack) -> dict[str, list[str]]:
    """Celery's own answer: which queues each running worker consumes."""
    out = stack.exec(
        "airflow-worker-local",
        "celery",
        "--app",
        CELERY_APP,
        "inspect",
        "active_queues",
        "--json",
        timeout=180,
    )
    answer = json.loads(out.strip().splitlines()[-1])
    return {worker: sorted(q["name"] for q in queues) for worker, queues in answer.items()}


def test_a_dag_run_through_the_celery_stack_lands_positive_rows() -> None:
    if not docker_answers():
        pytest.skip("no Docker engine answers `docker info`; the compose check needs one")
    timings: dict[str, float] = {}
    started = time.monotonic()
    build_images()
    timings["build_s"] = time.monotonic() - started
    if BENCHMARK_LOCK.exists() and not BENCHMARK_LOCK.is_file():
        pytest.fail(f"{BENCHMARK_LOCK} is not a file (a bind mount made it a directory?)")
    BENCHMARK_LOCK.touch(exist_ok=True)

    port = free_port()
    stack = ComposeStack(
        project=f"mbcomposecheck{os.getpid()}",
        api_port=port,
        env={**os.environ, "AIRFLOW_IMAGE_NAME": MESHBENCH_IMAGE, "AIRFLOW_API_PORT": str(port)},
    )
    try:
        phase = time.monotonic()
        stack.up("--scale", f"airflow-worker={DEFAULT_WORKERS}")
        states = stack.wait_healthy(timeout=900)
        timings["up_until_healthy_s"] = time.monotonic() - phase
        workers = [name for name in states if "_airflow-worker_" in name]
        assert len(workers) == DEFAULT_WORKERS, states

        # The local worker shares the host's benchmark lock (the same file, not a copy).
        inode = stack.exec("airflow-worker-local", "stat", "-c", "%i", str(BENCHMARK_LOCK))
        assert int(inode) == BENCHMARK_LOCK.stat().st_ino

        containers = stack.containers()
        hostnames = {name: item["Config"]["Hostname"] for name, item in containers.items()}
        local_host = hostnames[stack.container_of("airflow-worker-local")]
        served = queues_by_worker(stack)
        assert served[f"celery@{local_host}"] == [LOCAL_QUEUE], served
        for name in workers:
            assert served[f"celery@{hostnames[name]}"] == [DEFAULT_QUEUE], served
        assert len(served) == DEFAULT_WORKERS + 1, served

        stack.login()
        phase = time.monotonic()
        stack.wait_for_dag(LOCAL_DAG, timeout=600)
        stack.wait_for_dag(KUBERNETES_DAG, timeout=120)
        timings["dags_parsed_s"] = time.monotonic() - phase
        assert stack.request("GET", "/importErrors").json()["total_entries"] == 0

        # Routing: every local task to the local queue, every Kubernetes one to the default.
        local_tasks = stack.request("GET", f"/dags/{LOCAL_DAG}/tasks").json()["tasks"]
        assert {task["queue"] for task in local_tasks} == {LOCAL_QUEUE}
        kube_tasks = stack.request("GET", f"/dags/{KUBERNETES_DAG}/tasks").json()["tasks"]
        assert kube_tasks and {task["queue"] for task in kube_tasks} == {DEFAULT_QUEUE}

        stack.request("PATCH", f"/dags/{LOCAL_DAG}", json={"is_paused": False})
        run = stack.request(
            "POST", f"/dags/{LOCAL_DAG}/dagRuns", json={"logical_date": None, "conf": SHORT_LOAD}
        ).json()
        phase = time.monotonic()
        finished = stack.wait_for_run(LOCAL_DAG, run["dag_run_id"], timeout=1200)
        timings["dag_run_s"] = time.monotonic() - phase
        instances = stack.request(
            "GET",
            f"/dags/{LOCAL_DAG}/dagRuns/{run['dag_run_id']}/taskInstances",
            params={"limit": 100},
        ).json()["task_instances"]
        assert finished["state"] == "success", [(ti["task_id"], ti["state"]) for ti in instances]
        ran = [ti for ti in instances if ti["state"] == "success"]
        assert {ti["task_id"] for ti in ran} >= {
            "create_clusters",
            "iteration_01.measure",
            "delete_clusters",
            "load_results",
        }
        # Run by the local worker, off its queue.
        assert {ti["queue"] for ti in ran} == {LOCAL_QUEUE}
        assert {ti["hostname"] for ti in ran} == {local_host}

        rows = stack.psql(
            "meshbench",
            "SELECT m.phase, m.positive, m.actual_qps, m.request_count FROM measurement m "
            f"JOIN run r ON r.id = m.run_id WHERE r.dag_run_id = '{run['dag_run_id']}' "
            f"AND r.dag_id = '{LOCAL_DAG}' ORDER BY m.phase, m.run_index",
        )
        measured = [row for row in rows if row[0] == "measured"]
        assert len(measured) == SHORT_LOAD["runs_per_iteration"], rows
        for phase_name, positive, qps, requests_made in rows:
            assert positive == "t", rows
            assert float(qps) > 0 and int(requests_made) > 0, (phase_name, rows)
        timings["total_s"] = time.monotonic() - started
        RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULT_FILE.write_text(
            json.dumps(
                {
                    "timings": {k: round(v, 1) for k, v in timings.items()},
                    "dag_run_id": run["dag_run_id"],
                    "rows": rows,
                    "queues": served,
                },
                indent=2,
            )
        )
    except BaseException:
        print(stack.logs()[-20000:])
        raise
    finally:
        result = stack.down()
        assert result.returncode == 0, result.stdout + result.stderr

"""A run driven in this process goes through the DAG's tasks, rules and records."""

from __future__ import annotations

import subprocess
import time

import pytest
from airflow.sdk import TriggerRule
from sqlalchemy import text

from meshbench.dagfactory import build_benchmark_dag
from meshbench.pipeline import lease
from meshbench.pipeline.graph import task_graph
from meshbench.pipeline.inprocess import run_in_process
from meshbench.pipeline.steps import RunObserver
from tests.pipeline.replay_backend import ReplayBackend

pytestmark = pytest.mark.postgres

RUN = {"dag_id": "meshbench_local_envoy-mtls_cli", "run_id": "cli__1"}


def test_the_task_graph_is_the_dags(config) -> None:
    dag = build_benchmark_dag(config, "local", "envoy-mtls")
    specs = task_graph(config.load_profile_for("local").iterations)
    assert set(dag.task_dict) == {spec.task_id for spec in specs}
    walked: set[str] = set()
    for spec in specs:
        assert spec.waits_for <= walked, f"{spec.task_id} comes before what it waits for"
        walked.add(spec.task_id)
        task = dag.task_dict[spec.task_id]
        assert set(task.upstream_task_ids) == spec.waits_for, spec.task_id
        assert task.is_teardown == spec.teardown, spec.task_id
        assert (task.trigger_rule == TriggerRule.ALL_DONE) == spec.runs_after_failures


def test_a_run_in_process_runs_the_dags_order_and_loads_like_a_dag_run(
    config, clean_results
) -> None:
    backend = ReplayBackend(config)
    run = run_in_process(
        config, "local", "envoy-mtls", backend=backend, engine=clean_results, **RUN
    )
    assert run.state == "success" and run.failures == {} and run.teardown_problems == []
    iteration_1 = [
        "install_mesh:1",
        "wait_mesh_ready:1",
        "deploy_workloads:1",
        "wait_workloads_ready:1",
        "run_load:1:warmup:1",
        "run_load:1:paired-baseline:1",
        "run_load:1:measured:1",
        "run_load:1:paired-baseline:2",
        "run_load:1:measured:2",
        "uninstall_mesh:1",
    ]
    assert backend.calls[:2] == ["create_clusters", "prepare_pair"]
    assert backend.calls[2:12] == iteration_1
    assert backend.calls[-1] == "delete_clusters"
    assert lease.current() is None
    with clean_results.connect() as connection:
        row = connection.execute(text("SELECT state, load_profile, source_key FROM run")).one()
        stored = connection.execute(text("SELECT count(*) FROM measurement")).scalar()
    assert row.state == "success" and row.load_profile == "study"
    assert row.source_key.startswith("cli:meshbench_local_envoy-mtls_cli:cli__1:")
    assert stored == len(run.measurements) == 2 * (1 + 2 + 2)


def test_without_load_nothing_touches_the_database_and_min_positive_judges(
    config, monkeypatch
) -> None:
    def no_database():
        raise AssertionError("a run without --load asked for the results database")

    monkeypatch.setattr("meshbench.results.db.get_engine", no_database)
    backend = ReplayBackend(config, fail={"install_mesh:1": "the mesh did not install"})
    run = run_in_process(config, "local", "envoy-mtls", backend=backend, loads_results=False, **RUN)
    # Iteration 1 failed, iteration 2 measured: 2 positive runs, fewer than min_positive 3.
    assert run.positive_measured == 2 and run.state == "failed"
    assert "iteration_01.install_mesh" in run.failures
    assert "install_mesh:2" in backend.calls and "uninstall_mesh:1" in backend.calls
    negatives = [m for m in run.measured if m.iteration == 1]
    assert [m.failed_task for m in negatives] == ["iteration_01.install_mesh"] * 2
    assert run.loaded is None


def test_ctrl_c_stops_measuring_tears_down_and_loads_a_failed_run(config, clean_results) -> None:
    backend = ReplayBackend(config)

    def interrupt(iteration: int, phase: str, run_index: int) -> None:
        if (iteration, phase, run_index) == (1, "measured", 2):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_process(
            config,
            "local",
            "envoy-mtls",
            backend=backend,
            engine=clean_results,
            observer=RunObserver(before_load_run=interrupt),
            **RUN,
        )
    assert "install_mesh:2" not in backend.calls
    assert backend.calls[-2:] == ["uninstall_mesh:1", "delete_clusters"]
    assert lease.current() is None
    with clean_results.connect() as connection:
        state = connection.execute(text("SELECT state FROM run")).scalar()
        positive = connection.execute(
            text("SELECT count(*) FROM measurement WHERE phase = 'measured' AND positive")
        ).scalar()
    # What it measured before the interrupt is kept; the run is failed, stopped from outside.
    assert state == "failed" and positive == 1


def test_the_lease_of_a_run_in_one_process_is_free_once_that_process_is_gone() -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    fresh = {"owner": "cli", "prefix": "mb-x", "renewed_at": time.time()}
    assert lease.Holder(**fresh, pid=finished.pid, single_process=True).is_stale(900)
    # A DAG run's process changes between tasks: a gone process alone is not enough.
    assert not lease.Holder(**fresh, pid=finished.pid).is_stale(900)

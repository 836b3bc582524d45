from __future__ import annotations

import json
import time
from datetime import date

import pytest

from meshbench.backend import StepFailed
from meshbench.pipeline import lease
from meshbench.pipeline.steps import Pipeline, StepRescheduled, TaskRun
from tests.pipeline.replay_backend import ReplayBackend


def pipeline(config, run_id: str, task_id: str, backend: ReplayBackend | None = None) -> Pipeline:
    task = TaskRun(
        dag_id="meshbench_local_envoy-mtls",
        run_id=run_id,
        task_id=task_id,
        benchmark_date=date(2026, 1, 2),
    )
    return Pipeline(config, "local", "envoy-mtls", task, backend=backend or ReplayBackend(config))


def test_a_second_local_run_waits_until_the_first_releases_the_machine(config) -> None:
    pipeline(config, "run-a", "create_clusters").run("create_clusters")
    with pytest.raises(StepRescheduled, match="run-a"):
        pipeline(config, "run-b", "create_clusters").run("create_clusters")
    # The holder's own steps go on and renew the lease.
    pipeline(config, "run-a", "prepare_pair").run("prepare_pair")
    assert lease.current().owner.startswith("meshbench_local_envoy-mtls:run-a")
    pipeline(config, "run-a", "delete_clusters").run("delete_clusters")
    assert lease.current() is None
    pipeline(config, "run-b", "create_clusters").run("create_clusters")
    assert lease.current().owner.startswith("meshbench_local_envoy-mtls:run-b")


def test_a_retried_create_keeps_its_own_lease(config) -> None:
    pipeline(config, "run-a", "create_clusters").run("create_clusters")
    pipeline(config, "run-a", "create_clusters").run("create_clusters")
    assert lease.current().owner.startswith("meshbench_local_envoy-mtls:run-a")


def test_a_silent_holder_is_taken_over_and_its_leftovers_reaped(
    config,
    monkeypatch,
    tmp_path,
) -> None:
    backend = ReplayBackend(config)
    (tmp_path / "lease.json").write_text(
        json.dumps(
            {"owner": "dead:run:1", "prefix": "mb-deadbeef", "renewed_at": time.time() - 7200}
        )
    )
    pipeline(config, "run-b", "create_clusters", backend).run("create_clusters")
    assert backend.reclaimed == ["mb-deadbeef"]
    assert lease.current().owner.startswith("meshbench_local_envoy-mtls:run-b")


def test_a_holder_whose_process_is_gone_is_taken_over_after_the_gap(
    config, monkeypatch, tmp_path
) -> None:
    backend = ReplayBackend(config)
    gone = 2**22 + 12345  # above pid_max's default: no such process
    lease_file = tmp_path / "lease.json"
    lease_file.write_text(
        json.dumps(
            {
                "owner": "killed:run:1",
                "prefix": "mb-0badf00d",
                "renewed_at": time.time() - 30,
                "pid": gone,
            }
        )
    )
    with pytest.raises(StepRescheduled):  # within the gap between two tasks: still waits
        pipeline(config, "run-b", "create_clusters").run("create_clusters")
    lease_file.write_text(
        json.dumps(
            {
                "owner": "killed:run:1",
                "prefix": "mb-0badf00d",
                "renewed_at": time.time() - 300,
                "pid": gone,
            }
        )
    )
    pipeline(config, "run-b", "create_clusters", backend).run("create_clusters")
    assert backend.reclaimed == ["mb-0badf00d"]


def test_a_paused_run_that_lost_the_machine_fails_its_next_steps_and_still_tears_down(
    config, monkeypatch, tmp_path
) -> None:
    """A paused run goes silent; the next run takes the machine over and reaps its leftovers.
    Unpaused, the paused run must not measure beside the new holder: its steps fail at once,
    its teardowns still run and it does not take the lease back."""
    pipeline(config, "run-a", "create_clusters").run("create_clusters")
    held = json.loads((tmp_path / "lease.json").read_text())
    held["renewed_at"] = time.time() - 7200
    (tmp_path / "lease.json").write_text(json.dumps(held))
    pipeline(config, "run-b", "create_clusters").run("create_clusters")

    with pytest.raises(
        StepFailed, match="no longer holds the machine: meshbench_local_envoy-mtls:run-b"
    ):
        pipeline(config, "run-a", "prepare_pair").run("prepare_pair")
    pipeline(config, "run-a", "delete_clusters").run("delete_clusters")
    assert lease.current().owner.startswith("meshbench_local_envoy-mtls:run-b")


def test_the_local_backend_reclaims_orphans_and_the_silent_runs_leftovers(
    config, monkeypatch, tmp_path
) -> None:
    from meshbench.local.backend import LocalBackend

    calls = []
    monkeypatch.setattr(
        "meshbench.local.backend.reap_orphans", lambda root: calls.append(("orphans", root))
    )
    monkeypatch.setattr(
        "meshbench.local.backend.reap", lambda root, only: calls.append(("reap", root, only))
    )
    LocalBackend(config, "baseline", state_root=tmp_path).reclaim_machine("mb-deadbeef")
    assert calls == [("orphans", tmp_path), ("reap", tmp_path, ["mb-deadbeef"])]

"""Fault injection: a component killed in the middle of a measured run gives a negative
measurement naming it, and teardown still removes everything the run made."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from meshbench.backend import PHASE_MEASURED, StepFailed
from meshbench.loadgen.wrk import SOCKET_ERROR_CODE
from meshbench.local import counters, netns, nginx, processes
from meshbench.local.backend import LocalBackend
from meshbench.local.reaper import find_leftovers
from meshbench.local.runner import LocalRun, run_local
from tests.local.conftest import local_config, make_context, needs_netns, short_profile

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# The component is killed once nginx has answered this many of wrk's requests, so the kill
# falls inside the measured run whatever the machine's speed, with seconds of it left.
ANSWERS_BEFORE_KILL = 200
WAIT_SECONDS = 20.0
POLL_SECONDS = 0.02


@dataclass
class Fault:
    """What the fault injector did: every pid it killed, and when they were all gone."""

    killed: list[int] = field(default_factory=list)
    gone_at: datetime | None = None
    problem: str | None = None


def run_with_fault(
    mesh: str,
    component: str,
    state_root: Path,
    status_codes: str = "inferred",
    engine: Engine | None = None,
) -> tuple[LocalRun, Fault]:
    config = local_config(network_mode="netns", status_codes=status_codes)
    backend = LocalBackend(config, mesh, state_root=state_root)
    ctx = make_context(config, mesh, short_profile(duration=3.0))
    fault = Fault()
    injectors: list[threading.Thread] = []

    def hook(iteration: int, phase: str, run_index: int) -> None:
        if phase != PHASE_MEASURED:
            return
        state = backend.folder(ctx).read()
        assert state is not None
        record = state.processes[component]
        # nginx's own counter of answered requests, whatever path the load takes to it.
        server = counters.nginx_first_hop(state.topology)
        start = server.read()
        assert start is not None, "nginx's stub_status answers before the run"

        def answered_to_wrk(readings: int, latest: counters.Reading) -> int:
            # Each reading is one request too, and run_load takes one before wrk starts.
            own = (readings + 1) * server.own_answers_per_reading
            return latest.answers - start.answers - own

        def inject() -> None:
            deadline = time.monotonic() + WAIT_SECONDS
            readings = 0
            while True:
                reading = server.read()
                readings += 1
                if (
                    reading is not None
                    and answered_to_wrk(readings, reading) >= ANSWERS_BEFORE_KILL
                ):
                    break
                if time.monotonic() > deadline:
                    fault.problem = f"nginx answered no {ANSWERS_BEFORE_KILL} requests of wrk"
                    return
                time.sleep(POLL_SECONDS)
            # The whole component: its leader and every process of its session (nginx's
            # workers hold the listening socket and the connections).
            for stat in processes.session_members(record.pid):
                os.kill(stat.pid, signal.SIGKILL)
                fault.killed.append(stat.pid)
            while processes.session_members(record.pid):
                if time.monotonic() > deadline:
                    fault.problem = f"{component} outlived SIGKILL"
                    return
                time.sleep(POLL_SECONDS)
            fault.gone_at = datetime.now(UTC)

        injector = threading.Thread(target=inject, name=f"kill-{component}", daemon=True)
        injectors.append(injector)
        injector.start()

    run = run_local(backend, ctx, paired_baseline=False, during_run=hook, engine=engine)
    for injector in injectors:
        injector.join(WAIT_SECONDS)
    assert fault.problem is None, fault.problem
    assert fault.killed, f"the {component} process was found and killed"
    assert fault.gone_at is not None
    return run, fault


def assert_killed_mid_run(run: LocalRun, fault: Fault, leaders: int = 1) -> dict[str, Any]:
    """The fault fell inside wrk's run: answers before it, all of the component gone before
    wrk stopped. Returns wrk's result."""
    raw = run.measured[0].outcome.raw_result
    assert raw is not None
    started = datetime.fromisoformat(raw["StartTime"].replace("Z", "+00:00"))
    ended = started + timedelta(microseconds=raw["ActualDuration"] / 1000)
    assert fault.gone_at is not None and fault.gone_at < ended, (fault.gone_at, ended)
    assert raw["DurationHistogram"]["Count"] >= ANSWERS_BEFORE_KILL
    return raw


def assert_negative_and_clean(run: LocalRun, component_words: str) -> None:
    measured = run.measured
    assert len(measured) == 1
    outcome = measured[0].outcome
    assert outcome.failure is not None
    assert component_words in outcome.failure
    assert "exited during the run" in outcome.failure
    assert outcome.raw_result is not None  # what wrk measured is kept with the failure
    assert run.teardown_problems == []
    assert run.topology is not None
    assert find_leftovers(run.topology, run.started_processes) == []
    prefix = run.ctx.resource_prefix
    assert [name for name in netns.list_namespaces() if name.startswith(prefix)] == []


@needs_netns
def test_killing_nginx_mid_run(tmp_path: Path) -> None:
    run, fault = run_with_fault("baseline", "nginx", tmp_path)
    assert len(fault.killed) == 1 + nginx.WORKER_PROCESSES  # the master and its workers
    assert_negative_and_clean(run, "nginx (server workload)")
    raw = assert_killed_mid_run(run, fault)
    # wrk saw the server go away: its connection closed and new ones refused, counted as
    # socket errors (Fortio's -1) among the failed requests.
    assert raw["RetCodes"].get(SOCKET_ERROR_CODE, 0) > 0, raw["meshbench"]["errors"]
    assert raw["ErrorsDurationHistogram"]["Count"] > 0


@needs_netns
@pytest.mark.parametrize("status_codes", ["inferred", "counted"])
def test_killing_the_gateway_envoy_mid_run(tmp_path: Path, status_codes: str) -> None:
    run, fault = run_with_fault("envoy-mtls", "gateway", tmp_path, status_codes=status_codes)
    assert_negative_and_clean(run, "gateway Envoy")
    raw = assert_killed_mid_run(run, fault)
    # The client sidecar answered 503s once the hop was gone; wrk counted them as errors.
    assert raw["ErrorsDurationHistogram"]["Count"] > 0
    if status_codes == "counted":
        assert raw["RetCodes"].get("503", 0) > 0, raw["RetCodes"]
    else:
        assert raw["meshbench"]["responses_400_or_more_without_code"] > 0


@needs_netns
@pytest.mark.postgres
def test_fault_is_stored_as_negative_with_its_reason(tmp_path: Path, clean_results: Engine) -> None:
    run, _ = run_with_fault("baseline", "nginx", tmp_path, engine=clean_results)
    assert run.loaded is not None
    assert len(run.loaded["negatives"]) == 1 and run.loaded["positive_measured"] == 0
    with clean_results.connect() as connection:
        row = connection.execute(
            text("SELECT positive, reason, raw IS NOT NULL AS has_raw FROM measurement")
        ).one()
    assert not row.positive
    assert "nginx (server workload)" in row.reason and "exited during the run" in row.reason
    assert row.has_raw


@needs_netns
def test_readiness_names_the_component_that_is_not_up(tmp_path: Path) -> None:
    config = local_config(network_mode="netns", ready_timeout=2.0)
    backend = LocalBackend(config, "envoy-mtls", state_root=tmp_path)
    ctx = make_context(config, "envoy-mtls", short_profile())
    try:
        backend.create_clusters(ctx)
        backend.prepare_pair(ctx)
        backend.install_mesh(ctx, 1)
        backend.wait_mesh_ready(ctx, 1)
        backend.deploy_workloads(ctx, 1)
        backend.wait_workloads_ready(ctx, 1)
        state = backend.folder(ctx).read()
        processes.stop(state.processes["server-sidecar"])
        with pytest.raises(StepFailed, match=r"server sidecar Envoy .* is not running"):
            backend.wait_workloads_ready(ctx, 1)
        with pytest.raises(StepFailed, match=r"server sidecar Envoy .* is not running"):
            backend.wait_mesh_ready(ctx, 1)
        processes.stop(state.processes["nginx"])
        with pytest.raises(StepFailed, match=r"nginx \(server workload\) .* is not running"):
            backend.wait_workloads_ready(ctx, 1)
        # A measurement with a dead component is a negative outcome, not an exception.
        outcome = backend.run_load(ctx, 1, PHASE_MEASURED, 1)
        assert outcome.raw_result is None
        assert "nginx (server workload)" in outcome.failure
    finally:
        backend.uninstall_mesh(ctx, 1)
        backend.delete_clusters(ctx)
    assert [n for n in netns.list_namespaces() if n.startswith(ctx.resource_prefix)] == []

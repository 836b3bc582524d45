"""Fault injection: a component killed in the middle of a measured run gives a negative
measurement naming it, and teardown still removes everything the run made."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from meshbench.backend import PHASE_MEASURED, StepFailed
from meshbench.local import netns, processes
from meshbench.local.backend import LocalBackend
from meshbench.local.reaper import find_leftovers
from meshbench.local.runner import LocalRun, run_local
from meshbench.results.loader import load_run
from tests.local.conftest import local_config, make_context, needs_netns, short_profile

pytestmark = [pytest.mark.netns, pytest.mark.slow]

KILL_AFTER_SECONDS = 1.0


def run_with_fault(
    mesh: str, component: str, state_root: Path, status_codes: str = "inferred"
) -> LocalRun:
    config = local_config(network_mode="netns", status_codes=status_codes)
    backend = LocalBackend(config, mesh, state_root=state_root)
    ctx = make_context(config, mesh, short_profile(duration=3.0))
    killed: list[int] = []

    def hook(run: LocalRun, iteration: int, phase: str, run_index: int) -> None:
        if phase != PHASE_MEASURED:
            return
        state = backend.folder(ctx).read()
        assert state is not None
        record = state.processes[component]

        def kill() -> None:
            for pid in record.members():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        threading.Timer(KILL_AFTER_SECONDS, kill).start()

    run = run_local(backend, ctx, paired_baseline=False, during_run=hook)
    assert killed, f"the {component} process was found and killed"
    return run


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
    run = run_with_fault("baseline", "nginx", tmp_path)
    assert_negative_and_clean(run, "nginx (server workload)")
    # wrk saw the server go away: failed connections are in the result too.
    raw = run.measured[0].outcome.raw_result
    assert raw["ErrorsDurationHistogram"]["Count"] > 0


@needs_netns
@pytest.mark.parametrize("status_codes", ["inferred", "counted"])
def test_killing_the_gateway_envoy_mid_run(tmp_path: Path, status_codes: str) -> None:
    run = run_with_fault("envoy-mtls", "gateway", tmp_path, status_codes=status_codes)
    assert_negative_and_clean(run, "gateway Envoy")
    raw = run.measured[0].outcome.raw_result
    # The client sidecar answered 503s once the hop was gone; wrk counted them as errors.
    assert raw["ErrorsDurationHistogram"]["Count"] > 0
    if status_codes == "counted":
        assert raw["RetCodes"].get("503", 0) > 0, raw["RetCodes"]
    else:
        assert raw["meshbench"]["responses_400_or_more_without_code"] > 0


@needs_netns
@pytest.mark.postgres
def test_fault_is_stored_as_negative_with_its_reason(tmp_path: Path, clean_results: Engine) -> None:
    run = run_with_fault("baseline", "nginx", tmp_path)
    report = load_run(clean_results, run.run_record(source="pytest"), run.measurements)
    assert report.negative == 1 and report.positive == 0
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

"""The loopback fallback (two loopback addresses, what runs without root) and the reaper
that cleans up after a crashed run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshbench.backend import StepFailed
from meshbench.local import netns, processes
from meshbench.local.backend import LocalBackend
from meshbench.local.reaper import find_leftovers, reap
from meshbench.local.runner import run_local
from tests.local.conftest import local_config, make_context, needs_netns, short_profile

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mesh", ["baseline", "envoy-mtls"])
def test_loopback_mode_runs_and_records_the_mode(mesh: str, state_root: Path) -> None:
    config = local_config(network_mode="loopback")
    ctx = make_context(config, mesh, short_profile())
    run = run_local(LocalBackend(config, mesh, state_root=state_root), ctx)
    assert run.failures == {}
    assert run.topology is not None and run.topology.network_mode == "loopback"
    for measurement in run.measurements:
        outcome = measurement.outcome
        assert outcome.failure is None, outcome.failure
        assert outcome.context["network_mode"] == "loopback"
        assert outcome.raw_result["URL"].startswith("http://127.")
        assert outcome.raw_result["DurationHistogram"]["Count"] > 0
    assert run.teardown_problems == []
    assert find_leftovers(run.topology, run.started_processes) == []


def test_wireguard_refuses_loopback_mode(state_root: Path) -> None:
    config = local_config(network_mode="loopback")
    backend = LocalBackend(config, "wireguard", state_root=state_root)
    ctx = make_context(config, "wireguard", short_profile())
    with pytest.raises(StepFailed, match="needs network namespaces"):
        backend.create_clusters(ctx)


@needs_netns
@pytest.mark.netns
def test_reaper_removes_a_crashed_run_and_spares_unrecorded_processes(
    state_root: Path,
) -> None:
    config = local_config(network_mode="netns")
    backend = LocalBackend(config, "envoy-mtls", state_root=state_root)
    ctx = make_context(config, "envoy-mtls", short_profile())
    backend.create_clusters(ctx)
    backend.prepare_pair(ctx)
    backend.install_mesh(ctx, 1)
    backend.deploy_workloads(ctx, 1)
    state = backend.folder(ctx).read()
    assert state is not None
    started = list(state.history)
    assert len(started) == 4
    # Someone else's process inside the run's namespace: not recorded, so not ours to kill.
    client_ns = state.topology.namespace("client")
    stranger = subprocess.Popen(["ip", "netns", "exec", client_ns, "sleep", "60"])
    try:
        # The task process "crashes" here: no uninstall, no delete_clusters.
        report = reap(root=state_root, only=[ctx.resource_prefix], min_idle_seconds=0)
        assert sorted(item.split()[0] for item in report.stopped) == sorted(
            record.name for record in started
        )
        assert sorted(report.namespaces) == sorted(state.topology.namespaces)
        assert report.state_folders == [str(backend.folder(ctx).path)]
        assert any(str(stranger.pid) in item for item in report.unrecorded_processes)
        assert stranger.poll() is None  # still alive: the reaper left it alone
        assert find_leftovers(state.topology, started) == []
        assert not backend.folder(ctx).exists()
    finally:
        stranger.kill()
        stranger.wait()
    # A second reap finds nothing of this run, and teardown after the reap is a no-op.
    again = reap(root=state_root, only=[ctx.resource_prefix], min_idle_seconds=0)
    assert not again.removed_anything
    backend.delete_clusters(ctx)
    assert not any(name.startswith(ctx.resource_prefix) for name in netns.list_namespaces())


@needs_netns
@pytest.mark.netns
def test_reaper_spares_a_run_that_is_active(state_root: Path) -> None:
    config = local_config(network_mode="netns")
    backend = LocalBackend(config, "baseline", state_root=state_root)
    ctx = make_context(config, "baseline", short_profile())
    try:
        backend.create_clusters(ctx)
        backend.deploy_workloads(ctx, 1)
        nginx = backend.folder(ctx).read().processes["nginx"]
        # A live DAG run between two tasks looks like this: a fresh state, nothing running
        # in Python. The default reap must leave it alone.
        report = reap(root=state_root, only=[ctx.resource_prefix])
        assert not report.removed_anything
        assert any(ctx.resource_prefix in item for item in report.active)
        assert nginx.is_running()
        assert backend.folder(ctx).exists()
        assert all(netns.exists(name) for name in backend.folder(ctx).read().topology.namespaces)
    finally:
        backend.uninstall_mesh(ctx, 1)
        backend.delete_clusters(ctx)


def test_teardown_tolerates_what_is_already_gone(state_root: Path) -> None:
    config = local_config(network_mode="loopback")
    backend = LocalBackend(config, "baseline", state_root=state_root)
    ctx = make_context(config, "baseline", short_profile())
    backend.uninstall_mesh(ctx, 1)  # nothing was ever made
    backend.delete_clusters(ctx)
    backend.create_clusters(ctx)
    backend.deploy_workloads(ctx, 1)
    record = backend.folder(ctx).read().processes["nginx"]
    processes.stop(record)  # gone before teardown runs
    backend.uninstall_mesh(ctx, 1)
    backend.delete_clusters(ctx)
    backend.delete_clusters(ctx)
    assert not backend.folder(ctx).exists()
    # load_results asks what ran after teardown: the summary answers.
    info = backend.run_info(ctx)
    assert info["network_mode"] == "loopback"
    assert "nginx" in info["versions"]

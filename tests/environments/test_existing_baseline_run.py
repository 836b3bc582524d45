"""existing × baseline, task by task, against fake clusters (see conftest.py)."""

from __future__ import annotations

import json

import pytest

from meshbench.backend import PHASE_MEASURED, PHASE_WARMUP, StepFailed
from meshbench.kube.metrics import components_url
from meshbench.local.nginx import KEEPALIVE_REQUESTS
from meshbench.testing.fake_kube import FakeKubeApi

from .conftest import TOKEN, World

SAMPLE_KEYS = {
    "cluster",
    "namespace",
    "pod",
    "container",
    "sampled_at",
    "cpu_millicores",
    "memory_bytes",
    "cpu_limit_millicores",
    "memory_limit_bytes",
}


def prepare_iteration(world: World, iteration: int = 1) -> None:
    backend, ctx = world.backend, world.ctx
    backend.install_mesh(ctx, iteration)
    backend.wait_mesh_ready(ctx, iteration)
    backend.deploy_workloads(ctx, iteration)
    backend.wait_workloads_ready(ctx, iteration)


def test_create_clusters_adopts_both_and_returns_no_secret(world: World):
    result = world.backend.create_clusters(world.ctx)
    assert result["clusters"]["client"]["server_version"] == "v1.28.3"
    assert result["clusters"]["client"]["context"] == "client-ctx"
    assert result["clusters"]["server"]["conn_id"] == "meshbench_server_cluster"
    assert TOKEN not in json.dumps(result)
    # Nothing was created: only the version was read.
    assert world.apis["client"].objects.keys() == FakeKubeApi("x").objects.keys()
    assert world.apis["server"].calls == ["version"]


def test_a_version_other_than_configured_is_recorded(world: World):
    world.apis["server"].version = "v1.31.2"
    result = world.backend.create_clusters(world.ctx)
    assert "cluster runs v1.31.2" in result["clusters"]["server"]["version_note"]


@pytest.mark.parametrize(
    "world", [{"server": {"metrics_server": False, "metrics_server_after": 1}}], indirect=True
)
def test_prepare_pair_installs_a_missing_metrics_server_at_the_pinned_version(world: World):
    world.apis["server"].install_metrics_server_later()
    result = world.backend.prepare_pair(world.ctx)
    assert result["metrics_server_client"] == "present"
    assert result["metrics_server_server"] == "installed v0.7.2"
    calls = world.kubectl_calls()
    assert [c["argv"] for c in calls] == [
        ["apply", "--server-side", "-f", components_url("v0.7.2")]
    ]
    # The CLI got its own 0600 kubeconfig for the server context; it is gone afterwards.
    assert calls[0]["kubeconfig_mode"] == "0o600"
    from pathlib import Path

    assert not Path(calls[0]["kubeconfig"]).exists()


@pytest.mark.parametrize("world", [{"server": {"metrics_server": False}}], indirect=True)
def test_prepare_pair_fails_when_install_is_forbidden(world: World):
    from meshbench.config import MetricsServerSettings

    world.backend.metrics_server = MetricsServerSettings(install="never")
    with pytest.raises(StepFailed, match="has no metrics API"):
        world.backend.prepare_pair(world.ctx)
    assert world.kubectl_calls() == []


def test_a_whole_iteration_measures_and_cleans_up(world: World, study_results):
    backend, ctx = world.backend, world.ctx
    namespace = ctx.resource_prefix
    backend.create_clusters(ctx)
    backend.prepare_pair(ctx)
    deployed = backend.deploy_workloads(ctx, 1)
    assert deployed["namespace"] == namespace
    # Applying again (a retried task) is not an error and changes nothing.
    backend.deploy_workloads(ctx, 1)
    applied = world.apis["server"].applied
    assert {(manager, force) for manager, force, _ in applied} == {("meshbench", True)}
    server_kinds = {key[1] for key in world.apis["server"].objects if key[2] == namespace}
    assert {"ConfigMap", "Deployment", "Service"} <= server_kinds
    client_kinds = {key[1] for key in world.apis["client"].objects if key[2] == namespace}
    assert "Deployment" in client_kinds and "Service" not in client_kinds

    ready = backend.wait_workloads_ready(ctx, 1)
    assert ready["server_address"] == "198.18.0.80"
    assert ready["target_url"] == "http://198.18.0.80:80/"
    probes = [body for _, path, body in world.fortio.requests if body and "n" in body]
    assert probes and probes[0]["url"] == "http://198.18.0.80:80/"

    warmup = backend.run_load(ctx, 1, PHASE_WARMUP, 1)
    assert warmup.failure is None, warmup.failure
    assert warmup.resource_samples == []

    measured = backend.run_load(ctx, 1, PHASE_MEASURED, 1)
    assert measured.failure is None, measured.failure
    original = study_results[measured.context["fortio_run_id"] % len(study_results) - 1]
    assert measured.raw_result["DurationHistogram"] == original["DurationHistogram"]
    assert measured.raw_result["Labels"] == measured.context["fortio_request"]["labels"]
    assert "phase=measured" in measured.raw_result["Labels"]
    assert measured.context["target_url"] == "http://198.18.0.80:80/"
    assert measured.context["like_for_like"]["protocol"] == "http"
    assert measured.context["workloads"]["nginx_keepalive_requests"] == KEEPALIVE_REQUESTS
    samples = measured.resource_samples
    assert samples and all(set(sample) == SAMPLE_KEYS for sample in samples)
    assert {(s["cluster"], s["container"]) for s in samples} == {
        ("client", "fortio"),
        ("server", "nginx"),
    }
    nginx = next(s for s in samples if s["container"] == "nginx")
    assert nginx["cpu_millicores"] == 150.0 and nginx["cpu_limit_millicores"] == 2000.0
    assert nginx["memory_limit_bytes"] == 512 * 1024**2
    assert max(measured.context["cpu_limit_peaks"].values()) == 0.075
    # The run's cost from the fake kubelets' counters: fortio and nginx at 150m each.
    cost = measured.context["resources"]
    assert cost["source"] == "node" and "problems" not in cost, cost.get("problems")
    assert {(c["cluster"], c["name"], c["role"]) for c in cost["components"]} == {
        ("client", "fortio/fortio", "load generator"),
        ("server", "nginx/nginx", "server app"),
    }
    duration = cost["duration_seconds"]
    for component in cost["components"]:
        assert component["cpu_seconds"] == pytest.approx(0.15 * duration, rel=0.2, abs=0.02)
    assert cost["requests"] == original["DurationHistogram"]["Count"]
    assert {n["node"] for n in cost["machine"]["nodes"]} == {"client-node-1", "server-node-1"}
    assert warmup.context.get("resources") is None
    assert TOKEN not in json.dumps(measured.context)

    backend.uninstall_mesh(ctx, 1)
    for api in world.apis.values():
        assert not [key for key in api.objects if key[2] == namespace or key[3] == namespace]
    backend.delete_clusters(ctx)  # already gone: tolerated

    # The next iteration can reuse the namespace name.
    prepare_iteration(world, 2)
    assert backend.run_load(ctx, 2, PHASE_MEASURED, 1).failure is None


@pytest.mark.parametrize(
    "world",
    [{"server": {"cpu_usage": lambda pod, container: "1900m" if container == "nginx" else "5m"}}],
    indirect=True,
)
def test_a_container_at_ninety_percent_of_its_cpu_limit_makes_the_run_negative(world: World):
    prepare_iteration(world)
    outcome = world.backend.run_load(world.ctx, 1, PHASE_MEASURED, 1)
    assert outcome.raw_result is not None, "the result is kept even when negative"
    assert outcome.failure.startswith("container nginx of pod ")
    assert "used 1900m of its 2000m CPU limit (95% >= 90%)" in outcome.failure
    assert outcome.resource_samples


@pytest.mark.parametrize("world", [{"run_seconds": 3.0}], indirect=True)
def test_a_lost_port_forward_gives_a_negative_run_naming_it(world: World, monkeypatch):
    prepare_iteration(world)
    monkeypatch.setenv("MESHBENCH_FAKE_FORWARD_LIFETIME", "0.3")
    outcome = world.backend.run_load(world.ctx, 1, PHASE_MEASURED, 1)
    assert outcome.raw_result is None
    assert outcome.failure.startswith("port-forward to ")
    assert "exited with code 1" in outcome.failure and "lost connection to pod" in outcome.failure
    assert outcome.context["fortio_run_id"] is not None, "the run had started"


def test_missing_workloads_give_a_negative_run_not_an_exception(world: World):
    outcome = world.backend.run_load(world.ctx, 1, PHASE_MEASURED, 1)
    assert outcome.raw_result is None
    assert "does not exist" in outcome.failure


@pytest.mark.parametrize("world", [{"server": {"image_pull_fails": True}}], indirect=True)
def test_a_rollout_that_never_finishes_names_the_waiting_container(world: World):
    world.backend.settings = world.backend.settings.model_copy(
        update={"timeouts": world.backend.settings.timeouts.model_copy(update={"rollout": 0.2})}
    )
    world.backend.deploy_workloads(world.ctx, 1)
    with pytest.raises(StepFailed) as info:
        world.backend.wait_workloads_ready(world.ctx, 1)
    message = str(info.value)
    assert "still not ready after 0.2s" in message
    assert "container nginx ImagePullBackOff" in message
    assert message.startswith(f"deployment {world.ctx.resource_prefix}/nginx rolled out [server]")

"""metrics-server: quantities, per-container samples, de-duplication, the CPU-limit rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshbench.config import MetricsServerSettings
from meshbench.kube.metrics import (
    INSECURE_TLS_FLAG,
    ResourceSampler,
    SampleScope,
    byte_count,
    cpu_limit_failure,
    install_commands,
    millicores,
    samples_within,
)
from meshbench.testing.fake_kube import FakeKubeApi


def test_quantities():
    assert millicores("250m") == 250.0
    assert millicores("123456789n") == pytest.approx(123.456789)
    assert millicores("2") == 2000.0
    assert byte_count("12345Ki") == 12345 * 1024
    assert byte_count("512Mi") == 512 * 1024**2


def running_pod(api: FakeKubeApi, limits: dict | None) -> None:
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}})
    container = {"name": "app", "image": "nginx:1.23.3"}
    if limits is not None:
        container["resources"] = {"limits": limits}
    sidecar = {"name": "istio-proxy", "image": "proxy", "resources": {"limits": {"cpu": "500m"}}}
    api.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "ns"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "app"}},
                "template": {
                    "metadata": {"labels": {"app": "app"}},
                    "spec": {"containers": [container, sidecar]},
                },
            },
        }
    )
    api.get("apps/v1", "Deployment", "app", "ns")
    api.get("apps/v1", "Deployment", "app", "ns")


def test_sampler_reads_every_container_with_its_live_limits():
    api = FakeKubeApi(
        rollout_after=0, cpu_usage=lambda pod, c: "460m" if c == "istio-proxy" else "80m"
    )
    running_pod(api, {"cpu": "2", "memory": "512Mi"})
    sampler = ResourceSampler({"server": api}, [SampleScope("server", "ns", "app=app")], 0.02)
    sampler.start()
    samples = sampler.stop()
    assert sampler.polls >= 2 and not sampler.errors
    containers = {s["container"]: s for s in samples}
    assert containers["app"]["cpu_limit_millicores"] == 2000.0
    assert containers["app"]["memory_limit_bytes"] == 512 * 1024**2
    assert containers["istio-proxy"]["memory_limit_bytes"] is None
    assert containers["app"]["memory_bytes"] == 24 * 1024**2
    reason, peaks = cpu_limit_failure(samples, 0.9)
    assert reason.startswith("container istio-proxy of pod ns/app-")
    assert "used 460m of its 500m CPU limit (92% >= 90%)" in reason
    assert peaks[f"server/ns/{containers['app']['pod']}/app"] == 0.04


def test_polls_with_the_same_metrics_timestamp_are_one_sample():
    api = FakeKubeApi(rollout_after=0)
    running_pod(api, None)
    stamp = "2026-11-26T07:00:15Z"
    original = api._pod_metrics

    def fixed(namespace):
        items = original(namespace)
        for item in items:
            item["timestamp"] = stamp
        return items

    api._pod_metrics = fixed
    sampler = ResourceSampler({"client": api}, [SampleScope("client", "ns")], 0.01)
    for _ in range(5):
        sampler.poll()
    assert len(sampler.stop()) == 2  # two containers, one timestamp


def test_sampling_errors_are_counted_not_raised():
    api = FakeKubeApi(metrics_server=False)
    sampler = ResourceSampler({"client": api}, [SampleScope("client", "ns")], 0.01)
    sampler.start()
    assert sampler.stop() == []
    assert sampler.errors and "client: ns" in sampler.errors[0]


def test_only_samples_after_the_start_count():
    start = datetime(2026, 11, 26, 7, 0, 0, tzinfo=UTC)
    before = {"sampled_at": (start - timedelta(seconds=5)).isoformat()}
    after = {"sampled_at": (start + timedelta(seconds=10)).isoformat().replace("+00:00", "Z")}
    assert samples_within([before, after], start) == [after]


def test_unlimited_containers_are_not_judged():
    sample = {
        "cluster": "c",
        "namespace": "n",
        "pod": "p",
        "container": "x",
        "sampled_at": "t",
        "cpu_millicores": 5000.0,
        "cpu_limit_millicores": None,
    }
    assert cpu_limit_failure([sample], 0.9) == (None, {})


def test_install_commands_pin_the_version_and_add_insecure_tls_when_asked():
    plain = install_commands(MetricsServerSettings(version="v0.7.2"))
    assert plain == [
        [
            "apply",
            "--server-side",
            "-f",
            "https://github.com/kubernetes-sigs/metrics-server/releases/download/"
            "v0.7.2/components.yaml",
        ]
    ]
    kubeadm = install_commands(MetricsServerSettings(kubelet_insecure_tls=True))
    assert kubeadm[1][:2] == ["patch", "deployment"] and INSECURE_TLS_FLAG in kubeadm[1][-1]


def test_the_release_follows_the_clusters_kubernetes_version():
    """metrics-server's README compatibility matrix: 0.7.x 1.27+, 0.8.x 1.31+, 0.9.x 1.34+."""
    settings = MetricsServerSettings()
    assert settings.release_for("v1.28.3") == "v0.7.2"
    assert settings.release_for("1.30") == "v0.7.2"
    assert settings.release_for("1.31") == "v0.8.1"
    assert settings.release_for("v1.33.1-eks-1234") == "v0.8.1"
    assert settings.release_for("1.35") == "v0.9.0"
    with pytest.raises(ValueError, match=r"no release for Kubernetes 1\.26"):
        settings.release_for("1.26")
    assert MetricsServerSettings(version="v0.7.1").release_for("1.35") == "v0.7.1"  # pinned
    assert settings.for_kubernetes("1.35").version == "v0.9.0"
    assert settings.for_kubernetes(None).version is None  # chosen when the cluster answers
    with pytest.raises(ValueError, match="releases"):
        MetricsServerSettings(releases={"1.31": "0.8.1"})


def test_an_unknown_version_is_chosen_from_the_cluster_at_install(tmp_path, monkeypatch):
    import json

    from meshbench.kube.cluster import KubeCluster
    from meshbench.kube.metrics import components_url, ensure_metrics_server
    from meshbench.kube.runner import CommandRunner
    from meshbench.testing import fake_kubectl

    log = tmp_path / "kubectl.jsonl"
    monkeypatch.setenv("MESHBENCH_FAKE_KUBECTL_LOG", str(log))
    api = FakeKubeApi(version="v1.32.4", metrics_server=False)
    api.install_metrics_server_later()
    runner = CommandRunner(executables={"kubectl": fake_kubectl.install(tmp_path)})
    cluster = KubeCluster("server", api, runner, str(tmp_path / "kubeconfig"), poll_interval=0.01)
    settings = MetricsServerSettings().for_kubernetes(None)
    assert "by the cluster's Kubernetes version" in install_commands(settings)[0][-1]
    outcome = ensure_metrics_server(cluster, settings, timeout=5, command_timeout=30)
    assert outcome == "installed v0.8.1"
    (call,) = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    assert call == ["apply", "--server-side", "-f", components_url("v0.8.1")]

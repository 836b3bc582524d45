"""Waits poll until ready or name what was still not ready when time ran out."""

from __future__ import annotations

import pytest

from meshbench.kube.waits import (
    Readiness,
    WaitTimeout,
    condition_state,
    deployment_state,
    gone_state,
    load_balancer_state,
    pods_state,
    wait_for,
)
from meshbench.testing.fake_kube import FakeKubeApi


def namespace(api: FakeKubeApi, name: str = "ns") -> None:
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def deployment(name: str = "web", image: str = "nginx:1.23.3") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        },
    }


def test_wait_for_returns_the_value_once_ready():
    states = iter([Readiness(False, ("a",)), Readiness(False, ("b",)), Readiness(True, (), 42)])
    assert wait_for(lambda: next(states), what="thing", timeout=5, interval=0.01) == 42


def test_wait_for_reports_the_last_pending_reasons():
    with pytest.raises(WaitTimeout) as info:
        wait_for(
            lambda: Readiness(False, ("pod x: ImagePullBackOff",)),
            what="w",
            timeout=0.1,
            interval=0.02,
        )
    assert str(info.value) == "w: still not ready after 0.1s: pod x: ImagePullBackOff"


def test_errors_while_checking_count_as_not_ready_yet():
    calls = {"n": 0}

    def flaky() -> Readiness:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionResetError("reset by peer")
        return Readiness(True, (), "ok")

    assert wait_for(flaky, what="flaky", timeout=5, interval=0.01) == "ok"

    def always_failing() -> Readiness:
        raise ConnectionResetError("reset by peer")

    with pytest.raises(WaitTimeout, match="ConnectionResetError: reset by peer"):
        wait_for(always_failing, what="x", timeout=0.05, interval=0.01)


def test_a_rollout_becomes_ready_and_a_stuck_one_names_its_container():
    api = FakeKubeApi(rollout_after=1)
    namespace(api)
    api.apply(deployment())
    first = deployment_state(api, "ns", "web")
    assert not first.ready
    assert wait_for(
        lambda: deployment_state(api, "ns", "web"), what="web", timeout=2, interval=0.01
    ) == {"replicas": 1, "available": 1}

    stuck = FakeKubeApi(image_pull_fails=True)
    namespace(stuck)
    stuck.apply(deployment(image="nginx:does-not-exist"))
    state = deployment_state(stuck, "ns", "web")
    assert "deployment ns/web: 1/1 updated, 0/1 available" in state.pending
    assert any("container web ImagePullBackOff (not found)" in p for p in state.pending)
    assert deployment_state(stuck, "ns", "missing").pending == (
        "deployment ns/missing does not exist",
    )


def test_pods_state_counts_and_explains():
    api = FakeKubeApi(rollout_after=5)
    namespace(api)
    assert pods_state(api, "ns", "app=web").pending == ("0 of 1 pods matching 'app=web' exist",)
    api.apply(deployment())
    api.get("apps/v1", "Deployment", "web", "ns")
    pending = pods_state(api, "ns", "app=web").pending
    assert any("ContainerCreating" in line for line in pending)


def test_load_balancer_address_ip_or_hostname():
    for kwargs, expected in (
        ({"lb_address": "198.18.0.9"}, "198.18.0.9"),
        ({"lb_hostname": "a1.elb.example"}, "a1.elb.example"),
    ):
        api = FakeKubeApi(lb_after=1, **kwargs)
        namespace(api)
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "ns"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            }
        )
        first = load_balancer_state(api, "ns", "web")
        assert first.pending == ("service ns/web: no LoadBalancer address assigned yet",)
        assert load_balancer_state(api, "ns", "web").value == expected


def test_conditions_and_deletion():
    api = FakeKubeApi(terminating_reads=1)
    assert condition_state(
        api, "apiregistration.k8s.io/v1", "APIService", "v1beta1.metrics.k8s.io", "Available"
    ).ready
    missing = condition_state(
        api, "apiregistration.k8s.io/v1", "APIService", "v1.nope", "Available"
    )
    assert missing.pending == ("APIService v1.nope does not exist",)
    namespace(api)
    api.delete("v1", "Namespace", "ns")
    assert gone_state(api, "v1", "Namespace", "ns").pending == (
        "Namespace ns still exists (phase Terminating)",
    )
    assert gone_state(api, "v1", "Namespace", "ns").ready

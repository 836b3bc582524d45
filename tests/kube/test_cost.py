"""A Kubernetes run's cost from the kubelet's counters: known rates give known seconds.

Two fake clusters (one node each) run the path's pods at CPU rates the test sets, idle
during the meter's idle window and loaded during the run; the node's own overhead rises
under load as the kernel's softirq work would. The fake kubelet counts core-nanoseconds at
those rates, so every figure of the cost record is known in advance.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meshbench.config import ResourceCostSettings
from meshbench.cost import (
    CLIENT_PROXY,
    CONTROL_PLANE,
    GATEWAY,
    LOAD_GENERATOR,
    SERVER_APP,
    SERVER_PROXY,
)
from meshbench.kube.cost import CostMeter, container_role
from meshbench.kube.metrics import SampleScope
from meshbench.results.loader import cost_rows
from meshbench.testing.fake_kube import FakeKubeApi

NAMESPACE = "mb-cost"
START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def seconds(self) -> float:
        return self.now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _deployment(name: str, containers: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1},
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": c, "image": "x"} for c in containers]},
            },
        },
    }


class Load:
    """CPU rates (millicores) of each container, idle or loaded, and of the node itself."""

    def __init__(self, idle: dict[str, int], loaded: dict[str, int]) -> None:
        self.idle, self.loaded = idle, loaded
        self.running = False

    def container(self, pod: str, container: str) -> str:
        rates = self.loaded if self.running else self.idle
        app = pod.rsplit("-", 1)[0]
        return f"{rates[f'{app}/{container}']}m"

    def node(self) -> str:
        return f"{(self.loaded if self.running else self.idle)['node']}m"


def _cluster(name: str, clock: Clock, load: Load, **options: Any) -> FakeKubeApi:
    api = FakeKubeApi(
        name,
        rollout_after=0,
        cpu_usage=load.container,
        node_overhead=load.node,
        clock=clock.seconds,
        **options,
    )
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    return api


CLIENT_IDLE = {"fortio/fortio": 1, "fortio/istio-proxy": 5, "node": 100}
# Under load the node's own part rises by 150m: the kernel's work for the traffic.
CLIENT_LOADED = {"fortio/fortio": 400, "fortio/istio-proxy": 300, "node": 250}
SERVER_IDLE = {"nginx/nginx": 1, "nginx/istio-proxy": 5, "istiod/discovery": 4, "node": 100}
SERVER_LOADED = {"nginx/nginx": 200, "nginx/istio-proxy": 250, "istiod/discovery": 4, "node": 250}
SCOPES = (
    SampleScope("client", NAMESPACE),
    SampleScope("server", NAMESPACE),
    SampleScope("server", NAMESPACE, "app=istiod", CONTROL_PLANE),
)


@pytest.fixture
def world() -> tuple[Clock, Load, Load, dict[str, FakeKubeApi]]:
    clock = Clock()
    client_load = Load(CLIENT_IDLE, CLIENT_LOADED)
    server_load = Load(SERVER_IDLE, SERVER_LOADED)
    apis = {
        "client": _cluster("client", clock, client_load),
        "server": _cluster("server", clock, server_load),
    }
    apis["client"].apply(_deployment("fortio", ["fortio", "istio-proxy"]))
    apis["server"].apply(_deployment("nginx", ["nginx", "istio-proxy"]))
    apis["server"].apply(_deployment("istiod", ["discovery"]))
    for api in apis.values():
        api.list("v1", "Pod", NAMESPACE)  # the controllers make the pods Running
        api.node_summary(api.node_name)  # the kubelet starts counting
    return clock, client_load, server_load, apis


def _measure(
    world: tuple[Clock, Load, Load, dict[str, FakeKubeApi]],
    *,
    run_seconds: float = 60.0,
    after_run: float = 10.0,
    requests: int = 60_000,
    samples: list[dict[str, Any]] | None = None,
    settings: ResourceCostSettings | None = None,
) -> dict[str, Any]:
    clock, client_load, server_load, apis = world
    meter = CostMeter(
        apis,
        SCOPES,
        settings or ResourceCostSettings(idle_seconds=10),
        clock=clock.datetime,
        sleep=clock.sleep,
    )
    meter.begin()
    started = clock.datetime()
    client_load.running = server_load.running = True
    clock.sleep(run_seconds)
    for api in apis.values():  # a kubelet refresh right at the run's end
        api.advance_counters()
    client_load.running = server_load.running = False
    ended = clock.datetime()
    # The kubelet's next refresh comes some seconds after the run ended.
    clock.sleep(after_run)
    return meter.finish(ended, run_seconds, requests, samples or [], started)


def _by_name(record: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["cluster"], c["name"]): c for c in record["components"]}


def test_known_rates_give_known_costs_per_container_node_and_1000_requests(world) -> None:
    record = _measure(world)
    components = _by_name(record)
    # A container's cost is what it used over the run: its rate times 60 s; the 10 s the
    # window ran on after the run are taken off at its idle rate.
    assert components[("client", "fortio/fortio")]["cpu_seconds"] == pytest.approx(24.0)
    assert components[("client", "fortio/istio-proxy")]["cpu_seconds"] == pytest.approx(18.0)
    assert components[("server", "nginx/nginx")]["cpu_seconds"] == pytest.approx(12.0)
    assert components[("server", "nginx/istio-proxy")]["cpu_seconds"] == pytest.approx(15.0)
    assert components[("server", "istiod/discovery")]["cpu_seconds"] == pytest.approx(0.24)
    roles = {name: c["role"] for name, c in components.items()}
    assert roles == {
        ("client", "fortio/fortio"): LOAD_GENERATOR,
        ("client", "fortio/istio-proxy"): CLIENT_PROXY,
        ("server", "nginx/nginx"): SERVER_APP,
        ("server", "nginx/istio-proxy"): SERVER_PROXY,
        ("server", "istiod/discovery"): CONTROL_PLANE,
    }
    assert {c["source"] for c in record["components"]} == {"node"}
    assert all(c["cpu_user_seconds"] is None for c in record["components"])
    assert all(c["peak_memory_bytes"] == 24 * 2**20 for c in record["components"])
    # Each node ran its background (100m at idle less the path's own idle use) besides the
    # path; the rest of its busy time is the path's, the kernel's 150m under load included.
    nodes = {n["cluster"]: n for n in record["machine"]["nodes"]}
    assert nodes["client"]["busy_seconds"] == pytest.approx(57.0)
    assert nodes["client"]["idle_background_seconds"] == pytest.approx(6.0)
    assert nodes["server"]["busy_seconds"] == pytest.approx(42.24)
    assert nodes["server"]["idle_background_seconds"] == pytest.approx(6.0)
    assert record["machine"]["busy_seconds"] == pytest.approx(87.24)
    assert record["attributed_cpu_seconds"] == pytest.approx(69.24)
    assert record["unattributed_cpu_seconds"] == pytest.approx(18.0)
    # Per 1000 requests: the mesh's roles (33.24 s) and the whole path (87.24 s).
    assert record["mesh_cpu_seconds_per_1000_requests"] == pytest.approx(33.24 / 60)
    assert record["path_cpu_seconds_per_1000_requests"] == pytest.approx(87.24 / 60)
    assert record["attributed_share"] == pytest.approx(69.24 / 87.24, abs=1e-4)
    assert "problems" not in record


def test_the_cost_record_loads_as_component_rows(world) -> None:
    totals, rows = cost_rows(_measure(world))
    assert totals["busy_cpu_s"] == pytest.approx(87.24)
    assert totals["user_cpu_s"] is None
    unattributed = [row for row in rows if row["role"] == "unattributed"]
    assert [row["cpu_s"] for row in unattributed] == [pytest.approx(18.0)]
    proxies = {(row["cluster"], row["role"]): row for row in rows if row["role"] != "unattributed"}
    assert proxies[("client", CLIENT_PROXY)]["cpu_ms_per_1000_requests"] == pytest.approx(300.0)


def test_without_the_summary_api_costs_come_from_metrics_server_samples() -> None:
    clock = Clock()
    load = Load({"fortio/fortio": 1, "node": 1}, {"fortio/fortio": 1, "node": 1})
    api = _cluster("client", clock, load, summary_api=False)
    api.apply(_deployment("fortio", ["fortio"]))
    pod = api.list("v1", "Pod", NAMESPACE)[0]["metadata"]["name"]
    meter = CostMeter(
        {"client": api},
        (SampleScope("client", NAMESPACE),),
        ResourceCostSettings(),
        clock=clock.datetime,
        sleep=clock.sleep,
    )
    meter.begin()
    started = clock.datetime()

    def sample(seconds: float, millicores: float, memory: int) -> dict[str, Any]:
        return {
            "cluster": "client",
            "namespace": NAMESPACE,
            "pod": pod,
            "container": "fortio",
            "sampled_at": (started + timedelta(seconds=seconds)).isoformat(),
            "cpu_millicores": millicores,
            "memory_bytes": memory,
        }

    samples = [sample(-5, 900, 10), sample(15, 300, 20), sample(30, 500, 30)]
    record = meter.finish(started + timedelta(seconds=30), 30.0, 3000, samples, started)
    # The sample from before the run is left out: mean 400m over 30 s.
    [component] = record["components"]
    assert (component["source"], component["cpu_seconds"]) == ("metrics-server", 12.0)
    assert component["peak_memory_bytes"] == 30
    assert record["path_cpu_seconds_per_1000_requests"] is None
    assert record["unattributed_cpu_seconds"] is None
    assert any("HTTP 403" in problem for problem in record["problems"])


class StaleKubelet(FakeKubeApi):
    """A kubelet that stopped refreshing: its counters keep the stamp of the first read."""

    first: dict[str, Any] | None = None

    def node_summary(self, node: str) -> dict[str, Any]:
        if self.first is None:
            self.first = super().node_summary(node)
        return self.first


def test_a_kubelet_that_does_not_refresh_is_named_and_the_wait_ends() -> None:
    clock = Clock()
    load = Load({"fortio/fortio": 1, "node": 1}, {"fortio/fortio": 1, "node": 1})
    api = StaleKubelet(
        "client",
        rollout_after=0,
        cpu_usage=load.container,
        node_overhead=load.node,
        clock=clock.seconds,
    )
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    api.apply(_deployment("fortio", ["fortio"]))
    api.list("v1", "Pod", NAMESPACE)
    settings = ResourceCostSettings(idle_seconds=5, fresh_stats_timeout=20)
    meter = CostMeter(
        {"client": api},
        (SampleScope("client", NAMESPACE),),
        settings,
        clock=clock.datetime,
        sleep=clock.sleep,
    )
    begun = clock.now
    meter.begin()
    assert clock.now - begun <= 5 + 20 + 2
    assert any("did not refresh its counters within 20s" in p for p in meter.problems)


def test_roles_come_from_the_scope_then_the_workload_then_the_side_of_the_path() -> None:
    assert container_role(SampleScope("server", "istio-system", "app=x", GATEWAY), "proxy") == (
        GATEWAY
    )
    workload = SampleScope("client", NAMESPACE, container_roles=(("cmd-nsc", CONTROL_PLANE),))
    assert container_role(workload, "cmd-nsc") == CONTROL_PLANE
    assert container_role(workload, "fortio") == LOAD_GENERATOR
    assert container_role(workload, "kuma-sidecar") == CLIENT_PROXY
    assert container_role(SampleScope("server", NAMESPACE), "kuma-sidecar") == SERVER_PROXY
    assert container_role(SampleScope("server", NAMESPACE), "nginx") == SERVER_APP

"""Like for like: the settings that made the study's meshes incomparable are recorded with
every run and are the same for every mesh unless the configuration says otherwise."""

from __future__ import annotations

import json

from meshbench.config import load_config
from meshbench.local.nginx import KEEPALIVE_REQUESTS
from meshbench.registry import get_backend

from .conftest import MESHES, context

CONFIG = load_config()


def run_info(mesh: str) -> dict:
    return get_backend(CONFIG, "existing", mesh).run_info(context(CONFIG, mesh))


def test_protocol_direction_workloads_and_keepalive_are_recorded_and_equal():
    infos = {mesh: run_info(mesh) for mesh in (*MESHES, "baseline")}
    assert {m: i["like_for_like"]["protocol"] for m, i in infos.items()} == {
        "istio": "http",  # L7 through Envoy
        "kuma": "http",  # L7 too: appProtocol http (the study measured Kuma as TCP)
        "nsm": "ip",  # an L3 tunnel, no per-request proxy
        "baseline": "http",
    }
    workloads = {json.dumps(i["workloads"], sort_keys=True) for i in infos.values()}
    assert len(workloads) == 1  # images, requests/limits, keepalive, direction
    record = infos["istio"]["workloads"]
    assert record["direction"] == "fortio (client cluster) -> nginx (server cluster)"
    assert record["nginx_keepalive_requests"] == KEEPALIVE_REQUESTS > 1000
    for mesh in MESHES:
        assert infos[mesh]["like_for_like"]["path"]
        assert isinstance(infos[mesh]["like_for_like"]["crosses_load_balancer"], bool)
    assert infos["istio"]["like_for_like"]["crosses_load_balancer"] is True
    assert infos["kuma"]["like_for_like"]["crosses_load_balancer"] is True
    assert infos["nsm"]["like_for_like"]["crosses_load_balancer"] is False


def test_every_proxy_on_the_path_gets_the_same_resources():
    expected = {
        "requests": {"cpu": "1", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    istio, kuma, nsm = (run_info(m)["mesh"] for m in MESHES)
    assert istio["proxy_resources"] == istio["gateway_resources"] == expected
    assert kuma["proxy_resources"] == kuma["ingress_resources"] == expected
    # VPP busy-polls under load: its containers keep the proxies' requests and memory limit
    # but get no CPU limit (meshes.nsm.vpp_cpu_limit), and the run records why.
    vpp = {"requests": expected["requests"], "limits": {"memory": "512Mi"}}
    assert nsm["forwarder_resources"] == nsm["vl3_endpoint_resources"] == vpp
    assert nsm["vpp_cpu_limit"] is None
    assert "adaptive rx mode" in nsm["vpp_cpu_limit_reason"]
    annotations = run_info("istio")["like_for_like"]["server_pod_annotations"]
    assert annotations["sidecar.istio.io/proxyCPULimit"] == "1"
    assert annotations == run_info("istio")["like_for_like"]["client_pod_annotations"]


def test_mesh_specific_settings_are_recorded():
    istio, kuma, nsm = (run_info(m)["mesh"] for m in MESHES)
    assert istio["cluster_names"] == {"client": "cluster1", "server": "cluster2"}
    assert istio["kubernetes_support"]["supported"] is True
    assert kuma["global_control_plane"] == {
        "cluster": "server",
        "namespace": "kuma-global",
        "store": "memory",
        "mode": "universal on Kubernetes",
        "co_located_with_zone": "zone2",
    }
    assert kuma["kubernetes_support"]["supported"] is False  # 2.4 on 1.28
    assert nsm["inter_node_mechanism"] == "wireguard"
    assert nsm["mechanism_setting"].startswith("NSM default for IP payload (WireGuard")
    assert nsm["version_profile"] == "study-2023"

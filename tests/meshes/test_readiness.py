"""The readiness judgements: what each mesh's status output means, in the shapes upstream
prints (mesh-recipes.md sections 1.8, 2.4, 2.6, 3.6)."""

from __future__ import annotations

import json

from meshbench.meshes.istio import remote_clusters_state, remote_endpoint_state
from meshbench.meshes.kuma import zone_ingresses_state, zones_state
from meshbench.meshes.nsm import pods_all_ready
from meshbench.testing.fake_kube import FakeKubeApi

REMOTE_CLUSTERS = """NAME         SECRET                                          STATUS      ISTIOD
cluster1                                                     synced      istiod-7b9c-x2
cluster2     istio-system/istio-remote-secret-cluster2       {status}      istiod-7b9c-x2
"""


def test_istiod_must_list_the_other_cluster_as_synced():
    assert remote_clusters_state(REMOTE_CLUSTERS.format(status="synced"), "cluster2").ready
    pending = remote_clusters_state(REMOTE_CLUSTERS.format(status="timeout"), "cluster2")
    assert not pending.ready and "not synced" in pending.pending[0]
    missing = remote_clusters_state(REMOTE_CLUSTERS.format(status="synced"), "cluster3")
    assert not missing.ready and "remote secret missing or misnamed" in missing.pending[0]


def endpoints(*addresses: tuple[str, int]) -> str:
    return json.dumps(
        [
            {
                "name": "outbound|80||nginx.mb-x.svc.cluster.local",
                "hostStatuses": [
                    {
                        "address": {"socketAddress": {"address": a, "portValue": p}},
                        "healthStatus": {"edsHealthStatus": "HEALTHY"},
                    }
                    for a, p in addresses
                ],
            }
        ]
    )


def test_the_client_proxy_must_reach_nginx_through_the_remote_gateway():
    good = remote_endpoint_state(endpoints(("203.0.113.20", 15443)), "203.0.113.20")
    assert good.ready and good.value == ["203.0.113.20:15443"]
    # AWS gives the gateway a hostname; istiod resolves it, so any :15443 endpoint counts.
    assert remote_endpoint_state(endpoints(("52.1.2.3", 15443)), "a1b2.elb.amazonaws.com").ready


def test_raw_pod_ips_or_nothing_name_the_likely_cause():
    raw = remote_endpoint_state(endpoints(("10.0.3.17", 80)), "203.0.113.20")
    assert not raw.ready and "network label or gateway address missing" in raw.pending[0]
    none = remote_endpoint_state(endpoints(), "203.0.113.20")
    assert not none.ready and "remote secret missing or broken" in none.pending[0]
    wrong = remote_endpoint_state(endpoints(("203.0.113.99", 15443)), "203.0.113.20")
    assert not wrong.ready and "are not 203.0.113.20" in wrong.pending[0]
    assert not remote_endpoint_state("not json", None).ready


def subscription(connected: bool, disconnected: bool = False) -> dict:
    entry = {"id": "s1", "globalInstanceId": "global-1", "status": {"total": {}}}
    if connected:
        entry["connectTime"] = "2026-11-26T08:00:00Z"
    if disconnected:
        entry["disconnectTime"] = "2026-11-26T08:05:00Z"
    return entry


def zone(name: str, *subscriptions: dict, enabled: bool = True) -> dict:
    return {
        "type": "ZoneOverview",
        "name": name,
        "zone": {"enabled": enabled},
        "zoneInsight": {"subscriptions": list(subscriptions)},
    }


def test_zones_are_online_only_with_a_live_kds_subscription():
    document = {"items": [zone("zone1", subscription(True)), zone("zone2", subscription(True))]}
    assert zones_state(document, ["zone1", "zone2"]).ready
    flapped = {
        "items": [
            zone("zone1", subscription(True, disconnected=True), subscription(True)),
            zone("zone2", subscription(True, disconnected=True)),
        ]
    }
    state = zones_state(flapped, ["zone1", "zone2"])
    assert state.pending == ("zone zone2 is Offline",)
    disabled = {"items": [zone("zone1", subscription(True), enabled=False)]}
    assert zones_state(disabled, ["zone1", "zone2"]).pending == (
        "zone zone1 is disabled",
        "zone zone2 has not connected to the global control plane",
    )


def ingress(zone_name: str, online: bool, advertised: str | None) -> dict:
    networking = {"address": "10.0.0.5", "port": 10001}
    if advertised:
        networking |= {"advertisedAddress": advertised, "advertisedPort": 10001}
    return {
        "type": "ZoneIngressOverview",
        "name": f"kuma-ingress-{zone_name}",
        "zoneIngress": {"zone": zone_name, "networking": networking},
        "zoneIngressInsight": {"subscriptions": [subscription(online)]},
    }


def test_each_zone_needs_an_online_ingress_with_an_advertised_address():
    document = {"items": [ingress("zone1", True, "198.51.100.1"), ingress("zone2", True, "h.elb")]}
    state = zone_ingresses_state(document, ["zone1", "zone2"])
    assert state.ready and state.value == {"zone1": "198.51.100.1:10001", "zone2": "h.elb:10001"}
    no_address = {"items": [ingress("zone1", True, None), ingress("zone2", False, "h.elb")]}
    pending = zone_ingresses_state(no_address, ["zone1", "zone2"]).pending
    assert pending == (
        "zone zone1: kuma-ingress-zone1: Online, advertised address none",
        "zone zone2: kuma-ingress-zone2: Offline, advertised address h.elb",
    )


def pod(name: str, app: str, ready: bool) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "nsm-system", "labels": {"app": app}},
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": app,
                    "ready": ready,
                    "restartCount": 0,
                    "state": {"running": {}}
                    if ready
                    else {"waiting": {"reason": "CrashLoopBackOff"}},
                }
            ],
        },
    }


def test_every_nsm_pod_must_be_ready_and_every_app_present():
    api = FakeKubeApi("c", metrics_server=False)
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nsm-system"}})
    for item in (pod("nsmgr-a", "nsmgr", True), pod("forwarder-vpp-a", "forwarder-vpp", False)):
        api.objects[("v1", "Pod", "nsm-system", item["metadata"]["name"])] = item
    state = pods_all_ready(api, "nsm-system", ("nsmgr", "forwarder-vpp", "registry"))
    assert not state.ready
    assert state.pending == (
        "nsm-system: no pod with app=registry",
        "pod forwarder-vpp-a: container forwarder-vpp CrashLoopBackOff",
    )
    api.objects[("v1", "Pod", "nsm-system", "forwarder-vpp-a")] = pod(
        "forwarder-vpp-a", "forwarder-vpp", True
    )
    api.objects[("v1", "Pod", "nsm-system", "registry-a")] = pod("registry-a", "registry", True)
    assert pods_all_ready(api, "nsm-system", ("nsmgr", "forwarder-vpp", "registry")).ready

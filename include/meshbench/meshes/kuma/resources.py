"""Kuma names, resources, readiness parsers and the control plane's API client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import requests

from meshbench.backend import StepFailed
from meshbench.kube.waits import Readiness
from meshbench.meshes.common import (
    at_least,
)
from meshbench.workloads.kubernetes import NGINX, NGINX_PORT

ZONE_NAMESPACE = "kuma-system"
RELEASE = "kuma"
CONTROL_PLANE = "kuma-control-plane"
INGRESS = "kuma-ingress"
GLOBAL_SYNC_SERVICE = "kuma-global-zone-sync"
KDS_PORT = 5685
API_PORT = 5681
MESH = "default"
CA_BACKEND = "ca-1"
ALLOW_ALL = "allow-all"
POSTGRES_SECRET = "kuma-global-postgres"
INJECTION_LABEL = "kuma.io/sidecar-injection"
# Kinds a namespaced "universal on Kubernetes" global may render; anything cluster-scoped
# would be shared with the zone control plane in the same cluster, so it is refused.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "APIService",
        "PriorityClass",
        "GatewayClass",
        "StorageClass",
    }
)
HELM_HOOK = "helm.sh/hook"


def service_name(namespace: str) -> str:
    """The ``kuma.io/service`` tag Kuma generates for nginx's Service port 80."""
    return f"{NGINX}_{namespace}_svc_{NGINX_PORT}"


def mesh_resource(mtls: bool) -> dict[str, Any]:
    """Mesh ``default`` in the universal format the global's API takes (mutual-tls.md)."""
    mesh: dict[str, Any] = {"type": "Mesh", "name": MESH}
    if mtls:
        mesh["mtls"] = {
            "enabledBackend": CA_BACKEND,
            "backends": [
                {
                    "name": CA_BACKEND,
                    "type": "builtin",
                    "dpCert": {"rotation": {"expiration": "1d"}},
                    "conf": {"caCert": {"RSAbits": 2048, "expiration": "10y"}},
                }
            ],
        }
    return mesh


def allow_all_permission() -> dict[str, Any]:
    return {
        "type": "MeshTrafficPermission",
        "name": ALLOW_ALL,
        "mesh": MESH,
        "spec": {
            "targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}],
        },
    }


def needs_traffic_permission(version: str) -> bool:
    """From 2.6 a new Mesh gets no allow-all TrafficPermission (UPGRADE.md, 2.6.x)."""
    return at_least(version, "2.6")


def _online(insight: Mapping[str, Any] | None) -> bool:
    """Online: some KDS subscription connected and not disconnected (zone_insight_helpers)."""
    for subscription in (insight or {}).get("subscriptions") or []:
        if subscription.get("connectTime") and not subscription.get("disconnectTime"):
            return True
    return False


def zones_state(document: Mapping[str, Any], zones: Sequence[str]) -> Readiness:
    """From ``GET /zones+insights``: every zone in ``zones`` enabled and Online."""
    items = {item.get("name"): item for item in document.get("items") or []}
    pending = []
    for zone in zones:
        item = items.get(zone)
        if item is None:
            pending.append(f"zone {zone} has not connected to the global control plane")
            continue
        if (item.get("zone") or {}).get("enabled") is False:
            pending.append(f"zone {zone} is disabled")
        elif not _online(item.get("zoneInsight")):
            pending.append(f"zone {zone} is Offline")
    return Readiness(not pending, tuple(pending), sorted(items))


def zone_ingresses_state(document: Mapping[str, Any], zones: Sequence[str]) -> Readiness:
    """From ``GET /zoneingresses+insights``: each zone has an Online ingress advertising an
    address (an ingress without one cannot carry cross-zone traffic)."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    for item in document.get("items") or []:
        zone = (item.get("zoneIngress") or {}).get("zone")
        found.setdefault(str(zone), []).append(item)
    pending = []
    addresses = {}
    for zone in zones:
        ingresses = found.get(zone, [])
        if not ingresses:
            pending.append(f"zone {zone}: no zone ingress known to the global control plane")
            continue
        good = [
            item
            for item in ingresses
            if _online(item.get("zoneIngressInsight"))
            and ((item.get("zoneIngress") or {}).get("networking") or {}).get("advertisedAddress")
        ]
        if not good:
            states = [
                f"{item.get('name')}: "
                f"{'Online' if _online(item.get('zoneIngressInsight')) else 'Offline'}, "
                f"advertised address "
                f"{((item.get('zoneIngress') or {}).get('networking') or {}).get('advertisedAddress') or 'none'}"  # noqa: E501
                for item in ingresses
            ]
            pending.append(f"zone {zone}: " + "; ".join(states))
            continue
        networking = good[0]["zoneIngress"]["networking"]
        addresses[zone] = f"{networking['advertisedAddress']}:{networking.get('advertisedPort')}"
    return Readiness(not pending, tuple(pending), addresses)


def filter_global_objects(
    documents: Sequence[Any], namespace: str, store: str
) -> list[dict[str, Any]]:
    """The rendered global control plane as meshbench applies it: helm hooks dropped
    (nothing runs them), the ``migration`` init container dropped for the memory store,
    every object in ``namespace``; a cluster-scoped object is an error."""
    objects = []
    for document in documents:
        if not isinstance(document, dict) or not document.get("kind"):
            continue
        metadata = document.setdefault("metadata", {})
        if HELM_HOOK in (metadata.get("annotations") or {}):
            continue
        if document["kind"] in CLUSTER_SCOPED_KINDS:
            raise StepFailed(
                f"the global control plane chart rendered cluster-scoped {document['kind']} "
                f"{metadata.get('name')}: it would be shared with the zone control plane"
            )
        metadata["namespace"] = namespace
        if store == "memory" and document["kind"] == "Deployment":
            pod = document["spec"]["template"]["spec"]
            pod["initContainers"] = [
                c for c in pod.get("initContainers") or [] if c.get("name") != "migration"
            ]
            if not pod["initContainers"]:
                del pod["initContainers"]
        objects.append(document)
    return objects


class KumaApi:
    """The global control plane's HTTP API through a port-forward."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            response = requests.request(
                method, f"{self.base_url}{path}", json=body, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise StepFailed(f"Kuma API {method} {path}: {exc}") from None
        if method == "DELETE" and response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise StepFailed(
                f"Kuma API {method} {path}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

"""Istio names, the east-west gateway's objects and the readiness parsers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.load_balancers import LoadBalancerPolicy
from meshbench.kube.ops import Op, call_op
from meshbench.kube.waits import Readiness
from meshbench.meshes.common import (
    at_least,
    step_text,
)

ISTIO_NAMESPACE = "istio-system"
ISTIOD = "istiod"
EASTWEST = "istio-eastwestgateway"
INGRESS_GATEWAY = "istio-ingressgateway"  # only with control_plane_profile 'default'
CROSS_NETWORK_GATEWAY = "cross-network-gateway"
REMOTE_SECRET_LABEL = "istio/multiCluster"
NETWORK_LABEL = "topology.istio.io/network"
# Ports of the east-west gateway Service, as gen-eastwest-gateway.sh in 1.19.3 and 1.28.0.
EASTWEST_PORTS = (
    ("status-port", 15021),
    ("tls", 15443),
    ("tls-istiod", 15012),
    ("tls-webhook", 15017),
)
CROSS_NETWORK_PORT = 15443
ISTIOCTL = "istioctl"
# Labels istioctl puts on every object of the east-west gateway (IstioOperator "eastwest",
# component IngressGateways): manifests/charts/gateways/istio-ingress/templates at 1.19.3
# and 1.30.3. `istioctl uninstall -f` cannot remove them in 1.19: without --purge its
# DeleteControlPlaneByManifests keeps only Pilot's manifest, which this operator disables.
EASTWEST_OPERATOR = "eastwest"
EASTWEST_SELECTOR = (
    f"install.operator.istio.io/owning-resource={EASTWEST_OPERATOR},"
    "operator.istio.io/component=IngressGateways"
)
# The namespaced kinds istioctl 1.30's uninstall prunes (operator/pkg/uninstall/prune.go
# NamespacedResources) that the gateway chart renders, plus its optional NetworkPolicy.
EASTWEST_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


def gateway_service_settings(load_balancer: LoadBalancerPolicy) -> dict[str, Any]:
    """An ingress gateway's ``k8s`` settings that carry the environment's LoadBalancer
    policy: istioctl merges ``serviceAnnotations`` into the Service's annotations and
    ``service`` into its spec (strategic merge: the ports stay)."""
    settings: dict[str, Any] = {}
    if load_balancer.annotations:
        settings["serviceAnnotations"] = dict(load_balancer.annotations)
    if load_balancer.source_ranges:
        settings["service"] = {"loadBalancerSourceRanges": list(load_balancer.source_ranges)}
    return settings


def remote_secret_name(cluster_name: str) -> str:
    return f"istio-remote-secret-{cluster_name}"


def gateway_api_version(version: str) -> str:
    """``networking.istio.io/v1`` exists from 1.22; the 1.19 samples use v1alpha3."""
    return "networking.istio.io/v1" if at_least(version, "1.22") else "networking.istio.io/v1alpha3"


def eastwest_objects(cluster: KubeCluster) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of what is left of the east-west gateway."""
    return [
        (api_version, kind, item["metadata"]["name"])
        for api_version, kind in EASTWEST_KINDS
        for item in cluster.api.list(
            api_version, kind, namespace=ISTIO_NAMESPACE, label_selector=EASTWEST_SELECTOR
        )
        if not (item.get("metadata") or {}).get("deletionTimestamp")
    ]


def eastwest_gone_state(cluster: KubeCluster) -> Readiness:
    left = eastwest_objects(cluster)
    pending = tuple(f"{kind} {ISTIO_NAMESPACE}/{name} is left" for _, kind, name in left)
    return Readiness(not left, pending, "none left")


def delete_eastwest_op(step_phase: str, role: str) -> Op:
    def action(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[role]
        deleted = [
            f"{kind}/{name}"
            for api_version, kind, name in eastwest_objects(cluster)
            if cluster.delete(api_version, kind, name, ISTIO_NAMESPACE)
        ]
        return {f"eastwest_deleted_{role}": deleted}

    kinds = ", ".join(kind for _, kind in EASTWEST_KINDS)
    return call_op(
        step_phase,
        role,
        "api",
        step_text(
            "east-west gateway",
            f"delete the objects istioctl made for {EASTWEST} (IstioOperator "
            f"{EASTWEST_OPERATOR}); `istioctl uninstall -f` removes none of them in 1.19",
        ),
        action,
        f"LIST {kinds} in {ISTIO_NAMESPACE} with labels {EASTWEST_SELECTOR}; DELETE each",
    )


def parse_client_version(output: str) -> str | None:
    match = re.search(r"(\d+\.\d+\.\d+)", output)
    return match.group(1) if match else None


def remote_clusters_state(output: str, expected: str) -> Readiness:
    """``istioctl remote-clusters`` lists NAME SECRET STATUS ISTIOD; ``expected`` must be
    ``synced`` for every istiod."""
    rows = [line.split() for line in output.splitlines()[1:] if line.strip()]
    mine = [row for row in rows if row and row[0] == expected]
    if not mine:
        return Readiness(
            False,
            (f"istiod does not list cluster {expected!r} (remote secret missing or misnamed)",),
        )
    unsynced = [" ".join(row) for row in mine if "synced" not in row]
    if unsynced:
        return Readiness(False, tuple(f"cluster {expected} not synced: {row}" for row in unsynced))
    return Readiness(True, (), "synced")


def _socket_addresses(value: Any) -> Iterator[tuple[str, int]]:
    if isinstance(value, dict):
        socket = value.get("socketAddress")
        if isinstance(socket, dict) and "address" in socket:
            yield str(socket["address"]), int(socket.get("portValue") or 0)
        for child in value.values():
            yield from _socket_addresses(child)
    elif isinstance(value, list):
        for child in value:
            yield from _socket_addresses(child)


def remote_endpoint_state(output: str, gateway_address: str | None) -> Readiness:
    """The client proxy's endpoints for nginx, from ``istioctl proxy-config endpoint -o
    json``: in multi-network one must be the server cluster's east-west gateway on 15443.
    Raw remote pod IPs mean a missing network label or gateway address; none at all means
    a missing or broken remote secret (mesh-recipes.md section 1.8)."""
    try:
        document = json.loads(output or "[]")
    except json.JSONDecodeError as exc:
        return Readiness(False, (f"unreadable proxy-config output: {exc}",))
    endpoints = sorted(set(_socket_addresses(document)))
    if not endpoints:
        return Readiness(
            False, ("the client proxy has no endpoint for nginx: remote secret missing or broken",)
        )
    via_gateway = [(a, p) for a, p in endpoints if p == CROSS_NETWORK_PORT]
    if not via_gateway:
        shown = ", ".join(f"{a}:{p}" for a, p in endpoints)
        return Readiness(
            False,
            (
                f"the client proxy sees {shown}, not the server's east-west gateway on "
                f"{CROSS_NETWORK_PORT}: network label or gateway address missing",
            ),
        )
    ip_like = gateway_address and re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", gateway_address)
    if ip_like and gateway_address not in {a for a, _ in via_gateway}:
        shown = ", ".join(f"{a}:{p}" for a, p in via_gateway)
        return Readiness(
            False, (f"endpoints {shown} on {CROSS_NETWORK_PORT} are not {gateway_address}",)
        )
    return Readiness(True, (), [f"{a}:{p}" for a, p in via_gateway])

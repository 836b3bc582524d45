"""Istio multi-primary on different networks, installed and removed once per iteration.

Facts and sources: mesh-recipes.md section 1 (istio.io multi-primary multi-network guide,
its verification and troubleshooting pages, istio/istio at 1.19.3 and 1.28.0). Per
iteration, in both clusters:

1. ``istio-system`` labelled with the cluster's network (before istiod starts);
2. the plug-in CA: Secret ``cacerts`` from a root shared by both clusters and one
   intermediate per cluster, generated here (``meshes.pki``) before istiod starts;
3. the control plane: ``istioctl install`` with mesh id, cluster name and network;
4. the east-west gateway (an IstioOperator written here from the documented fields of
   ``gen-eastwest-gateway.sh``), a LoadBalancer Service carrying the environment's
   load-balancer settings through the overlay's ``k8s`` fields;
5. ``Gateway cross-network-gateway``: port 15443, TLS ``AUTO_PASSTHROUGH``, hosts ``*.local``;
6. remote secrets in both directions, each named after the cluster it describes: the study
   named both ``cluster2``, and istiod silently ignores a secret carrying its own cluster id,
   so one side never discovered the other.

Readiness: istiod and the gateway rolled out, the gateway has an address, each istiod
lists the other cluster as ``synced``; after the workloads: the Fortio sidecar's endpoints
for nginx are the server cluster's east-west gateway on 15443 (not raw pod IPs, not
nothing), and the backend's probe returns 200.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from meshbench.backend import RunContext, StepFailed
from meshbench.config import BenchmarkConfig, IstioMesh
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.load_balancers import LoadBalancerPolicy
from meshbench.kube.metrics import SampleScope
from meshbench.kube.ops import Op, apply_op, call_op, check_op, delete_op, wait_op
from meshbench.kube.waits import Readiness, load_balancer_state
from meshbench.meshes import inventory
from meshbench.meshes.common import (
    ROLES,
    CliFile,
    Component,
    ComponentMeshInstaller,
    api_wait_op,
    at_least,
    cli_op,
    managed_labels,
    namespace_manifest,
    other,
    phase,
    poll_cli,
    poll_cli_op,
    redacted_secret,
    render,
    require_version,
    resources_record,
    step_text,
    support_check,
)
from meshbench.meshes.pki import CACERTS_KEYS, CACERTS_SECRET, cacerts_secret, issue_chains
from meshbench.workloads.kubernetes import FORTIO, NGINX, NGINX_PORT, WorkloadProfile

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


class IstioInstaller(ComponentMeshInstaller):
    name = "istio"
    cli_poll_interval = 5.0

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self.settings: IstioMesh = config.meshes.istio
        self.timeouts = config.kubernetes.timeouts

    # ------------------------------------------------------------------ names
    def cluster_name(self, role: str) -> str:
        return getattr(self.settings.cluster_names, role)

    def network(self, role: str) -> str:
        return getattr(self.settings.networks, role)

    # ------------------------------------------------------------------ manifests
    def system_namespace(self, ctx: RunContext, role: str) -> dict[str, Any]:
        return namespace_manifest(
            ISTIO_NAMESPACE, {**managed_labels(ctx), NETWORK_LABEL: self.network(role)}
        )

    def control_plane_operator(
        self, role: str, load_balancer: LoadBalancerPolicy
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "profile": self.settings.control_plane_profile,
            "values": {
                "global": {
                    "meshID": self.settings.mesh_id,
                    "multiCluster": {"clusterName": self.cluster_name(role)},
                    "network": self.network(role),
                }
            },
        }
        if self.settings.control_plane_profile == "default" and not load_balancer.is_empty:
            # The default profile's north-south gateway is one more LoadBalancer Service.
            spec["components"] = {
                "ingressGateways": [
                    {
                        "name": INGRESS_GATEWAY,
                        "enabled": True,
                        "k8s": gateway_service_settings(load_balancer),
                    }
                ]
            }
        return {
            "apiVersion": "install.istio.io/v1alpha1",
            "kind": "IstioOperator",
            "metadata": {"name": "meshbench-control-plane", "namespace": ISTIO_NAMESPACE},
            "spec": spec,
        }

    def eastwest_operator(self, role: str, load_balancer: LoadBalancerPolicy) -> dict[str, Any]:
        network = self.network(role)
        proxy = resources_record(self.config.kubernetes.proxy_resources)
        k8s: dict[str, Any] = {
            # Traffic through this gateway is routed inside its network.
            "env": [{"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": network}],
            # The gateway is on the measured path: same as every proxy.
            "resources": proxy,
            "service": {
                "ports": [
                    {"name": name, "port": port, "targetPort": port}
                    for name, port in EASTWEST_PORTS
                ]
            },
        }
        settings = gateway_service_settings(load_balancer)
        if "serviceAnnotations" in settings:
            k8s["serviceAnnotations"] = settings["serviceAnnotations"]
        k8s["service"].update(settings.get("service", {}))
        return {
            "apiVersion": "install.istio.io/v1alpha1",
            "kind": "IstioOperator",
            "metadata": {"name": EASTWEST_OPERATOR, "namespace": ISTIO_NAMESPACE},
            "spec": {
                "profile": "empty",
                "components": {
                    "ingressGateways": [
                        {
                            "name": EASTWEST,
                            "label": {
                                "istio": "eastwestgateway",
                                "app": EASTWEST,
                                NETWORK_LABEL: network,
                            },
                            "enabled": True,
                            "k8s": k8s,
                        }
                    ]
                },
                "values": {
                    "gateways": {"istio-ingressgateway": {"injectionTemplate": "gateway"}},
                    "global": {"network": network},
                },
            },
        }

    def cross_network_gateway(self, ctx: RunContext) -> dict[str, Any]:
        return {
            "apiVersion": gateway_api_version(require_version(ctx, self.name)),
            "kind": "Gateway",
            "metadata": {
                "name": CROSS_NETWORK_GATEWAY,
                "namespace": ISTIO_NAMESPACE,
                "labels": managed_labels(ctx),
            },
            "spec": {
                "selector": {"istio": "eastwestgateway"},
                "servers": [
                    {
                        "port": {"number": CROSS_NETWORK_PORT, "name": "tls", "protocol": "TLS"},
                        "tls": {"mode": "AUTO_PASSTHROUGH"},
                        "hosts": ["*.local"],
                    }
                ],
            },
        }

    def cacerts_placeholder(self, ctx: RunContext) -> dict[str, Any]:
        files = dict.fromkeys(CACERTS_KEYS, b"")
        return redacted_secret(
            cacerts_secret(files, managed_labels(ctx)), "<generated at run time, not shown>"
        )

    # ------------------------------------------------------------------ install
    def components(self, ctx: RunContext, iteration: int) -> list[Component]:
        install = phase(iteration, "install_mesh")
        uninstall = phase(iteration, "uninstall_mesh")
        version = require_version(ctx, self.name)
        timeout = self.timeouts.command
        key = f"before-iteration-{iteration:02d}"

        preflight = Component("preflight")
        inventory_part = Component("inventory")
        namespace_part = Component("namespace")
        ca_part = Component("plug-in CA")
        control_part = Component("control plane")
        eastwest_part = Component("east-west gateway")
        gateway_part = Component("cross-network gateway")
        secrets_part = Component("remote secrets")

        preflight.install.append(
            call_op(
                install,
                "client",
                "command",
                step_text(
                    "preflight",
                    f"{ISTIOCTL} on the worker is version {version} (a client of another version "
                    f"installs another Istio)",
                ),
                lambda clusters: self._check_cli(clusters, version),
                f"{ISTIOCTL} version --remote=false",
            )
        )
        ca_part.install.append(self._cacerts_op(ctx, install))

        for role in ROLES:
            inventory_part.install.append(
                inventory.record_op(install, role, ctx, key, "Istio is installed")
            )
            inventory_part.uninstall.append(
                inventory.verify_op(
                    uninstall,
                    role,
                    ctx,
                    key,
                    "Istio was installed",
                    self.timeouts.namespace_deletion,
                )
            )
            namespace_part.install.append(
                apply_op(
                    install,
                    role,
                    [self.system_namespace(ctx, role)],
                    step_text(
                        "namespace",
                        f"{ISTIO_NAMESPACE} labelled with network {self.network(role)} (before "
                        f"istiod starts, which reads it for pods without sidecars)",
                    ),
                )
            )
            namespace_part.uninstall.append(
                delete_op(
                    uninstall,
                    role,
                    "v1",
                    "Namespace",
                    ISTIO_NAMESPACE,
                    None,
                    self.timeouts.namespace_deletion,
                    step_text("namespace", f"delete {ISTIO_NAMESPACE} and wait until it is gone"),
                )
            )
            ca_part.uninstall.append(
                delete_op(
                    uninstall,
                    role,
                    "v1",
                    "Secret",
                    CACERTS_SECRET,
                    ISTIO_NAMESPACE,
                    None,
                    step_text("plug-in CA", f"delete Secret {ISTIO_NAMESPACE}/{CACERTS_SECRET}"),
                )
            )
            load_balancer = self.load_balancer_policy(ctx, role)
            control_file = CliFile(
                "control-plane.yaml", render([self.control_plane_operator(role, load_balancer)])
            )
            control_part.install.append(
                cli_op(
                    install,
                    role,
                    step_text(
                        "control plane",
                        f"istioctl install: mesh {self.settings.mesh_id}, cluster "
                        f"{self.cluster_name(role)}, network {self.network(role)}",
                    ),
                    ISTIOCTL,
                    [
                        "install",
                        "-y",
                        "--readiness-timeout",
                        f"{int(self.timeouts.rollout)}s",
                        "-f",
                        "{dir}/control-plane.yaml",
                    ],
                    timeout,
                    files=[control_file],
                )
            )
            control_part.uninstall.append(
                cli_op(
                    uninstall,
                    role,
                    step_text(
                        "control plane",
                        "istioctl uninstall --purge (istiod, webhooks, cluster roles, CRDs)",
                    ),
                    ISTIOCTL,
                    ["uninstall", "-y", "--purge"],
                    timeout,
                )
            )
            eastwest_file = CliFile(
                "eastwest.yaml", render([self.eastwest_operator(role, load_balancer)])
            )
            eastwest_part.install.append(
                cli_op(
                    install,
                    role,
                    step_text(
                        "east-west gateway",
                        f"istioctl install {EASTWEST} for network {self.network(role)} "
                        f"(LoadBalancer ports 15021, 15443, 15012, 15017"
                        + (
                            ""
                            if load_balancer.is_empty
                            else "; the environment's load-balancer annotations and source ranges"
                        )
                        + ")",
                    ),
                    ISTIOCTL,
                    [
                        "install",
                        "-y",
                        "--readiness-timeout",
                        f"{int(self.timeouts.rollout)}s",
                        "-f",
                        "{dir}/eastwest.yaml",
                    ],
                    timeout,
                    files=[eastwest_file],
                )
            )
            eastwest_part.uninstall += [
                delete_eastwest_op(uninstall, role),
                delete_op(
                    uninstall,
                    role,
                    "v1",
                    "Service",
                    EASTWEST,
                    ISTIO_NAMESPACE,
                    self.timeouts.load_balancer,
                    step_text(
                        "east-west gateway",
                        f"Service {EASTWEST} is gone (its cloud load balancer with it)",
                    ),
                ),
                api_wait_op(
                    uninstall,
                    role,
                    step_text("east-west gateway", f"nothing of {EASTWEST} is left"),
                    eastwest_gone_state,
                    self.timeouts.namespace_deletion,
                    f"LIST the kinds above with labels {EASTWEST_SELECTOR} in "
                    f"{ISTIO_NAMESPACE}: none left; up to {self.timeouts.namespace_deletion:g}s",
                    record_as=f"eastwest_left_{role}",
                ),
            ]
            gateway_part.install.append(
                apply_op(
                    install,
                    role,
                    [self.cross_network_gateway(ctx)],
                    step_text(
                        "cross-network gateway",
                        f"expose *.local services on {CROSS_NETWORK_PORT} (AUTO_PASSTHROUGH)",
                    ),
                )
            )
            gateway_part.uninstall.append(
                delete_op(
                    uninstall,
                    role,
                    gateway_api_version(version),
                    "Gateway",
                    CROSS_NETWORK_GATEWAY,
                    ISTIO_NAMESPACE,
                    None,
                    step_text(
                        "cross-network gateway",
                        f"delete Gateway {ISTIO_NAMESPACE}/{CROSS_NETWORK_GATEWAY}",
                    ),
                )
            )
        for target in ROLES:
            described = other(target)
            secrets_part.install.append(self._remote_secret_op(ctx, install, target, described))
            secrets_part.uninstall.append(
                delete_op(
                    uninstall,
                    target,
                    "v1",
                    "Secret",
                    remote_secret_name(self.cluster_name(described)),
                    ISTIO_NAMESPACE,
                    None,
                    step_text(
                        "remote secrets",
                        f"delete Secret {ISTIO_NAMESPACE}/"
                        f"{remote_secret_name(self.cluster_name(described))} (it describes "
                        f"the {described} cluster)",
                    ),
                )
            )
        return [
            preflight,
            inventory_part,
            namespace_part,
            ca_part,
            control_part,
            eastwest_part,
            gateway_part,
            secrets_part,
        ]

    def _check_cli(self, clusters: Clusters, version: str) -> dict[str, Any]:
        result = clusters["client"].run(ISTIOCTL, ["version", "--remote=false"], timeout=60)
        found = parse_client_version(result.stdout)
        if found != version:
            raise StepFailed(
                f"istioctl on this worker is {found or 'of unknown version'}, the run measures "
                f"Istio {version}: install istioctl {version} (docs/real-clusters.md)"
            )
        return {"istioctl_version": found}

    def _cacerts_op(self, ctx: RunContext, step_phase: str) -> Op:
        names = {role: self.cluster_name(role) for role in ROLES}

        def action(clusters: Clusters) -> dict[str, Any]:
            existing = {
                role: clusters[role].api.get("v1", "Secret", CACERTS_SECRET, ISTIO_NAMESPACE)
                for role in ROLES
            }
            roots = {
                role: ((secret or {}).get("data") or {}).get("root-cert.pem")
                for role, secret in existing.items()
            }
            complete = all(
                set(CACERTS_KEYS) <= set((secret or {}).get("data") or {})
                for secret in existing.values()
            )
            if complete and len(set(roots.values())) == 1:
                # A retried task: istiod may already have started with these.
                return {"plugin_ca": "kept the CA an earlier try made"}
            chains = issue_chains(names)
            for role in ROLES:
                clusters[role].apply([cacerts_secret(chains[role], managed_labels(ctx))])
            return {"plugin_ca": "new root, one intermediate per cluster"}

        return call_op(
            step_phase,
            None,
            "manifest",
            step_text(
                "plug-in CA",
                f"one root, an intermediate per cluster ({names['client']}, {names['server']}); "
                f"Secret {ISTIO_NAMESPACE}/{CACERTS_SECRET} in both clusters before istiod starts",
            ),
            action,
            "# generated in Python (cryptography, RSA 2048, 10 years): root -> intermediate\n"
            "# per cluster; keys go only into the Secrets\n"
            + render([self.cacerts_placeholder(ctx)]),
        )

    def _remote_secret_op(
        self, ctx: RunContext, step_phase: str, target: str, described: str
    ) -> Op:
        name = self.cluster_name(described)
        secret = remote_secret_name(name)
        args = ["create-remote-secret", f"--name={name}"]
        server = self.settings.remote_api_servers.get(described)  # type: ignore[call-overload]
        if server:
            args.append(f"--server={server}")

        def action(clusters: Clusters) -> dict[str, Any]:
            source = clusters.access(described).describe().get("kubeconfig_source")
            if source == "in_cluster" and not server:
                raise StepFailed(
                    f"the {described} cluster is reached in_cluster: its remote secret would "
                    f"carry the in-cluster API address, which the {target} cluster's istiod "
                    f"cannot reach; set meshes.istio.remote_api_servers.{described} to its API "
                    f"server URL as the {target} cluster reaches it"
                )
            result = clusters[described].run(
                ISTIOCTL, args, timeout=self.timeouts.command, secret_output=True
            )
            documents = [d for d in yaml.safe_load_all(result.stdout) if isinstance(d, dict)]
            secrets = [d for d in documents if d.get("kind") == "Secret"]
            if len(secrets) != 1:
                raise StepFailed(
                    f"istioctl create-remote-secret printed {len(secrets)} Secrets, expected 1"
                )
            metadata = secrets[0].get("metadata") or {}
            if metadata.get("name") != secret:
                raise StepFailed(
                    f"istioctl create-remote-secret named its Secret "
                    f"{metadata.get('name')!r}, expected {secret!r}"
                )
            keys = set(secrets[0].get("stringData") or {}) | set(secrets[0].get("data") or {})
            if keys != {name}:
                raise StepFailed(
                    f"remote secret {secret} holds {sorted(keys)}, expected [{name!r}]"
                )
            if (metadata.get("labels") or {}).get(REMOTE_SECRET_LABEL) != "true":
                raise StepFailed(f"remote secret {secret} lacks label {REMOTE_SECRET_LABEL}=true")
            metadata.setdefault("namespace", ISTIO_NAMESPACE)
            clusters[target].apply(documents)
            return {f"remote_secret_in_{target}": secret}

        return call_op(
            step_phase,
            target,
            "command",
            step_text(
                "remote secrets",
                f"Secret {ISTIO_NAMESPACE}/{secret} in the {target} cluster: credentials of the "
                f"{described} cluster ({name}) for the {target} cluster's istiod",
            ),
            action,
            f"[{described}] istioctl {' '.join(args)}   (output is a credential: never logged)\n"
            + (
                ""
                if server
                else f"refused if the {described} connection uses in_cluster (set "
                f"meshes.istio.remote_api_servers.{described})\n"
            )
            + f"check: one Secret named {secret}, label {REMOTE_SECRET_LABEL}=true, data key "
            f"{name}\n[{target}] server-side apply of that output",
        )

    # ------------------------------------------------------------------ readiness
    def ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        step_phase = phase(iteration, "wait_mesh_ready")
        timeouts = self.timeouts
        ops: list[Op] = []
        for role in ROLES:
            for deployment in (ISTIOD, EASTWEST):
                ops.append(
                    wait_op(
                        step_phase,
                        role,
                        f"deployment {ISTIO_NAMESPACE}/{deployment} rolled out",
                        lambda cluster, d=deployment: cluster.wait_rollout(
                            ISTIO_NAMESPACE, d, timeouts.rollout
                        ),
                        f"poll apps/v1 Deployment {ISTIO_NAMESPACE}/{deployment}, up to "
                        f"{timeouts.rollout:g}s",
                    )
                )
            ops.append(
                wait_op(
                    step_phase,
                    role,
                    f"service {ISTIO_NAMESPACE}/{EASTWEST} has a LoadBalancer address",
                    lambda cluster: cluster.wait_load_balancer(
                        ISTIO_NAMESPACE, EASTWEST, timeouts.load_balancer
                    ),
                    f"poll v1 Service {ISTIO_NAMESPACE}/{EASTWEST} .status.loadBalancer"
                    f".ingress[0] (ip or hostname; istiod resolves hostnames), up to "
                    f"{timeouts.load_balancer:g}s",
                    record_as=f"eastwest_address_{role}",
                )
            )
        for role in ROLES:
            expected = self.cluster_name(other(role))
            secret = remote_secret_name(expected)
            ops.append(
                check_op(
                    step_phase,
                    role,
                    f"Secret {ISTIO_NAMESPACE}/{secret} describes cluster {expected}",
                    lambda cluster, s=secret, e=expected: self._remote_secret_state(cluster, s, e),
                    f"GET v1 Secret {ISTIO_NAMESPACE}/{secret}: label "
                    f"{REMOTE_SECRET_LABEL}=true, data key {expected}",
                )
            )
            ops.append(
                poll_cli_op(
                    step_phase,
                    role,
                    f"istiod lists cluster {expected} as synced",
                    ISTIOCTL,
                    ["remote-clusters"],
                    lambda output, e=expected: remote_clusters_state(output, e),
                    timeout=timeouts.rollout,
                    interval=self.cli_poll_interval,
                    command_timeout=120,
                    note="'timeout' means istiod cannot reach that API server",
                )
            )
        return ops

    @staticmethod
    def _remote_secret_state(cluster: KubeCluster, name: str, expected: str) -> Readiness:
        found = cluster.api.get("v1", "Secret", name, ISTIO_NAMESPACE)
        if found is None:
            return Readiness(False, (f"Secret {ISTIO_NAMESPACE}/{name} does not exist",))
        labels = (found.get("metadata") or {}).get("labels") or {}
        keys = set(found.get("data") or {}) | set(found.get("stringData") or {})
        problems = []
        if labels.get(REMOTE_SECRET_LABEL) != "true":
            problems.append(f"Secret {name} lacks label {REMOTE_SECRET_LABEL}=true")
        if expected not in keys:
            problems.append(f"Secret {name} has keys {sorted(keys)}, not {expected!r}")
        return Readiness(not problems, tuple(problems))

    def workload_ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        step_phase = phase(iteration, "wait_workloads_ready")
        namespace = ctx.resource_prefix
        host = f"{NGINX}.{namespace}.svc.cluster.local"
        cluster_key = f"outbound|{NGINX_PORT}||{host}"

        def args(cluster: KubeCluster) -> list[str]:
            pods = cluster.api.list(
                "v1", "Pod", namespace=namespace, label_selector=f"app={FORTIO}"
            )
            live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
            if not live:
                raise StepFailed(f"no {FORTIO} pod in {namespace}")
            pod = live[0]["metadata"]["name"]
            return [
                "proxy-config",
                "endpoint",
                f"{pod}.{namespace}",
                "--cluster",
                cluster_key,
                "-o",
                "json",
            ]

        def action(clusters: Clusters) -> dict[str, Any]:
            state = load_balancer_state(clusters["server"].api, ISTIO_NAMESPACE, EASTWEST)
            address = str(state.value) if state.ready else None
            endpoints = poll_cli(
                clusters["client"],
                "the Fortio sidecar sees nginx behind the server's east-west gateway",
                ISTIOCTL,
                args,
                lambda output: remote_endpoint_state(output, address),
                self.timeouts.rollout,
                self.cli_poll_interval,
                120,
            )
            return {"client_proxy_endpoints": endpoints}

        return [
            call_op(
                step_phase,
                "client",
                "wait",
                f"the Fortio sidecar routes nginx to the server cluster's east-west gateway "
                f"on {CROSS_NETWORK_PORT}",
                action,
                f"{ISTIOCTL} proxy-config endpoint <fortio pod>.{namespace} --cluster "
                f"'{cluster_key}' -o json\nrepeat every {self.cli_poll_interval:g}s, up to "
                f"{self.timeouts.rollout:g}s, until an endpoint is <server east-west address>:"
                f"{CROSS_NETWORK_PORT} (raw pod IPs: network label or gateway address missing; "
                f"none: remote secret missing)",
            )
        ]

    # ------------------------------------------------------------------ workloads
    def workload_profile(self, ctx: RunContext) -> WorkloadProfile:
        proxy = self.config.kubernetes.proxy_resources
        # Every sidecar gets the same resources as every other mesh's proxies.
        annotations = {
            "sidecar.istio.io/proxyCPU": proxy.cpu_request,
            "sidecar.istio.io/proxyCPULimit": proxy.cpu_limit,
            "sidecar.istio.io/proxyMemory": proxy.memory_request,
            "sidecar.istio.io/proxyMemoryLimit": proxy.memory_limit,
        }
        return WorkloadProfile(
            namespace_labels={"istio-injection": "enabled"},
            server_pod_annotations=annotations,
            client_pod_annotations=annotations,
            service_app_protocol="http",
            service_type="ClusterIP",
            # Multi-cluster DNS needs the Service in the client cluster too (no endpoints).
            service_in_client_cluster=True,
            protocol="http",
            path=(
                "fortio -> client sidecar (Envoy, L7 HTTP) -> server cluster's east-west "
                "gateway (LoadBalancer, SNI passthrough of mTLS) -> server sidecar -> nginx"
            ),
            crosses_load_balancer=True,
            extra_sample_scopes=(SampleScope("server", ISTIO_NAMESPACE, f"app={EASTWEST}"),),
        )

    def target_url(self, ctx: RunContext, clusters: Clusters) -> str:
        return f"http://{NGINX}.{ctx.resource_prefix}:{NGINX_PORT}/"

    def describe_target(self, ctx: RunContext) -> str:
        return (
            f"http://{NGINX}.{ctx.resource_prefix}:{NGINX_PORT}/ (the Service exists in both "
            f"clusters; the client's sidecar routes to the server's)"
        )

    # ------------------------------------------------------------------ pair / records
    def cleanup_pair_ops(self, ctx: RunContext) -> list[Op]:
        return [inventory.remove_op("delete_clusters", role, ctx) for role in ROLES]

    def warnings(self, ctx: RunContext) -> list[str]:
        found = [support_check(self.config, ctx, self.name).warning()]
        unset = [role for role in ROLES if role not in self.settings.remote_api_servers]
        if ctx.environment == "existing" and unset:
            found.append(
                f"a connection that uses in_cluster gives istioctl create-remote-secret the "
                f"in-cluster API address, which the other cluster cannot reach: the remote "
                f"secret step refuses such a connection unless meshes.istio.remote_api_servers "
                f"names its API server ({', '.join(unset)} not set)"
            )
        return [warning for warning in found if warning]

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        return {
            "mesh": self.name,
            "mesh_version": ctx.mesh_version,
            "version_profile": self.config.version_profile_name_for(ctx.environment),
            "kubernetes_support": support_check(self.config, ctx, self.name).record(),
            "topology": "multi-primary, multi-network",
            "mesh_id": self.settings.mesh_id,
            "cluster_names": self.settings.cluster_names.model_dump(),
            "networks": self.settings.networks.model_dump(),
            "control_plane_profile": self.settings.control_plane_profile,
            "plugin_ca": "shared root, one intermediate per cluster (RSA 2048, per iteration)",
            "proxy_resources": resources_record(self.config.kubernetes.proxy_resources),
            "gateway_resources": resources_record(self.config.kubernetes.proxy_resources),
        }


def build_installer(config: BenchmarkConfig) -> IstioInstaller:
    return IstioInstaller(config)

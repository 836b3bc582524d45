"""The Istio installer: names, manifests, readiness and the run's records."""

from __future__ import annotations

from typing import Any

import yaml

from meshbench.backend import RunContext, StepFailed
from meshbench.config import BenchmarkConfig, IstioMesh
from meshbench.cost import CONTROL_PLANE, GATEWAY
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.load_balancers import LoadBalancerPolicy
from meshbench.kube.metrics import SampleScope
from meshbench.kube.ops import Op, call_op, check_op, wait_op
from meshbench.kube.waits import Readiness, load_balancer_state
from meshbench.meshes import inventory
from meshbench.meshes.common import (
    ROLES,
    ComponentMeshInstaller,
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
from meshbench.meshes.istio.components import COMPONENT_BUILDERS
from meshbench.meshes.istio.resources import (
    CROSS_NETWORK_GATEWAY,
    CROSS_NETWORK_PORT,
    EASTWEST,
    EASTWEST_OPERATOR,
    EASTWEST_PORTS,
    INGRESS_GATEWAY,
    ISTIO_NAMESPACE,
    ISTIOCTL,
    ISTIOD,
    NETWORK_LABEL,
    REMOTE_SECRET_LABEL,
    gateway_api_version,
    gateway_service_settings,
    parse_client_version,
    remote_clusters_state,
    remote_endpoint_state,
    remote_secret_name,
)
from meshbench.meshes.pki import CACERTS_KEYS, CACERTS_SECRET, cacerts_secret, issue_chains
from meshbench.workloads.kubernetes import FORTIO, NGINX, NGINX_PORT, WorkloadProfile


class IstioInstaller(ComponentMeshInstaller):
    name = "istio"
    display_name = "Istio"
    component_builders = COMPONENT_BUILDERS
    cli_poll_interval = 5.0
    # Teardown deletes by name.
    uninstall_uses_load_balancer_policy = False

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self.settings: IstioMesh = config.meshes.istio

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
            extra_sample_scopes=(
                SampleScope("server", ISTIO_NAMESPACE, f"app={EASTWEST}", GATEWAY),
            ),
            control_plane_scopes=tuple(
                SampleScope(role, ISTIO_NAMESPACE, f"app={ISTIOD}", CONTROL_PLANE) for role in ROLES
            ),
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

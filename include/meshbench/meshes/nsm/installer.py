"""The NSM installer: its settings, the manifests it renders with them, its components
per pair and per iteration, readiness, the workloads' shape and what a run records."""

from __future__ import annotations

from typing import Any

from meshbench.backend import RunContext
from meshbench.config import BenchmarkConfig, NsmMesh
from meshbench.cost import CONTROL_PLANE, GATEWAY, TUNNEL
from meshbench.kube.cluster import Clusters
from meshbench.kube.metrics import SampleScope
from meshbench.kube.ops import Op, wait_op
from meshbench.meshes import coredns
from meshbench.meshes.common import (
    ROLES,
    CliFile,
    Component,
    ComponentMeshInstaller,
    api_wait_op,
    at_least,
    install_sequence,
    phase,
    support_check,
    uninstall_sequence,
)
from meshbench.meshes.nsm import components as component_builders
from meshbench.meshes.nsm import dns, resources, spire
from meshbench.meshes.nsm.resources import (
    DNS_PROBE_INTERVAL,
    INTERFACE,
    NSC_CONTAINER,
    NSM_CLUSTER,
    NSM_NAMESPACE,
    NSM_POD_APPS,
    SPIRE_CLAIM,
    SPIRE_CLAIM_FROM,
    VL3_APPS,
    VL3_NAMESPACE,
    VPP_CPU_LIMIT_REASON,
    WEBHOOK_APP,
    client_annotation,
    git_ref,
    joined_state,
    pods_all_ready,
    trust_domain,
)
from meshbench.workloads.kubernetes import FORTIO, NGINX, NGINX_PORT, WorkloadProfile


class NsmInstaller(ComponentMeshInstaller):
    name = "nsm"

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self.settings: NsmMesh = config.meshes.nsm
        self.timeouts = config.kubernetes.timeouts
        self.dns_interval: float = DNS_PROBE_INTERVAL  # between resolution and probe tries

    # ------------------------------------------------------------------ manifests
    def spire_files(self, role: str, version: str) -> list[CliFile]:
        return spire.spire_files(self.settings, role, version)

    def cluster_spiffe_ids(self, ctx: RunContext, role: str, version: str) -> list[dict[str, Any]]:
        return spire.cluster_spiffe_ids(ctx, role, version)

    def network_service(self, ctx: RunContext) -> dict[str, Any]:
        return resources.network_service(self.settings, ctx)

    def vpp_resources(self) -> dict[str, Any]:
        return resources.vpp_resources(
            self.config.kubernetes.proxy_resources, self.settings.vpp_cpu_limit
        )

    def nsm_kustomization(self, ctx: RunContext, role: str, version: str) -> list[CliFile]:
        return resources.nsm_kustomization(
            self.settings,
            ctx,
            role,
            version,
            self.load_balancer_policy(ctx, role),
            self.vpp_resources(),
        )

    def vl3_kustomization(self, ctx: RunContext, version: str) -> list[CliFile]:
        return resources.vl3_kustomization(self.settings, ctx, version, self.vpp_resources())

    def exposed_dns_service(
        self, ctx: RunContext, role: str, selector: dict[str, str]
    ) -> dict[str, Any]:
        return dns.exposed_dns_service(ctx, selector, self.load_balancer_policy(ctx, role))

    def saved_corefile_name(self, ctx: RunContext) -> str:
        return dns.saved_corefile_name(ctx)

    def _saved_corefile(self, ctx: RunContext, corefile: str) -> dict[str, Any]:
        return dns.saved_corefile(ctx, corefile)

    # ------------------------------------------------------------------ components
    def pair_components(self, ctx: RunContext) -> list[Component]:
        return component_builders.pair_components(self, ctx)

    def prepare_pair_ops(self, ctx: RunContext) -> list[Op]:
        return install_sequence(self.pair_components(ctx))

    def cleanup_pair_ops(self, ctx: RunContext) -> list[Op]:
        return uninstall_sequence(self.pair_components(ctx))

    def components(self, ctx: RunContext, iteration: int) -> list[Component]:
        return component_builders.iteration_components(self, ctx, iteration)

    # ------------------------------------------------------------------ readiness
    def _all_nsm_pods_ready_op(self, step_phase: str, role: str) -> Op:
        return api_wait_op(
            step_phase,
            role,
            f"every pod in {NSM_NAMESPACE} is ready",
            lambda cluster: pods_all_ready(
                cluster.api, NSM_NAMESPACE, (*NSM_POD_APPS, WEBHOOK_APP)
            ),
            self.timeouts.rollout,
            f"LIST pods in {NSM_NAMESPACE}: all Ready, and one each of app="
            f"{', '.join((*NSM_POD_APPS, WEBHOOK_APP))}; up to {self.timeouts.rollout:g}s, "
            f"then the iteration fails",
        )

    def ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        step_phase = phase(iteration, "wait_mesh_ready")
        timeouts = self.timeouts
        ops: list[Op] = []
        for role in ROLES:
            ops.append(self._all_nsm_pods_ready_op(step_phase, role))
            for service in ("nsmgr-proxy", "registry"):
                ops.append(
                    wait_op(
                        step_phase,
                        role,
                        f"service {NSM_NAMESPACE}/{service} has a LoadBalancer address",
                        lambda cluster, s=service: cluster.wait_load_balancer(
                            NSM_NAMESPACE, s, timeouts.load_balancer
                        ),
                        f"poll v1 Service {NSM_NAMESPACE}/{service} .status.loadBalancer"
                        f".ingress[0], up to {timeouts.load_balancer:g}s",
                        record_as=f"{service}_address_{role}",
                    )
                )
        ops.append(
            api_wait_op(
                step_phase,
                "server",
                f"vl3 endpoint and IPAM ready in {VL3_NAMESPACE}",
                lambda cluster: pods_all_ready(cluster.api, VL3_NAMESPACE, VL3_APPS),
                timeouts.rollout,
                f"LIST pods in {VL3_NAMESPACE}: all Ready, app=nse-vl3-vpp and app=vl3-ipam "
                f"among them; up to {timeouts.rollout:g}s",
            )
        )
        return ops

    def workload_ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        step_phase = phase(iteration, "wait_workloads_ready")
        namespace = ctx.resource_prefix
        ops: list[Op] = []
        for role, app in (("server", NGINX), ("client", FORTIO)):
            ops.append(
                api_wait_op(
                    step_phase,
                    role,
                    f"the {app} pod joined {self.settings.network_service} (NSM client sidecar "
                    f"injected and ready)",
                    lambda cluster, a=app: joined_state(cluster, namespace, a),
                    self.timeouts.rollout,
                    f"LIST pods app={app} in {namespace}: container {NSC_CONTAINER} present "
                    f"(the webhook acted on the annotation) and the pod Ready",
                )
            )
        for role in ROLES:
            ops.append(self._all_nsm_pods_ready_op(step_phase, role))
        return ops

    # ------------------------------------------------------------------ workloads
    def workload_profile(self, ctx: RunContext) -> WorkloadProfile:
        service = self.settings.network_service
        control_plane_apps = ",".join(app for app in NSM_POD_APPS if app != "forwarder-vpp")
        return WorkloadProfile(
            server_pod_annotations={
                "networkservicemesh.io": client_annotation(service, NGINX, None)
            },
            client_pod_annotations={
                "networkservicemesh.io": client_annotation(service, FORTIO, "server")
            },
            service_type="ClusterIP",
            protocol="ip",
            path=(
                f"fortio -> {INTERFACE} (kernel interface) -> client node's forwarder-vpp -> "
                f"{self.settings.inter_node_mechanism} tunnel node to node -> server node's "
                f"forwarder-vpp -> vl3 endpoint (VPP) -> nginx's {INTERFACE}; no per-request proxy"
            ),
            crosses_load_balancer=False,
            extra_sample_scopes=(
                SampleScope("client", NSM_NAMESPACE, "app=forwarder-vpp", TUNNEL),
                SampleScope("server", NSM_NAMESPACE, "app=forwarder-vpp", TUNNEL),
                # The vl3 endpoint routes between the clients and nginx.
                SampleScope("server", VL3_NAMESPACE, "app=nse-vl3-vpp", GATEWAY),
            ),
            control_plane_scopes=tuple(
                SampleScope(role, NSM_NAMESPACE, f"app in ({control_plane_apps})", CONTROL_PLANE)
                for role in ROLES
            ),
            # The injected NSM client sets up the interface; traffic does not pass it.
            container_roles=((NSC_CONTAINER, CONTROL_PLANE),),
        )

    def target_url(self, ctx: RunContext, clusters: Clusters) -> str:
        return f"http://{NGINX}.{self.settings.network_service}:{NGINX_PORT}/"

    def describe_target(self, ctx: RunContext) -> str:
        return f"http://{NGINX}.{self.settings.network_service}:{NGINX_PORT}/ (vl3 DNS)"

    # ------------------------------------------------------------------ records
    def warnings(self, ctx: RunContext) -> list[str]:
        found = [support_check(self.config, ctx, self.name).warning()]
        found.append(
            "NSM's data path is node to node: each node needs an ExternalIP the other "
            "cluster can reach (nsmgr-proxy maps InternalIP to ExternalIP), and "
            + (
                "WireGuard needs UDP 51820 open between the clusters' nodes"
                if self.settings.inter_node_mechanism == "wireguard"
                else "IPsec needs UDP 500 and 4500 open between the clusters' nodes"
            )
        )
        version = ctx.mesh_version or ""
        if (
            version
            and at_least(version, SPIRE_CLAIM_FROM)
            and not self.settings.spire_storage_class
        ):
            found.append(
                f"NSM {git_ref(version)}'s SPIRE server claims a 1Gi ReadWriteOnce volume "
                f"({SPIRE_CLAIM}) from the cluster's default StorageClass, checked before SPIRE "
                f"is applied"
                + (
                    ": EKS from 1.30 marks no StorageClass default and its EBS classes need "
                    "the aws-ebs-csi-driver add-on (with its IAM role), which meshbench does not "
                    "install; give the clusters one or set meshes.nsm.spire_storage_class"
                    if ctx.environment == "aws"
                    else ""
                )
            )
        return [warning for warning in found if warning]

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        mechanism = self.settings.inter_node_mechanism
        return {
            "mesh": self.name,
            "mesh_version": ctx.mesh_version,
            "version_profile": self.config.version_profile_name_for(ctx.environment),
            "kubernetes_support": support_check(self.config, ctx, self.name).record(),
            "topology": "interdomain vl3",
            "inter_node_mechanism": mechanism,
            "mechanism_setting": "NSM_MECHANISM_PRIORITY=ipsec on forwarder-vpp"
            if mechanism == "ipsec"
            else "NSM default for IP payload (WireGuard, UDP 51820)",
            "network_service": self.settings.network_service,
            "vl3_prefix": str(self.settings.vl3_prefix),
            "vl3_endpoint_cluster": "server",
            "trust_domains": {role: trust_domain(role) for role in ROLES},
            "dns_domains": {role: coredns.domain(NSM_CLUSTER[role]) for role in ROLES},
            "forwarder_resources": self.vpp_resources(),
            "vl3_endpoint_resources": self.vpp_resources(),
            "vpp_cpu_limit": self.settings.vpp_cpu_limit,
            "vpp_cpu_limit_reason": VPP_CPU_LIMIT_REASON,
            "spire_storage_class": self.settings.spire_storage_class or "the cluster's default",
            "spire_postgres_image": f"postgres:{self.settings.spire_postgres_tag}",
            "client_sidecar": f"{NSC_CONTAINER} (control only, upstream resources)",
        }


def build_installer(config: BenchmarkConfig) -> NsmInstaller:
    return NsmInstaller(config)

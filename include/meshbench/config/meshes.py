"""The meshes and their settings: Istio, Kuma and NSM on Kubernetes, local emulations."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from meshbench.config.common import DNS_LABEL, QUANTITY, StrictModel
from meshbench.config.versions import (
    RELEASE_LINE,
    KubernetesRange,
    istio_support,
    kuma_support,
    nsm_support,
)


class MeshBase(StrictModel):
    scope: Literal["local", "kubernetes", "any"]
    description: str = ""


class RoleNames(StrictModel):
    """One name per cluster role."""

    client: str = Field(pattern=DNS_LABEL)
    server: str = Field(pattern=DNS_LABEL)


class KubernetesMesh(MeshBase):
    scope: Literal["kubernetes"] = "kubernetes"
    supported_kubernetes: dict[str, KubernetesRange] = Field(
        default_factory=dict, description="Release line ('1.19') -> supported Kubernetes range."
    )

    @field_validator("supported_kubernetes")
    @classmethod
    def _release_lines(cls, ranges: dict[str, KubernetesRange]) -> dict[str, KubernetesRange]:
        for line in ranges:
            if not re.fullmatch(RELEASE_LINE, line):
                raise ValueError(f"release line {line!r} must look like '1.19'")
        return ranges


class IstioMesh(KubernetesMesh):
    """Istio multi-primary on different networks (mesh-recipes.md section 1)."""

    description: str = "Istio multi-primary."
    supported_kubernetes: dict[str, KubernetesRange] = Field(default_factory=istio_support)
    mesh_id: str = Field("mesh1", pattern=DNS_LABEL)
    cluster_names: RoleNames = RoleNames(client="cluster1", server="cluster2")
    networks: RoleNames = RoleNames(client="network1", server="network2")
    control_plane_profile: Literal["minimal", "default"] = Field(
        "minimal",
        description="istioctl profile of each control plane; 'default' also installs a "
        "north-south ingress gateway (one more load balancer, not on the measured path).",
    )
    remote_api_servers: dict[Literal["client", "server"], str] = Field(
        default_factory=dict,
        description="API server URL of a cluster as the other cluster's istiod reaches it "
        "(istioctl create-remote-secret --server); empty: the URL in its kubeconfig.",
    )


class KumaGlobalControlPlane(StrictModel):
    """Where Kuma's global control plane runs and what it stores its state in. The study
    co-located an in-memory global with a zone; the docs want a dedicated cluster or
    Postgres (mesh-recipes.md section 2.2, 2.10)."""

    cluster: Literal["client", "server"] = "server"
    namespace: str = Field("kuma-global", pattern=DNS_LABEL)
    store: Literal["memory", "postgres"] = "memory"
    postgres_conn_id: str | None = Field(
        None,
        description="Airflow connection (host, port, login, password, schema) for store "
        "'postgres'.",
    )

    @model_validator(mode="after")
    def _postgres_needs_connection(self) -> KumaGlobalControlPlane:
        if self.store == "postgres" and not self.postgres_conn_id:
            raise ValueError("store 'postgres' needs postgres_conn_id")
        return self


class KumaMesh(KubernetesMesh):
    """Kuma multi-zone without egress (mesh-recipes.md section 2)."""

    description: str = "Kuma multi-zone."
    supported_kubernetes: dict[str, KubernetesRange] = Field(default_factory=kuma_support)
    zone_names: RoleNames = RoleNames(client="zone1", server="zone2")
    global_control_plane: KumaGlobalControlPlane = KumaGlobalControlPlane()
    chart_repository: str = Field("https://kumahq.github.io/charts", pattern=r"^https://")


class NsmMesh(KubernetesMesh):
    """Network Service Mesh interdomain vl3 (mesh-recipes.md section 3)."""

    description: str = "Network Service Mesh vl3."
    supported_kubernetes: dict[str, KubernetesRange] = Field(default_factory=nsm_support)
    inter_node_mechanism: Literal["wireguard", "ipsec"] = Field(
        "wireguard",
        description="vl3 carries IP payload, so NSM picks WireGuard; 'ipsec' sets "
        "NSM_MECHANISM_PRIORITY=ipsec on the forwarders.",
    )
    deployments_repository: str = Field(
        "https://github.com/networkservicemesh/deployments-k8s", pattern=r"^https://"
    )
    network_service: str = Field("my-vl3-network", pattern=DNS_LABEL)
    vl3_prefix: ipaddress.IPv4Network = ipaddress.IPv4Network("172.16.0.0/16")
    spire_storage_class: str | None = Field(
        None,
        pattern=DNS_LABEL,
        description="StorageClass of the SPIRE server's 1Gi ReadWriteOnce claim spire-data "
        "(deployments-k8s from v1.12); empty: the cluster's default StorageClass. Either is "
        "checked before SPIRE is applied.",
    )
    spire_postgres_tag: str = Field(
        "17.6",
        pattern=r"^[\w.-]+$",
        description="Tag of the postgres image of upstream's examples/spire/postgres (from "
        "v1.14), which names no tag.",
    )
    vpp_cpu_limit: str | None = Field(
        None,
        pattern=QUANTITY,
        description="CPU limit of the VPP containers (forwarder-vpp, nse-vl3-vpp); empty: "
        "none. VPP puts NSM's interfaces in adaptive rx mode and polls them while traffic "
        "flows, so under load it uses its one main thread's core whatever the limit.",
    )


class Meshes(StrictModel):
    baseline: MeshBase = MeshBase(scope="any", description="No mesh: the floor.")
    envoy_mtls: MeshBase = Field(
        MeshBase(scope="local", description="Envoy sidecars with mTLS through a gateway."),
        alias="envoy-mtls",
    )
    wireguard: MeshBase = MeshBase(scope="local", description="A WireGuard L3 tunnel.")
    istio: IstioMesh = IstioMesh()
    kuma: KumaMesh = KumaMesh()
    nsm: NsmMesh = NsmMesh()

    def get(self, name: str) -> MeshBase:
        return getattr(self, name.replace("-", "_"))

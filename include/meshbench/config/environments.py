"""The settings every environment shares, and the ``local`` and ``existing`` environments."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, field_validator

from meshbench.config.common import (
    BENCHMARK_NETWORK,
    SLUG,
    Duration,
    Pool,
    StrictModel,
    check_known_mesh,
    check_pattern,
)


class EnvironmentBase(StrictModel):
    enabled: bool = True
    meshes: list[str] = Field(default_factory=list)
    pool: Pool
    paired_baseline: bool = Field(
        True,
        description="Measure the no-mesh path between the same clusters right before each of "
        "a mesh's measured runs (B1 M1 B2 M2 ...): the added latency and QPS ratio.",
    )
    paused_on_creation: bool = True
    load_profile: str | None = Field(None, description="Overrides defaults.load_profile.")
    version_profile: str | None = Field(None, description="Overrides defaults.version_profile.")
    schedule: str | None = Field(None, description="Overrides defaults.schedule.")
    kubernetes_version: str | None = None

    @field_validator("meshes")
    @classmethod
    def _known_meshes(cls, meshes: list[str]) -> list[str]:
        for mesh in meshes:
            check_known_mesh(mesh)
        if len(set(meshes)) != len(meshes):
            raise ValueError("lists a mesh twice")
        return meshes

    @field_validator("kubernetes_version")
    @classmethod
    def _minor_version(cls, version: str | None) -> str | None:
        return check_pattern(
            r"v?1\.\d{1,2}(\.\d+)?",
            version,
            "must be a Kubernetes version such as '1.28' or 'v1.28.3'",
        )


class LocalEnvironment(EnvironmentBase):
    """Two emulated clusters on this machine: network namespaces, or loopback without root."""

    network_mode: Literal["auto", "netns", "loopback"] = "auto"
    subnet: ipaddress.IPv4Network = BENCHMARK_NETWORK
    queue: str = Field("meshbench_local", pattern=SLUG)
    # Paused on creation like the others: a first start of Airflow runs nothing long.
    paused_on_creation: bool = True
    paired_baseline: bool = True
    cpu_placement: Literal["shared", "split", "none"] = Field(
        "shared",
        description="'shared': both clusters on one CPU (stable on small VMs: no cross-CPU "
        "wake-ups); 'split': client cluster on one CPU, server cluster on another; 'none': "
        "the scheduler decides. Recorded with every result.",
    )
    status_codes: Literal["counted", "inferred"] = Field(
        "inferred",
        description="'inferred': wrk counts answers with a code >= 400 (their codes are not "
        "kept); the rest are 200s, the only code below 400 the generated configs answer, "
        "checked against the first hop's own counter. 'counted': a Lua callback counts every "
        "code (about 3.5 % fewer QPS on the fastest path at c=1).",
    )
    ready_timeout: Duration = Field(
        30.0, description="Bounded wait for each component and the probe through the path."
    )

    @field_validator("subnet", mode="before")
    @classmethod
    def _benchmark_range(cls, value: Any) -> Any:
        try:
            network = ipaddress.IPv4Network(str(value), strict=False)
        except ValueError as exc:
            raise ValueError(f"is not an IPv4 network: {exc}") from None
        if not network.subnet_of(BENCHMARK_NETWORK):
            raise ValueError(f"must lie inside the benchmarking range {BENCHMARK_NETWORK}")
        if network.prefixlen > 24:
            raise ValueError("must be at least a /24 so clusters and tunnels get addresses")
        return network


class ExistingEnvironment(EnvironmentBase):
    """Two clusters someone already runs, reached through Airflow kubernetes connections."""

    client_conn_id: str = "meshbench_client_cluster"
    server_conn_id: str = "meshbench_server_cluster"
    paused_on_creation: bool = True
    load_balancer_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations for every LoadBalancer Service of a run, meshbench's and the "
        "meshes' (e.g. the internet-facing scheme on EKS clusters running the AWS Load "
        "Balancer Controller). None by default: Services stay as rendered.",
    )
    egress_cidrs: dict[Literal["client", "server"], list[str]] = Field(
        default_factory=dict,
        description="The addresses each cluster's traffic leaves from. Set for both clusters, "
        "every LoadBalancer Service of a run admits only the cluster(s) that use it "
        "(loadBalancerSourceRanges); unset, the environment sets no limit.",
    )

    @field_validator("egress_cidrs")
    @classmethod
    def _egress_networks(cls, cidrs: dict[str, list[str]]) -> dict[str, list[str]]:
        if cidrs and set(cidrs) != {"client", "server"}:
            raise ValueError("must list both clusters (client and server) or neither")
        for role, networks in cidrs.items():
            if not networks:
                raise ValueError(f"{role}: list at least one network")
            for cidr in networks:
                try:
                    network = ipaddress.ip_network(cidr)
                except ValueError as exc:
                    raise ValueError(f"{role}: {cidr!r} is not a network: {exc}") from None
                if network.prefixlen == 0:
                    raise ValueError(
                        f"{role}: {cidr} admits everyone; leave egress_cidrs out to set no limit"
                    )
        return cidrs

"""Names, addresses, ports and CPUs of one local run, derived from the run's prefix.

Everything here is deterministic for a run (apart from free ports in loopback mode, which
are chosen once and kept in the state file), so every task process finds the same
resources without sharing memory.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

NetworkMode = Literal["netns", "loopback"]
CpuPlacement = Literal["shared", "split", "none"]

# Ports inside the namespaces, shaped after the ones Istio uses for the same roles.
NETNS_PORTS = {
    "nginx": 8080,
    "nginx_status": 8081,
    "client_sidecar": 15001,
    "client_sidecar_admin": 15000,
    "gateway": 15443,
    "gateway_admin": 15010,
    "server_sidecar": 15006,
    "server_sidecar_admin": 15020,
    "wireguard_client": 51820,
    "wireguard_server": 51821,
}
LOOPBACK_FIRST_OCTET = 127


def short_id(slug: str) -> str:
    """Eight characters naming interfaces: Linux allows 15 characters per interface name."""
    return slug if len(slug) <= 8 else hashlib.sha256(slug.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Topology:
    prefix: str
    network_mode: NetworkMode
    client_address: str
    server_address: str
    underlay_prefix_length: int
    tunnel_client_address: str
    tunnel_server_address: str
    tunnel_prefix_length: int
    ports: dict[str, int]
    cpu_placement: CpuPlacement
    cpus: dict[str, list[int] | None] = field(default_factory=dict)

    # ---------------------------------------------------------------- names

    @property
    def interface_id(self) -> str:
        return short_id(self.prefix.removeprefix("mb-"))

    def namespace(self, cluster: str) -> str | None:
        return f"{self.prefix}-{cluster}" if self.network_mode == "netns" else None

    @property
    def namespaces(self) -> list[str]:
        return [name for name in (self.namespace("client"), self.namespace("server")) if name]

    def veth(self, cluster: str) -> str:
        return f"mb-{self.interface_id}-{cluster[0]}"

    def wireguard_interface(self, cluster: str) -> str:
        # wireguard-go's control sockets (/var/run/wireguard/<name>.sock) are shared by all
        # namespaces, so the two ends of one tunnel must have different names.
        return f"mb-{self.interface_id}-wg{cluster[0]}"

    @property
    def interfaces(self) -> list[str]:
        return [
            self.veth("client"),
            self.veth("server"),
            self.wireguard_interface("client"),
            self.wireguard_interface("server"),
        ]

    # ------------------------------------------------------------ addresses

    def local_host(self, cluster: str) -> str:
        """Where a cluster's private listeners (admin, stub_status, sidecars) bind."""
        if self.network_mode == "netns":
            return "127.0.0.1"
        return self.client_address if cluster == "client" else self.server_address

    @property
    def nginx_listen(self) -> str:
        # In its own namespace nginx answers on every address: the veth address (direct
        # path) and the WireGuard tunnel address alike.
        host = "0.0.0.0" if self.network_mode == "netns" else self.server_address
        return f"{host}:{self.ports['nginx']}"

    @property
    def direct_url(self) -> str:
        """The URL of nginx without a mesh in between; each data plane knows its own."""
        return f"http://{self.server_address}:{self.ports['nginx']}/"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Topology:
        return cls(**data)


def _loopback_pair(prefix: str) -> tuple[str, str]:
    digest = hashlib.sha256(prefix.encode()).digest()
    # 127.0.0.0/16 is left alone: other services on the machine live there.
    second = 1 + digest[0] % 254
    third = digest[1]
    base = f"{LOOPBACK_FIRST_OCTET}.{second}.{third}"
    return f"{base}.1", f"{base}.2"


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def _cpus(placement: CpuPlacement) -> dict[str, list[int] | None]:
    available = sorted(os.sched_getaffinity(0))
    if placement == "none":
        return {"client": None, "server": None}
    if placement == "split" and len(available) >= 2:
        return {"client": [available[0]], "server": [available[1]]}
    return {"client": [available[0]], "server": [available[0]]}


def plan_topology(
    prefix: str,
    network_mode: NetworkMode,
    subnet: ipaddress.IPv4Network,
    cpu_placement: CpuPlacement,
) -> Topology:
    """Addresses from the benchmarking subnet: the lower half for the link between the
    clusters, the upper half for tunnels (so inner and outer addresses never mix)."""
    underlay_half, tunnel_half = subnet.subnets(new_prefix=subnet.prefixlen + 1)
    underlay = next(underlay_half.subnets(new_prefix=30))
    tunnel = next(tunnel_half.subnets(new_prefix=30))
    underlay_hosts = list(underlay.hosts())
    tunnel_hosts = list(tunnel.hosts())
    cpus = _cpus(cpu_placement)
    # With a single CPU available "split" cannot be honoured; record what actually ran.
    effective_placement: CpuPlacement = (
        "shared" if cpu_placement == "split" and cpus["client"] == cpus["server"] else cpu_placement
    )
    if network_mode == "netns":
        client_address, server_address = str(underlay_hosts[0]), str(underlay_hosts[1])
        ports = dict(NETNS_PORTS)
    else:
        client_address, server_address = _loopback_pair(prefix)
        client_side = {"client_sidecar", "client_sidecar_admin", "wireguard_client"}
        ports = {
            role: _free_port(client_address if role in client_side else server_address)
            for role in NETNS_PORTS
        }
    return Topology(
        prefix=prefix,
        network_mode=network_mode,
        client_address=client_address,
        server_address=server_address,
        underlay_prefix_length=underlay.prefixlen,
        tunnel_client_address=str(tunnel_hosts[0]),
        tunnel_server_address=str(tunnel_hosts[1]),
        tunnel_prefix_length=tunnel.prefixlen,
        ports=ports,
        cpu_placement=effective_placement,
        cpus=cpus,
    )

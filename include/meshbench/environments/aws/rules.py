"""Node-to-node port rules a mesh needs between the two clusters."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from meshbench.backend import StepFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PortRule:
    """One ingress rule a mesh needs between the nodes of the two clusters."""

    protocol: str  # "tcp" or "udp"
    from_port: int
    to_port: int
    purpose: str

    def label(self) -> str:
        ports = str(self.from_port)
        if self.to_port != self.from_port:
            ports += f"-{self.to_port}"
        return f"{self.protocol}/{ports}"


# Node-to-node traffic between the clusters (mesh-recipes.md sections 3.8 and 4.6). Every
# other cross-cluster path goes through LoadBalancer Services, whose node rules the in-tree
# cloud provider manages itself; their sources are limited with loadBalancerSourceRanges.
NODE_TO_NODE_RULES: dict[str, tuple[PortRule, ...]] = {
    "baseline": (),
    "istio": (),
    "kuma": (),
    "nsm": (
        PortRule(
            "udp",
            51820,
            51820,
            "NSM vl3 data path: WireGuard between forwarders (the default remote "
            "mechanism for IP payload)",
        ),
    ),
}
# NSM with NSM_MECHANISM_PRIORITY=ipsec (meshes.nsm.inter_node_mechanism: ipsec).
NSM_IPSEC_RULES = (
    PortRule("udp", 4500, 4500, "NSM vl3 data path: IPsec (IKEv2 and ESP in UDP)"),
    PortRule("udp", 500, 500, "NSM vl3 data path: IPsec IKE"),
)
# Meshes whose data path addresses the other cluster's nodes directly, so nodes need
# public addresses (NSM interdomain maps node InternalIP to ExternalIP).
NEEDS_NODE_REACHABILITY = frozenset({"nsm"})


def node_rules(mesh: str, nsm_mechanism: str = "wireguard") -> tuple[PortRule, ...]:
    """The node-to-node ports ``mesh`` needs between the clusters."""
    if mesh == "nsm" and nsm_mechanism == "ipsec":
        return NSM_IPSEC_RULES
    return NODE_TO_NODE_RULES.get(mesh, ())


def ip_permissions(
    rules: tuple[PortRule, ...] | list[PortRule], sources: list[str], note: str
) -> list[dict[str, Any]]:
    """EC2 ``IpPermissions`` opening ``rules`` to ``sources`` (CIDRs); refuses 0.0.0.0/0."""
    for cidr in sources:
        if ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
            raise StepFailed(f"refusing to open {note} to {cidr}: sources must be the peer's nodes")
    return [
        {
            "IpProtocol": rule.protocol,
            "FromPort": rule.from_port,
            "ToPort": rule.to_port,
            "IpRanges": [
                {"CidrIp": cidr, "Description": f"{note}: {rule.label()}"[:255]} for cidr in sources
            ],
        }
        for rule in rules
    ]


def subnet_blocks(vpc: ipaddress.IPv4Network) -> dict[str, str]:
    """The VPC split in four equal subnets: two public, two private."""
    public1, public2, private1, private2 = vpc.subnets(prefixlen_diff=2)
    return {
        "PublicSubnet01Block": str(public1),
        "PublicSubnet02Block": str(public2),
        "PrivateSubnet01Block": str(private1),
        "PrivateSubnet02Block": str(private2),
    }

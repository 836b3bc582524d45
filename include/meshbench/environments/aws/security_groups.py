"""Security-group rules between the clusters' nodes, and waiting for nodes."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from meshbench.backend import RunContext, StepFailed
from meshbench.environments.aws.clusters import AwsClusters
from meshbench.environments.aws.constants import (
    EKS_CLUSTER_TAG,
    EKS_NODE_CLUSTER_TAG,
    KUBERNETES_CLUSTER_TAG,
    PERMISSION_DUPLICATE,
)
from meshbench.environments.aws.rules import (
    PortRule,
    ip_permissions,
    node_rules,
)
from meshbench.environments.provider import (
    ROLES,
)
from meshbench.kube.cluster import Clusters
from meshbench.kube.waits import Readiness

log = logging.getLogger(__name__)


class AwsSecurityGroups(AwsClusters):
    # -- prepare: security groups ------------------------------------------------------
    def cluster_security_group(self, cluster: str) -> str:
        described = self._describe_cluster(cluster)
        if described is None:
            raise StepFailed(f"EKS cluster {cluster} does not exist")
        group = (described.get("resourcesVpcConfig") or {}).get("clusterSecurityGroupId")
        if group:
            return group
        groups = self.ec2.describe_security_groups(
            Filters=[{"Name": f"tag:{EKS_CLUSTER_TAG}", "Values": [cluster]}]
        )["SecurityGroups"]
        if not groups:
            raise StepFailed(f"EKS cluster {cluster} has no cluster security group yet")
        return groups[0]["GroupId"]

    def node_addresses(self, cluster: str) -> dict[str, str | None]:
        """Public IPv4 address of each running node of ``cluster`` (None: no public one)."""
        reservations = self.ec2.describe_instances(
            Filters=[
                {"Name": f"tag:{EKS_NODE_CLUSTER_TAG}", "Values": [cluster]},
                {"Name": "instance-state-name", "Values": ["running"]},
            ]
        )["Reservations"]
        return {
            instance["InstanceId"]: instance.get("PublicIpAddress")
            for reservation in reservations
            for instance in reservation["Instances"]
        }

    def nat_addresses(self, vpc_id: str) -> list[str]:
        gateways = self.ec2.describe_nat_gateways(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "state", "Values": ["available"]},
            ]
        )["NatGateways"]
        return sorted(
            address["PublicIp"]
            for gateway in gateways
            for address in gateway.get("NatGatewayAddresses", [])
            if address.get("PublicIp")
        )

    def egress_cidrs(self, cluster: str, *, need_public_nodes: bool) -> list[str]:
        """The addresses traffic from ``cluster``'s nodes comes from, as /32s."""
        nodes = self.node_addresses(cluster)
        if not nodes:
            raise StepFailed(f"EKS cluster {cluster} has no running nodes")
        public = sorted({address for address in nodes.values() if address})
        if len(public) == len(nodes):
            return [f"{address}/32" for address in public]
        if need_public_nodes:
            lacking = sorted(node for node, address in nodes.items() if not address)
            raise StepFailed(
                f"nodes {', '.join(lacking)} of {cluster} have no public address, but the mesh "
                f"needs node-to-node reachability; use public subnets (node_placement: public)"
            )
        nat = self.nat_addresses(self.describe_network().vpc_id)
        if not nat:
            raise StepFailed(f"nodes of {cluster} have neither public addresses nor a NAT gateway")
        return [f"{address}/32" for address in nat]

    def node_rules(self, ctx: RunContext) -> tuple[PortRule, ...]:
        nsm = getattr(self.config.meshes, "nsm", None)
        return node_rules(ctx.mesh, getattr(nsm, "inter_node_mechanism", "wireguard"))

    def peer_role(self, role: str) -> str:
        return "server" if role == "client" else "client"

    def open_security_groups(self, ctx: RunContext) -> dict[str, Any]:
        """Authorize the mesh's node-to-node ports on each cluster's security group, from the
        other cluster's node addresses only. Repeating it is harmless."""
        rules = self.node_rules(ctx)
        opened: dict[str, Any] = {}
        if not rules:
            log.info("mesh %s needs no node-to-node rules (it crosses via LBs)", ctx.mesh)
            return {"rules": opened}
        for role in ROLES:
            cluster = self.cluster_name(ctx, role)
            peer = self.cluster_name(ctx, self.peer_role(role))
            group = self.cluster_security_group(cluster)
            sources = self.egress_cidrs(peer, need_public_nodes=True)
            permissions = ip_permissions(rules, sources, f"meshbench {ctx.slug} from {peer}")
            for permission in permissions:
                try:
                    self.ec2.authorize_security_group_ingress(
                        GroupId=group, IpPermissions=[permission]
                    )
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != PERMISSION_DUPLICATE:
                        raise StepFailed(f"security group {group} of {cluster}: {exc}") from None
                log.info(
                    "security group %s of %s: %s/%s-%s open to %s",
                    group,
                    cluster,
                    permission["IpProtocol"],
                    permission["FromPort"],
                    permission["ToPort"],
                    ", ".join(sources),
                )
            opened[role] = {
                "security_group": group,
                "ports": [rule.label() for rule in rules],
                "sources": sources,
            }
        return {"rules": opened}

    def wait_nodes_ready(self, ctx: RunContext) -> dict[str, Any]:
        """Every node of both clusters registered and Ready (node groups can be ACTIVE a
        little before their kubelets report Ready)."""
        wanted = self.env.node_count
        timeout = self.env.waiter_delay * self.env.waiter_max_attempts
        found: dict[str, int] = {}

        def state(api: Any) -> Readiness:
            nodes = api.list("v1", "Node")
            ready = [
                node
                for node in nodes
                if any(
                    condition.get("type") == "Ready" and condition.get("status") == "True"
                    for condition in (node.get("status") or {}).get("conditions") or []
                )
            ]
            if len(ready) < wanted:
                return Readiness(False, (f"{len(ready)} of {wanted} node(s) Ready",))
            return Readiness(True, (), len(ready))

        with Clusters(
            {role: self.access(ctx, role) for role in ROLES},
            self.runner,
            self.api_factory,
            poll_interval=float(self.env.waiter_delay),
        ) as clusters:
            for role in ROLES:
                found[role] = clusters[role].wait(state, f"{wanted} node(s) Ready", timeout)
        return {"nodes_ready": found}

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        opened = self.open_security_groups(ctx)
        return {**opened, **self.wait_nodes_ready(ctx)}

    def delete_orphan_security_groups(self, clusters: list[str]) -> list[str]:
        """Security groups the in-tree provider made for load balancers (``k8s-elb-*``) of
        deleted clusters; the EKS cluster security group itself is EKS's to delete."""
        deleted = []
        for cluster in clusters:
            key = KUBERNETES_CLUSTER_TAG.format(name=cluster)
            groups = self.ec2.describe_security_groups(
                Filters=[{"Name": "tag-key", "Values": [key]}]
            )["SecurityGroups"]
            for group in groups:
                tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
                if EKS_CLUSTER_TAG in tags:
                    continue
                try:
                    self.ec2.delete_security_group(GroupId=group["GroupId"])
                    deleted.append(group["GroupId"])
                    log.info("deleted security group %s left by %s", group["GroupId"], cluster)
                except Exception as exc:  # DependencyViolation until ENIs are gone
                    log.warning("could not delete security group %s: %s", group["GroupId"], exc)
        return deleted

"""Security-group rules between the clusters' nodes, and waiting for nodes."""

from __future__ import annotations

import functools
import json
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
from meshbench.environments.aws.steps import PREPARE, states_a_fact
from meshbench.environments.provider import (
    ROLES,
)
from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, call_op
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
        """Authorize the mesh's node-to-node ports on both clusters' security groups (what
        prepare_pair's security-group steps do). Repeating it is harmless."""
        rules = self.node_rules(ctx)
        if not rules:
            log.info("mesh %s needs no node-to-node rules (it crosses via LBs)", ctx.mesh)
            return {"rules": {}}
        return {"rules": {role: self.open_security_group(ctx, role, rules) for role in ROLES}}

    def open_security_group(
        self, ctx: RunContext, role: str, rules: tuple[PortRule, ...]
    ) -> dict[str, Any]:
        """Authorize ``rules`` on the ``role`` cluster's security group, from the other
        cluster's node addresses only."""
        cluster = self.cluster_name(ctx, role)
        peer = self.cluster_name(ctx, self.peer_role(role))
        group = self.cluster_security_group(cluster)
        sources = self.egress_cidrs(peer, need_public_nodes=True)
        permissions = ip_permissions(rules, sources, f"meshbench {ctx.slug} from {peer}")
        for permission in permissions:
            try:
                self.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[permission])
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
        return {
            "security_group": group,
            "ports": [rule.label() for rule in rules],
            "sources": sources,
        }

    def security_group_ops(self, ctx: RunContext, opened: dict[str, Any]) -> list[Op]:
        """One op per cluster opening the mesh's node-to-node ports (recorded in ``opened``),
        or a note that the mesh needs none."""
        rules = self.node_rules(ctx)
        if not rules:
            return [
                call_op(
                    PREPARE,
                    None,
                    "api",
                    f"No node-to-node security-group rules: {ctx.mesh} crosses between the "
                    f"clusters through LoadBalancer Services only",
                    states_a_fact,
                )
            ]
        ops = []
        for role in ROLES:
            cluster = self.cluster_name(ctx, role)
            peer = self.cluster_name(ctx, self.peer_role(role))
            # The plan cannot know the peer's addresses; the op looks them up when it runs.
            planned = [
                {
                    "IpProtocol": rule.protocol,
                    "FromPort": rule.from_port,
                    "ToPort": rule.to_port,
                    "IpRanges": [{"CidrIp": f"<public IPv4 of each node of {peer}>/32"}],
                }
                for rule in rules
            ]

            def open_group(clusters: Clusters, role: str = role) -> None:
                opened[role] = self.open_security_group(ctx, role, rules)

            ops.append(
                call_op(
                    PREPARE,
                    role,
                    "api",
                    f"Open {', '.join(rule.label() for rule in rules)} on {cluster}'s cluster "
                    f"security group to {peer}'s nodes only ("
                    + "; ".join(rule.purpose for rule in rules)
                    + ")",
                    open_group,
                    f"ec2.authorize_security_group_ingress(GroupId=<clusterSecurityGroupId of "
                    f"{cluster}>, IpPermissions={json.dumps(planned, indent=2)})\n"
                    f"InvalidPermission.Duplicate counts as done",
                )
            )
        return ops

    def node_wait_ops(self, ctx: RunContext, ready: dict[str, int]) -> list[Op]:
        """Every node of each cluster registered and Ready (node groups can be ACTIVE a
        little before their kubelets report Ready); the counts go into ``ready``."""
        wanted = self.env.node_count
        timeout = self.env.waiter_delay * self.env.waiter_max_attempts

        def state(api: Any) -> Readiness:
            nodes = api.list("v1", "Node")
            found = [
                node
                for node in nodes
                if any(
                    condition.get("type") == "Ready" and condition.get("status") == "True"
                    for condition in (node.get("status") or {}).get("conditions") or []
                )
            ]
            if len(found) < wanted:
                return Readiness(False, (f"{len(found)} of {wanted} node(s) Ready",))
            return Readiness(True, (), len(found))

        def wait(clusters: Clusters, role: str) -> None:
            ready[role] = clusters[role].wait(state, f"{wanted} node(s) Ready", timeout)

        return [
            call_op(
                PREPARE,
                role,
                "wait",
                f"Wait until {wanted} node(s) of {self.cluster_name(ctx, role)} are Ready",
                functools.partial(wait, role=role),
                f"poll LIST v1 Node every {self.env.waiter_delay}s, up to {timeout}s",
            )
            for role in ROLES
        ]

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

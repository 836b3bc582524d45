"""The aws environment's plan steps."""

from __future__ import annotations

import json
import logging

from meshbench.backend import RunContext, Step
from meshbench.environments.aws.constants import (
    CLUSTER_ADMIN_POLICY,
    EKS_CLUSTER_TAG,
    KUBERNETES_CLUSTER_TAG,
    LBC_CLUSTER_TAG,
    LOAD_BALANCER_ANNOTATIONS,
    TAG_CREATED_AT,
    TAG_KEEP,
    TAG_KIND,
    TAG_MANAGED,
)
from meshbench.environments.aws.deletion import AwsDeletion
from meshbench.environments.aws.network import NetworkStack
from meshbench.environments.provider import (
    ROLES,
    utcnow,
)

log = logging.getLogger(__name__)


class AwsPlan(AwsDeletion):
    # -- plan --------------------------------------------------------------------------
    def _placeholder_network(self) -> NetworkStack:
        stack = self.env.network_stack_name
        return NetworkStack(
            name=stack,
            vpc_id=f"<VpcId output of {stack}>",
            public_subnets=(f"<{stack} public subnet 1>", f"<{stack} public subnet 2>"),
            private_subnets=(
                (f"<{stack} private subnet 1>", f"<{stack} private subnet 2>")
                if self.env.private_subnets
                else ()
            ),
            cluster_role_arn=f"<ClusterRoleArn output of {stack}>",
            node_role_arn=f"<NodeRoleArn output of {stack}>",
        )

    def plan_create(self, ctx: RunContext) -> list[Step]:
        env = self.env
        network = self._placeholder_network()
        stack_call = {
            "StackName": env.network_stack_name,
            "TemplateBody": "<include/meshbench/environments/aws_network.yaml>",
            "Parameters": {
                p["ParameterKey"]: p["ParameterValue"] for p in self.network_parameters()
            },
            "Capabilities": ["CAPABILITY_IAM"],
            "Tags": {TAG_MANAGED: "true", TAG_KEEP: "true", TAG_KIND: "network"},
        }
        waiter = f"(delay {env.waiter_delay}s, at most {env.waiter_max_attempts} polls)"
        steps = [
            Step(
                "create_clusters",
                "api",
                f"Use the shared network stack {env.network_stack_name} in {env.region}, or "
                f"create it once (later runs reuse it)",
                f"cloudformation.describe_stacks(StackName={env.network_stack_name!r})\n"
                f"if missing: cloudformation.create_stack({json.dumps(stack_call, indent=2)})\n"
                f"waiter stack_create_complete {waiter}",
            )
        ]
        moment = utcnow()
        for role in ROLES:
            request = self.cluster_request(ctx, role, network, moment)
            request["tags"][TAG_CREATED_AT] = "<creation time, UTC>"
            steps.append(
                Step(
                    "create_clusters",
                    "api",
                    f"Create EKS cluster {request['name']} (adopted when an earlier try of "
                    f"this run made it; requested before waiting for either cluster)",
                    f"EksHook.create_cluster(**{json.dumps(request, indent=2)})",
                    cluster=role,
                )
            )
        names = ", ".join(self.cluster_names(ctx).values())
        steps.append(
            Step(
                "create_clusters",
                "wait",
                f"Wait until both clusters are ACTIVE: {names}",
                f"eks waiter cluster_active {waiter}",
            )
        )
        if env.admin_principal_arns:
            steps.append(
                Step(
                    "create_clusters",
                    "api",
                    "Access entries for the extra admin principals",
                    "\n".join(
                        f"eks.create_access_entry(principalArn={arn!r}); "
                        f"eks.associate_access_policy(policyArn={CLUSTER_ADMIN_POLICY!r}, "
                        f"accessScope={{'type': 'cluster'}})"
                        for arn in env.admin_principal_arns
                    ),
                )
            )
        for role in ROLES:
            request = self.nodegroup_request(ctx, role, network, moment)
            request["tags"][TAG_CREATED_AT] = "<creation time, UTC>"
            _subnets, why = self.node_subnets(ctx.mesh, network)
            steps.append(
                Step(
                    "create_clusters",
                    "api",
                    f"Create managed node group {request['nodegroupName']}: {env.node_count} x "
                    f"{env.instance_type}, {env.ami_type}, {env.capacity_type}, in {why}",
                    f"EksHook.create_nodegroup(**{json.dumps(request, indent=2)})",
                    cluster=role,
                )
            )
        steps.append(
            Step(
                "create_clusters",
                "wait",
                "Wait until both node groups are ACTIVE",
                f"eks waiter nodegroup_active {waiter}",
            )
        )
        return steps

    def plan_prepare(self, ctx: RunContext) -> list[Step]:
        steps = [
            Step(
                "prepare_pair",
                "api",
                "Kubeconfig per task: EksHook.generate_config_file_with_credentials (0600 "
                "temporary kubeconfig and credentials files, removed when the task ends)",
            )
        ]
        timeout = self.env.waiter_delay * self.env.waiter_max_attempts
        steps += [
            Step(
                "prepare_pair",
                "wait",
                f"Wait until {self.env.node_count} node(s) of {self.cluster_name(ctx, role)} are "
                f"Ready",
                f"poll LIST v1 Node every {self.env.waiter_delay}s, up to {timeout}s",
                cluster=role,
            )
            for role in ROLES
        ]
        rules = self.node_rules(ctx)
        for role in ROLES:
            cluster = self.cluster_name(ctx, role)
            peer = self.cluster_name(ctx, self.peer_role(role))
            if not rules:
                continue
            sources = [f"<public IPv4 of each node of {peer}>/32"]
            permissions = [
                {
                    "IpProtocol": rule.protocol,
                    "FromPort": rule.from_port,
                    "ToPort": rule.to_port,
                    "IpRanges": [{"CidrIp": source} for source in sources],
                }
                for rule in rules
            ]
            steps.append(
                Step(
                    "prepare_pair",
                    "api",
                    f"Open {', '.join(rule.label() for rule in rules)} on {cluster}'s cluster "
                    f"security group to {peer}'s nodes only ("
                    + "; ".join(rule.purpose for rule in rules)
                    + ")",
                    f"ec2.authorize_security_group_ingress(GroupId=<clusterSecurityGroupId of "
                    f"{cluster}>, IpPermissions={json.dumps(permissions, indent=2)})\n"
                    f"InvalidPermission.Duplicate counts as done",
                    cluster=role,
                )
            )
        if not rules:
            steps.append(
                Step(
                    "prepare_pair",
                    "api",
                    f"No node-to-node security-group rules: {ctx.mesh} crosses between the "
                    f"clusters through LoadBalancer Services only",
                )
            )
        annotations = ", ".join(f"{k}: {v}" for k, v in LOAD_BALANCER_ANNOTATIONS.items())
        for role in ROLES:
            peer = self.cluster_name(ctx, self.peer_role(role))
            steps.append(
                Step(
                    "prepare_pair",
                    "manifest",
                    f"Every LoadBalancer Service in {self.cluster_name(ctx, role)} is "
                    f"internet-facing and reachable from {peer}'s node addresses only (one "
                    f"that both clusters use, Kuma's global KDS, from its own cluster's too); "
                    f"the steps that create each Service show these settings",
                    f"metadata.annotations: {annotations}\n"
                    f"spec.loadBalancerSourceRanges: [<public IPv4 of each node of {peer}>/32]",
                    cluster=role,
                )
            )
        return steps

    def plan_delete(self, ctx: RunContext) -> list[Step]:
        env = self.env
        names = list(self.cluster_names(ctx).values())
        tags = " or ".join(
            [f"{KUBERNETES_CLUSTER_TAG.format(name='<cluster>')}", f"{LBC_CLUSTER_TAG}=<cluster>"]
        )
        waiter = f"(delay {env.waiter_delay}s, at most {env.waiter_max_attempts} polls)"
        return [
            Step(
                "delete_clusters",
                "wait",
                f"Wait up to {env.load_balancer_wait:g}s for the load balancers of "
                f"{', '.join(names)} to go (they outlive clusters and block VPC deletion); "
                f"delete those still there",
                f"elb.describe_load_balancers + describe_tags, elbv2.describe_load_balancers + "
                f"describe_tags: tag {tags}",
            ),
            Step(
                "delete_clusters",
                "api",
                "Delete the node groups of both clusters, then wait",
                "eks.delete_nodegroup(clusterName=..., nodegroupName=...) for every node group\n"
                f"EksHook waiter all_nodegroups_deleted {waiter}",
            ),
            Step(
                "delete_clusters",
                "api",
                f"Delete both clusters ({', '.join(names)}), then wait; record cluster-minutes",
                f"eks.delete_cluster(name=...); eks waiter cluster_deleted {waiter}",
            ),
            Step(
                "delete_clusters",
                "api",
                "Delete security groups Kubernetes made for load balancers of these clusters "
                "(best effort)",
                "ec2.delete_security_group for groups tagged kubernetes.io/cluster/<cluster> "
                f"without {EKS_CLUSTER_TAG}",
            ),
            Step(
                "delete_clusters",
                "api",
                f"Keep the shared network stack {env.network_stack_name} "
                f"({TAG_KEEP}=true; the reaper spares it)",
            ),
        ]

    def plan_warnings(self, ctx: RunContext) -> list[str]:
        # Mesh-version support ranges are the installers' warnings (meshes.*).
        warnings = []
        if self.env.endpoint_public_access_cidrs == ["0.0.0.0/0"]:
            warnings.append(
                "EKS API endpoints are public (IAM-authenticated; Istio multi-primary needs each "
                "istiod to reach the other cluster's API). Narrow them with "
                "endpoint_public_access_cidrs."
            )
        return warnings

    # -- reaper ------------------------------------------------------------------------

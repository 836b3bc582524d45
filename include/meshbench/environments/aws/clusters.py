"""Creating the run's two EKS clusters and their node groups."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from meshbench.backend import RunContext, StepFailed
from meshbench.environments.aws.constants import (
    CLUSTER_ADMIN_POLICY,
    ENVIRONMENT,
    RESOURCE_IN_USE,
    TAG_CREATED_AT,
    TAG_DAG_ID,
    TAG_ENVIRONMENT,
    TAG_MANAGED,
    TAG_MESH,
    TAG_ROLE,
    TAG_RUN_ID,
    TAG_SLUG,
)
from meshbench.environments.aws.network import AwsNetwork, NetworkStack
from meshbench.environments.aws.steps import CREATE, run_without_clusters
from meshbench.environments.provider import (
    ROLES,
    isoformat,
    tag_value,
    utcnow,
)
from meshbench.kube.ops import Op, call_op

log = logging.getLogger(__name__)

# The plan is rendered before the clusters exist: their creation-time tag is shown as this.
PLANNED_CREATION_TIME = "<creation time, UTC>"


@dataclass
class ClusterCreation:
    """What one create_clusters task learns as its ops run: the network stack (known once
    the first op has found or made it) and each cluster's record for the task's result."""

    created_at: datetime
    network: NetworkStack | None = None
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def use_network(self, network: NetworkStack) -> None:
        self.network = network

    def require_network(self) -> NetworkStack:
        if self.network is None:
            raise StepFailed("the network stack step has not run: the clusters have no subnets")
        return self.network


class AwsClusters(AwsNetwork):
    # -- requests ----------------------------------------------------------------------
    def resource_tags(self, ctx: RunContext, role: str, created_at: datetime) -> dict[str, str]:
        return {
            TAG_MANAGED: "true",
            TAG_ENVIRONMENT: ENVIRONMENT,
            TAG_DAG_ID: tag_value(ctx.dag_id),
            TAG_RUN_ID: tag_value(ctx.run_id),
            TAG_SLUG: ctx.slug,
            TAG_ROLE: role,
            TAG_MESH: ctx.mesh,
            TAG_CREATED_AT: isoformat(created_at),
        }

    def cluster_request(
        self, ctx: RunContext, role: str, network: NetworkStack, created_at: datetime
    ) -> dict[str, Any]:
        vpc_config: dict[str, Any] = {
            "subnetIds": [*network.public_subnets, *network.private_subnets],
            "endpointPublicAccess": True,
            "endpointPrivateAccess": True,
        }
        if self.env.endpoint_public_access_cidrs != ["0.0.0.0/0"]:
            vpc_config["publicAccessCidrs"] = list(self.env.endpoint_public_access_cidrs)
        return {
            "name": self.cluster_name(ctx, role),
            "version": self.env.kubernetes_version,
            "roleArn": network.cluster_role_arn,
            "resourcesVpcConfig": vpc_config,
            "accessConfig": {
                "authenticationMode": self.env.authentication_mode,
                # The creating identity (the Airflow connection) gets a cluster-admin access
                # entry; it cannot be added later.
                "bootstrapClusterCreatorAdminPermissions": True,
            },
            "upgradePolicy": {"supportType": self.env.support_type},
            "tags": self.resource_tags(ctx, role, created_at),
        }

    def nodegroup_name(self, ctx: RunContext, role: str) -> str:
        return f"{self.cluster_name(ctx, role)}-nodes"

    def nodegroup_request(
        self,
        ctx: RunContext,
        role: str,
        network: NetworkStack,
        created_at: datetime,
    ) -> dict[str, Any]:
        subnets, _reason = self.node_subnets(ctx.mesh, network)
        count = self.env.node_count
        return {
            "clusterName": self.cluster_name(ctx, role),
            "nodegroupName": self.nodegroup_name(ctx, role),
            "subnets": subnets,
            "nodeRole": network.node_role_arn,
            "scalingConfig": {"minSize": count, "maxSize": count, "desiredSize": count},
            "version": self.env.kubernetes_version,
            "instanceTypes": [self.env.instance_type],
            "amiType": self.env.ami_type,
            "capacityType": self.env.capacity_type,
            "diskSize": self.env.disk_size,
            "labels": {"meshbench.io/role": role},
            "tags": self.resource_tags(ctx, role, created_at),
        }

    # -- create_clusters -----------------------------------------------------------------
    def create_ops(self, ctx: RunContext, creation: ClusterCreation | None = None) -> list[Op]:
        """The network, both clusters, their node groups and the waits, in the order they run.
        ``creation`` collects what the ops find; the plan leaves it out."""
        creation = creation or ClusterCreation(utcnow())
        env = self.env
        planned = self.planned_network()
        on_aws = functools.partial(call_op, CREATE)
        waiter = self.waiter_limits()
        ops = [self.network_op(creation.use_network)]
        for role in ROLES:
            request = self.cluster_request(ctx, role, planned, creation.created_at)
            request["tags"][TAG_CREATED_AT] = PLANNED_CREATION_TIME
            ops.append(
                on_aws(
                    role,
                    "api",
                    f"Create EKS cluster {request['name']} (adopted when an earlier try of "
                    f"this run made it; requested before waiting for either cluster)",
                    lambda clusters, role=role: self.create_cluster(ctx, role, creation),
                    f"EksHook.create_cluster(**{json.dumps(request, indent=2)})",
                )
            )
        names = self.cluster_names(ctx)
        ops.append(
            on_aws(
                None,
                "wait",
                f"Wait until both clusters are ACTIVE: {', '.join(names.values())}",
                lambda clusters: self._wait_all("cluster_active", names),
                f"eks waiter cluster_active {waiter}",
            )
        )
        if env.admin_principal_arns:
            ops.append(
                on_aws(
                    None,
                    "api",
                    "Access entries for the extra admin principals",
                    lambda clusters: self.grant_admins(ctx),
                    "\n".join(
                        f"eks.create_access_entry(principalArn={arn!r}); "
                        f"eks.associate_access_policy(policyArn={CLUSTER_ADMIN_POLICY!r}, "
                        f"accessScope={{'type': 'cluster'}})"
                        for arn in env.admin_principal_arns
                    ),
                )
            )
        for role in ROLES:
            request = self.nodegroup_request(ctx, role, planned, creation.created_at)
            request["tags"][TAG_CREATED_AT] = PLANNED_CREATION_TIME
            _subnets, why = self.node_subnets(ctx.mesh, planned)
            ops.append(
                on_aws(
                    role,
                    "api",
                    f"Create managed node group {request['nodegroupName']}: {env.node_count} x "
                    f"{env.instance_type}, {env.ami_type}, {env.capacity_type}, in {why}",
                    lambda clusters, role=role: self.create_nodegroup(ctx, role, creation),
                    f"EksHook.create_nodegroup(**{json.dumps(request, indent=2)})",
                )
            )
        nodegroups = {role: (name, self.nodegroup_name(ctx, role)) for role, name in names.items()}
        ops.append(
            on_aws(
                None,
                "wait",
                "Wait until both node groups are ACTIVE",
                lambda clusters: self._wait_nodegroups(nodegroups),
                f"eks waiter nodegroup_active {waiter}",
            )
        )
        return ops

    def create(self, ctx: RunContext) -> dict[str, Any]:
        creation = ClusterCreation(utcnow())
        summary = run_without_clusters(self.create_ops(ctx, creation), self.runner)
        for cluster in creation.clusters.values():
            described = self._describe_cluster(cluster["name"]) or {}
            cluster.update(
                {
                    "arn": described.get("arn"),
                    "version": described.get("version"),
                    "status": described.get("status"),
                    "created_at": (described.get("tags") or {}).get(TAG_CREATED_AT),
                }
            )
        return {
            "environment": ENVIRONMENT,
            "region": self.env.region,
            "network": creation.require_network().describe(),
            "clusters": creation.clusters,
            "steps": summary["steps"],
        }

    def create_cluster(self, ctx: RunContext, role: str, creation: ClusterCreation) -> None:
        """Request the ``role`` cluster, or adopt it when an earlier try of this run made it."""
        name = self.cluster_name(ctx, role)
        existing = self._describe_cluster(name)
        if existing is not None:
            self._check_ours(ctx, "EKS cluster", name, existing.get("tags") or {})
            status = existing.get("status")
            if status in ("DELETING", "FAILED"):
                raise StepFailed(
                    f"EKS cluster {name} is {status}; delete_clusters (or the reaper) "
                    f"removes it, then a new run creates it again"
                )
            log.info("adopting EKS cluster %s (%s) made by an earlier try", name, status)
            creation.clusters[role] = {"name": name, "adopted": True}
            return
        request = self.cluster_request(ctx, role, creation.require_network(), creation.created_at)
        log.info(
            "creating EKS cluster %s: Kubernetes %s, %s auth, subnets %s",
            name,
            request["version"],
            self.env.authentication_mode,
            ",".join(request["resourcesVpcConfig"]["subnetIds"]),
        )
        try:
            self.eks_hook.create_cluster(**request)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != RESOURCE_IN_USE:
                raise
            log.info("EKS cluster %s appeared concurrently; adopting it", name)
        creation.clusters[role] = {"name": name, "adopted": False}

    def create_nodegroup(self, ctx: RunContext, role: str, creation: ClusterCreation) -> None:
        """Request the ``role`` cluster's node group, or adopt this run's."""
        cluster = self.cluster_name(ctx, role)
        nodegroup = self.nodegroup_name(ctx, role)
        existing = self._describe_nodegroup(cluster, nodegroup)
        if existing is not None:
            self._check_ours(ctx, "node group", nodegroup, existing.get("tags") or {})
            log.info("adopting node group %s (%s)", nodegroup, existing.get("status"))
        else:
            network = creation.require_network()
            request = self.nodegroup_request(ctx, role, network, creation.created_at)
            _subnets, why = self.node_subnets(ctx.mesh, network)
            log.info(
                "creating node group %s: %d x %s (%s, %s) in %s",
                nodegroup,
                self.env.node_count,
                self.env.instance_type,
                self.env.ami_type,
                self.env.capacity_type,
                why,
            )
            try:
                self.eks_hook.create_nodegroup(**request)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != RESOURCE_IN_USE:
                    raise
        creation.clusters.setdefault(role, {"name": cluster})["nodegroup"] = nodegroup

    def _wait_all(self, waiter: str, names: dict[str, str]) -> None:
        for name in names.values():
            self._wait(waiter, f"EKS cluster {name}", name=name)

    def _wait_nodegroups(self, nodegroups: dict[str, tuple[str, str]]) -> None:
        for cluster, nodegroup in nodegroups.values():
            self._wait(
                "nodegroup_active",
                f"node group {nodegroup}",
                clusterName=cluster,
                nodegroupName=nodegroup,
            )

    def grant_admins(self, ctx: RunContext) -> None:
        """Access entries for the extra principals in ``admin_principal_arns`` (the creating
        identity already has one)."""
        for role in ROLES:
            cluster = self.cluster_name(ctx, role)
            for principal in self.env.admin_principal_arns:
                try:
                    self.eks.create_access_entry(clusterName=cluster, principalArn=principal)
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != RESOURCE_IN_USE:
                        raise StepFailed(
                            f"access entry for {principal} on {cluster}: {exc}"
                        ) from None
                self.eks.associate_access_policy(
                    clusterName=cluster,
                    principalArn=principal,
                    policyArn=CLUSTER_ADMIN_POLICY,
                    accessScope={"type": "cluster"},
                )
                log.info("granted cluster admin on %s to %s", cluster, principal)

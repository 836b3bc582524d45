"""Creating the run's two EKS clusters and their node groups."""

from __future__ import annotations

import logging
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
from meshbench.environments.provider import (
    ROLES,
    isoformat,
    tag_value,
    utcnow,
)

log = logging.getLogger(__name__)


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

    def create(self, ctx: RunContext) -> dict[str, Any]:
        network = self.ensure_network()
        created_at = utcnow()
        clusters: dict[str, dict[str, Any]] = {}
        # Both control planes are requested before waiting for either (they take ~10 min).
        for role in ROLES:
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
                clusters[role] = {"name": name, "adopted": True}
                continue
            request = self.cluster_request(ctx, role, network, created_at)
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
            clusters[role] = {"name": name, "adopted": False}
        for role in ROLES:
            name = clusters[role]["name"]
            self._wait("cluster_active", f"EKS cluster {name}", name=name)
        self.grant_admins(ctx)
        for role in ROLES:
            cluster = clusters[role]["name"]
            nodegroup = self.nodegroup_name(ctx, role)
            existing = self._describe_nodegroup(cluster, nodegroup)
            if existing is not None:
                self._check_ours(ctx, "node group", nodegroup, existing.get("tags") or {})
                log.info("adopting node group %s (%s)", nodegroup, existing.get("status"))
            else:
                request = self.nodegroup_request(ctx, role, network, created_at)
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
            clusters[role]["nodegroup"] = nodegroup
        for role in ROLES:
            cluster, nodegroup = clusters[role]["name"], clusters[role]["nodegroup"]
            self._wait(
                "nodegroup_active",
                f"node group {nodegroup}",
                clusterName=cluster,
                nodegroupName=nodegroup,
            )
        for role in ROLES:
            described = self._describe_cluster(clusters[role]["name"]) or {}
            clusters[role].update(
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
            "network": network.describe(),
            "clusters": clusters,
        }

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

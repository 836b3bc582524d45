"""Cluster-minutes a run used, and their estimated cost."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from meshbench.backend import RunContext
from meshbench.environments.aws.constants import (
    TAG_CREATED_AT,
)
from meshbench.environments.aws.prepare import AwsPreparation
from meshbench.environments.provider import (
    ROLES,
    isoformat,
    parse_timestamp,
)

log = logging.getLogger(__name__)


class AwsCost(AwsPreparation):
    def usage(self, ctx: RunContext) -> dict[str, Any]:
        """When the run's clusters and node groups were created (before deleting them)."""
        found: dict[str, Any] = {}
        for role in ROLES:
            name = self.cluster_name(ctx, role)
            cluster = self._describe_cluster(name)
            if cluster is None:
                found[role] = None
                continue
            nodegroup = self._describe_nodegroup(name, self.nodegroup_name(ctx, role)) or {}
            found[role] = {
                "name": name,
                "created_at": parse_timestamp(cluster.get("createdAt"))
                or parse_timestamp((cluster.get("tags") or {}).get(TAG_CREATED_AT)),
                "nodegroup_created_at": parse_timestamp(nodegroup.get("createdAt")),
                "nodes": int((nodegroup.get("scalingConfig") or {}).get("desiredSize") or 0),
            }
        return found

    def minutes_used(self, found: dict[str, Any], ended: datetime) -> dict[str, Any]:
        prices = self.env.prices
        clusters: dict[str, Any] = {}
        cluster_minutes = node_minutes = 0.0
        for role, item in found.items():
            if item is None or item["created_at"] is None:
                clusters[role] = {"found": False}
                continue
            minutes = (ended - item["created_at"]).total_seconds() / 60
            nodes = 0.0
            if item["nodegroup_created_at"] is not None:
                nodes = (ended - item["nodegroup_created_at"]).total_seconds() / 60 * item["nodes"]
            cluster_minutes += minutes
            node_minutes += nodes
            clusters[role] = {
                "found": True,
                "name": item["name"],
                "created_at": isoformat(item["created_at"]),
                "cluster_minutes": round(minutes, 2),
                "node_minutes": round(nodes, 2),
            }
        cost = cluster_minutes / 60 * prices.cluster_hour + node_minutes / 60 * prices.node_hour
        return {
            "cluster_minutes": round(cluster_minutes, 2),
            "node_minutes": round(node_minutes, 2),
            "estimated_cost_usd": round(cost, 2),
            "cost_basis": "list prices from config (estimate; excludes load balancers, traffic)",
            "complete": all(item.get("found") for item in clusters.values()),
            "clusters": clusters,
            "ended_at": isoformat(ended),
        }

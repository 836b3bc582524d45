"""delete_clusters and the reaper: Cluster objects deleted, cluster-minutes counted."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from meshbench.backend import RunContext, StepFailed
from meshbench.environments import capi_manifests as manifests
from meshbench.environments.capi.management import (
    ENVIRONMENT,
    MANAGEMENT,
    NODES_PER_CLUSTER,
    CapiBase,
    done,
)
from meshbench.environments.provider import ROLES, Leftover, isoformat, parse_timestamp, utcnow
from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, call_op, run_ops

log = logging.getLogger(__name__)


MANAGED_SELECTOR = f"{manifests.LABEL_MANAGED}=true"


class ClusterTeardown(CapiBase):
    """delete_clusters, what a run used, and the reaper's view of leaked clusters."""

    def delete_ops(self, ctx: RunContext) -> list[Op]:
        env = self.env
        names = [self.cluster_name(ctx, role) for role in ROLES]
        ops = [
            call_op(
                "delete_clusters",
                MANAGEMENT,
                "command",
                f"Delete the Cluster objects {', '.join(names)} (Cluster API removes their "
                f"machines and objects; never delete -f of the manifests)",
                lambda clusters: done(self._delete_clusters(clusters, names)),
                "\n".join(
                    f"kubectl delete cluster {name} -n {env.namespace} --wait=false"
                    for name in names
                ),
            ),
            call_op(
                "delete_clusters",
                MANAGEMENT,
                "wait",
                f"Wait up to {env.delete_timeout:g}s until both Cluster objects are gone",
                lambda clusters: self._wait_gone(clusters, names),
                "\n".join(
                    f"kubectl wait --for=delete cluster/{name} -n {env.namespace} "
                    f"--timeout={env.delete_timeout:g}s"
                    for name in names
                ),
            ),
        ]
        if env.infrastructure_provider == "packet":
            ops.append(
                call_op(
                    "delete_clusters",
                    None,
                    "api",
                    "Not removed by Cluster API: the control-plane Elastic IPs tagged "
                    + ", ".join(f"cluster-api-provider-packet:cluster-id:{name}" for name in names)
                    + " (remove them in the provider's console or API)",
                    lambda clusters: None,
                )
            )
        return ops

    def _delete_clusters(self, clusters: Clusters, names: list[str]) -> dict[str, str]:
        management = clusters[MANAGEMENT]
        outcome = {}
        for name in names:
            deleted = management.delete(manifests.CLUSTER_API, "Cluster", name, self.env.namespace)
            outcome[name] = "deleted" if deleted else "already gone"
            log.info("Cluster %s/%s: %s", self.env.namespace, name, outcome[name])
        return outcome

    def _wait_gone(self, clusters: Clusters, names: list[str]) -> None:
        management = clusters[MANAGEMENT]
        for name in names:
            management.wait_gone(
                manifests.CLUSTER_API, "Cluster", name, self.env.delete_timeout, self.env.namespace
            )
        if self.env.infrastructure_provider == "packet":
            for name in names:
                log.warning(
                    "remove the control-plane Elastic IP tagged "
                    "cluster-api-provider-packet:cluster-id:%s by hand: Cluster API does not",
                    name,
                )

    def usage(self, clusters: Clusters, names: list[str]) -> dict[str, datetime | None]:
        found = {}
        for name in names:
            cluster = clusters[MANAGEMENT].api.get(
                manifests.CLUSTER_API, "Cluster", name, self.env.namespace
            )
            metadata = (cluster or {}).get("metadata") or {}
            found[name] = parse_timestamp(metadata.get("creationTimestamp")) or parse_timestamp(
                (metadata.get("annotations") or {}).get(manifests.ANNOTATION_CREATED_AT)
            )
        return found

    def minutes_used(self, found: dict[str, datetime | None], ended: datetime) -> dict[str, Any]:
        clusters = {}
        cluster_minutes = 0.0
        for name, created in found.items():
            if created is None:
                clusters[name] = {"found": False}
                continue
            minutes = (ended - created).total_seconds() / 60
            cluster_minutes += minutes
            clusters[name] = {
                "found": True,
                "created_at": isoformat(created),
                "cluster_minutes": round(minutes, 2),
            }
        machine_minutes = cluster_minutes * NODES_PER_CLUSTER
        return {
            "cluster_minutes": round(cluster_minutes, 2),
            "node_minutes": round(machine_minutes, 2),
            "estimated_cost_usd": round(machine_minutes / 60 * self.env.prices.machine_hour, 2),
            "cost_basis": "machine price from config (estimate; management cluster excluded)",
            "complete": all(item["found"] for item in clusters.values()),
            "clusters": clusters,
            "ended_at": isoformat(ended),
        }

    def delete(self, ctx: RunContext) -> dict[str, Any]:
        names = [self.cluster_name(ctx, role) for role in ROLES]
        with self.clusters(None) as clusters:
            found = self.usage(clusters, names)
            summary = run_ops(self.delete_ops(ctx), clusters)
        used = self.minutes_used(found, utcnow())
        used["steps"] = summary["steps"]
        log.info(
            "run %s used %.1f cluster-minutes (about $%.2f)",
            ctx.slug,
            used["cluster_minutes"],
            used["estimated_cost_usd"],
        )
        return used

    # -- reaper ------------------------------------------------------------------------
    @property
    def reaper_ttl(self) -> float:
        return self.env.reaper_ttl

    def find_leftovers(self) -> list[Leftover]:
        with self.clusters(None) as clusters:
            items = clusters[MANAGEMENT].api.list(
                manifests.CLUSTER_API, "Cluster", self.env.namespace, MANAGED_SELECTOR
            )
        leftovers = []
        for item in items:
            metadata = item.get("metadata") or {}
            annotations = metadata.get("annotations") or {}
            leftovers.append(
                Leftover(
                    ENVIRONMENT,
                    "capi-cluster",
                    metadata.get("name", "?"),
                    parse_timestamp(annotations.get(manifests.ANNOTATION_CREATED_AT))
                    or parse_timestamp(metadata.get("creationTimestamp")),
                    dag_id=annotations.get(manifests.ANNOTATION_DAG_ID),
                    run_id=annotations.get(manifests.ANNOTATION_RUN_ID),
                    detail={
                        "namespace": metadata.get("namespace"),
                        "deleting": bool(metadata.get("deletionTimestamp")),
                    },
                )
            )
        return leftovers

    def remove(self, leftovers: list[Leftover]) -> dict[str, str]:
        outcome: dict[str, str] = {}
        names = [item.name for item in leftovers if item.kind == "capi-cluster"]
        if not names:
            return outcome
        with self.clusters(None) as clusters:
            try:
                deleted = self._delete_clusters(clusters, names)
            except StepFailed as exc:
                return {item.describe(): f"error: {exc}" for item in leftovers}
            for item in leftovers:
                try:
                    self._wait_gone(clusters, [item.name])
                    outcome[item.describe()] = deleted.get(item.name, "deleted")
                except StepFailed as exc:
                    outcome[item.describe()] = f"error: {exc}"
        return outcome

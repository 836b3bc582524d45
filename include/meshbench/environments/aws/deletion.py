"""Deleting a run's clusters and what they leave behind."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from meshbench.backend import RunContext, StepFailed
from meshbench.environments.aws.constants import (
    _RESOURCE_IN_USE_RETRIES,
    _waiter_config,
    error_code,
)
from meshbench.environments.aws.cost import AwsCost
from meshbench.environments.provider import (
    ROLES,
    utcnow,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class AwsDeletion(AwsCost):
    # -- delete ------------------------------------------------------------------------
    def _delete_with_retries(self, what: str, call: Any, **params: Any) -> bool:
        """Call a delete API; True when deleted, False when already gone."""
        for attempt in range(1, _RESOURCE_IN_USE_RETRIES + 1):
            try:
                call(**params)
                return True
            except Exception as exc:
                code = error_code(exc)
                if code == "ResourceNotFoundException":
                    return False
                if code == "ResourceInUseException" and attempt < _RESOURCE_IN_USE_RETRIES:
                    log.info("%s is busy (%s); retrying in %ds", what, exc, self.env.waiter_delay)
                    time.sleep(self.env.waiter_delay)
                    continue
                raise
        return False

    def delete_clusters_by_name(self, clusters: list[str]) -> dict[str, str]:
        """Delete node groups, then clusters, all in parallel; waits for both."""
        outcome: dict[str, str] = {}
        present = [name for name in clusters if self._describe_cluster(name) is not None]
        for name in clusters:
            if name not in present:
                outcome[name] = "already gone"
        for name in present:
            for nodegroup in self.eks_hook.list_nodegroups(clusterName=name):
                log.info("deleting node group %s of %s", nodegroup, name)
                self._delete_with_retries(
                    f"node group {nodegroup}",
                    self.eks.delete_nodegroup,
                    clusterName=name,
                    nodegroupName=nodegroup,
                )
        for name in present:
            try:
                self.eks_hook.get_waiter("all_nodegroups_deleted").wait(
                    clusterName=name, WaiterConfig=_waiter_config(self.env)
                )
            except Exception as exc:
                raise StepFailed(f"node groups of {name} were not deleted: {exc}") from None
        for name in present:
            log.info("deleting EKS cluster %s", name)
            deleted = self._delete_with_retries(
                f"EKS cluster {name}", self.eks.delete_cluster, name=name
            )
            outcome[name] = "deleted" if deleted else "already gone"
        for name in present:
            self._wait("cluster_deleted", f"EKS cluster {name}", name=name)
        return outcome

    def delete(self, ctx: RunContext) -> dict[str, Any]:
        names = [self.cluster_name(ctx, role) for role in ROLES]
        found = self.usage(ctx)
        balancers = self.drain_load_balancers(names)
        outcome = self.delete_clusters_by_name(names)
        groups = self.delete_orphan_security_groups(names)
        used = self.minutes_used(found, utcnow())
        used.update(
            {"deleted": outcome, "load_balancers": balancers, "security_groups_deleted": groups}
        )
        log.info(
            "run %s used %.1f cluster-minutes and %.1f node-minutes (about $%.2f)",
            ctx.slug,
            used["cluster_minutes"],
            used["node_minutes"],
            used["estimated_cost_usd"],
        )
        return used

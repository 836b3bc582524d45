"""Deleting a run's clusters and what they leave behind."""

from __future__ import annotations

import logging
from typing import Any

import tenacity
from airflow.providers.amazon.aws.utils import build_resource_in_use_retry_args
from botocore.exceptions import ClientError

from meshbench.backend import RunContext, StepFailed
from meshbench.environments.aws.constants import (
    RESOURCE_IN_USE_RETRIES,
    RESOURCE_NOT_FOUND,
    _waiter_config,
)
from meshbench.environments.aws.cost import AwsCost
from meshbench.environments.provider import (
    ROLES,
    utcnow,
)

log = logging.getLogger(__name__)


class AwsDeletion(AwsCost):
    # -- delete ------------------------------------------------------------------------
    def _delete_with_retries(self, what: str, call: Any, **params: Any) -> bool:
        """Call a delete API; True when deleted, False when already gone. A resource still
        settling from an earlier call (ResourceInUseException) is retried with the Amazon
        provider's predicate, bounded by this environment's waiter delay."""
        retrying = tenacity.Retrying(
            **{
                **build_resource_in_use_retry_args(log),
                "wait": tenacity.wait_fixed(self.env.waiter_delay),
                "stop": tenacity.stop_after_attempt(RESOURCE_IN_USE_RETRIES),
            }
        )
        try:
            retrying(call, **params)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == RESOURCE_NOT_FOUND:
                log.info("%s is already gone", what)
                return False
            raise
        return True

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

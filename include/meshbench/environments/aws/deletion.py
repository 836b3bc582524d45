"""Deleting a run's clusters and what they leave behind."""

from __future__ import annotations

import functools
import logging
from typing import Any

import tenacity
from airflow.providers.amazon.aws.utils import build_resource_in_use_retry_args
from botocore.exceptions import ClientError

from meshbench.backend import RunContext, StepFailed
from meshbench.environments.aws.constants import (
    EKS_CLUSTER_TAG,
    KUBERNETES_CLUSTER_TAG,
    LBC_CLUSTER_TAG,
    RESOURCE_IN_USE_RETRIES,
    RESOURCE_NOT_FOUND,
    TAG_KEEP,
    _waiter_config,
)
from meshbench.environments.aws.cost import AwsCost
from meshbench.environments.aws.steps import DELETE, run_without_clusters, states_a_fact
from meshbench.environments.provider import utcnow
from meshbench.kube.ops import Op, call_op

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
        self.delete_nodegroups(clusters)
        return self.delete_eks_clusters(clusters)

    def _present(self, clusters: list[str]) -> list[str]:
        return [name for name in clusters if self._describe_cluster(name) is not None]

    def delete_nodegroups(self, clusters: list[str]) -> None:
        """Delete every node group of ``clusters`` (all at once), then wait until they are gone."""
        present = self._present(clusters)
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

    def delete_eks_clusters(self, clusters: list[str]) -> dict[str, str]:
        """Delete ``clusters`` (all at once) and wait until they are gone; "deleted" or
        "already gone" for each."""
        present = self._present(clusters)
        outcome = {name: "already gone" for name in clusters if name not in present}
        for name in present:
            log.info("deleting EKS cluster %s", name)
            deleted = self._delete_with_retries(
                f"EKS cluster {name}", self.eks.delete_cluster, name=name
            )
            outcome[name] = "deleted" if deleted else "already gone"
        for name in present:
            self._wait("cluster_deleted", f"EKS cluster {name}", name=name)
        return outcome

    # -- delete_clusters -----------------------------------------------------------------
    def delete_ops(self, ctx: RunContext) -> list[Op]:
        env = self.env
        names = list(self.cluster_names(ctx).values())
        owner_tags = " or ".join(
            [f"{KUBERNETES_CLUSTER_TAG.format(name='<cluster>')}", f"{LBC_CLUSTER_TAG}=<cluster>"]
        )
        waiter = self.waiter_limits()
        on_aws = functools.partial(call_op, DELETE, None)
        return [
            on_aws(
                "wait",
                f"Wait up to {env.load_balancer_wait:g}s for the load balancers of "
                f"{', '.join(names)} to go (they outlive clusters and block VPC deletion); "
                f"delete those still there",
                lambda clusters: {"load_balancers": self.drain_load_balancers(names)},
                f"elb.describe_load_balancers + describe_tags, elbv2.describe_load_balancers + "
                f"describe_tags: tag {owner_tags}",
            ),
            on_aws(
                "api",
                "Delete the node groups of both clusters, then wait",
                lambda clusters: self.delete_nodegroups(names),
                "eks.delete_nodegroup(clusterName=..., nodegroupName=...) for every node group\n"
                f"EksHook waiter all_nodegroups_deleted {waiter}",
            ),
            on_aws(
                "api",
                f"Delete both clusters ({', '.join(names)}), then wait; record cluster-minutes",
                lambda clusters: {"deleted": self.delete_eks_clusters(names)},
                f"eks.delete_cluster(name=...); eks waiter cluster_deleted {waiter}",
            ),
            on_aws(
                "api",
                "Delete security groups Kubernetes made for load balancers of these clusters "
                "(best effort)",
                lambda clusters: {
                    "security_groups_deleted": self.delete_orphan_security_groups(names)
                },
                "ec2.delete_security_group for groups tagged kubernetes.io/cluster/<cluster> "
                f"without {EKS_CLUSTER_TAG}",
            ),
            on_aws(
                "api",
                f"Keep the shared network stack {env.network_stack_name} "
                f"({TAG_KEEP}=true; the reaper spares it)",
                states_a_fact,
            ),
        ]

    def delete(self, ctx: RunContext) -> dict[str, Any]:
        # When the clusters were made is read before they go; the cluster-minutes need it.
        found = self.usage(ctx)
        summary = run_without_clusters(self.delete_ops(ctx), self.runner)
        used = self.minutes_used(found, utcnow())
        used.update(
            {
                "deleted": summary["deleted"],
                "load_balancers": summary["load_balancers"],
                "security_groups_deleted": summary["security_groups_deleted"],
                "steps": summary["steps"],
            }
        )
        log.info(
            "run %s used %.1f cluster-minutes and %.1f node-minutes (about $%.2f)",
            ctx.slug,
            used["cluster_minutes"],
            used["node_minutes"],
            used["estimated_cost_usd"],
        )
        return used

"""Finding and removing what runs left behind."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from meshbench.environments.aws.constants import (
    ENVIRONMENT,
    TAG_CREATED_AT,
    TAG_DAG_ID,
    TAG_KEEP,
    TAG_MANAGED,
    TAG_RUN_ID,
    TAG_SLUG,
    _waiter_config,
)
from meshbench.environments.aws.plan import AwsPlan
from meshbench.environments.provider import (
    Leftover,
    parse_timestamp,
)

log = logging.getLogger(__name__)


def _tagged_leftover(
    kind: str, name: str, created: datetime | None, tags: dict[str, str], **extra: Any
) -> Leftover:
    """A leftover that names the DAG run which made it, as its meshbench tags say."""
    return Leftover(
        ENVIRONMENT,
        kind,
        name,
        created,
        dag_id=tags.get(TAG_DAG_ID),
        run_id=tags.get(TAG_RUN_ID),
        **extra,
    )


class AwsReaper(AwsPlan):
    @property
    def reaper_ttl(self) -> float:
        return self.env.reaper_ttl

    def find_leftovers(self) -> list[Leftover]:
        leftovers: list[Leftover] = []
        cluster_names = set(self.eks_hook.list_clusters())
        for name in sorted(cluster_names):
            cluster = self._describe_cluster(name)
            if cluster is None:
                continue
            tags = cluster.get("tags") or {}
            if tags.get(TAG_MANAGED) != "true":
                continue
            created = parse_timestamp(tags.get(TAG_CREATED_AT)) or parse_timestamp(
                cluster.get("createdAt")
            )
            leftovers.append(
                _tagged_leftover(
                    "eks-cluster",
                    name,
                    created,
                    tags,
                    detail={"status": cluster.get("status"), "slug": tags.get(TAG_SLUG)},
                )
            )
            leftovers += [
                _tagged_leftover("eks-nodegroup", nodegroup, created, tags, parent=name)
                for nodegroup in self.eks_hook.list_nodegroups(clusterName=name)
            ]
        for page in self.cloudformation.get_paginator("describe_stacks").paginate():
            for stack in page["Stacks"]:
                tags = {tag["Key"]: tag["Value"] for tag in stack.get("Tags", [])}
                if tags.get(TAG_MANAGED) != "true" or stack["StackStatus"] in (
                    "DELETE_COMPLETE",
                    "DELETE_IN_PROGRESS",
                ):
                    continue
                leftovers.append(
                    _tagged_leftover(
                        "cloudformation-stack",
                        stack["StackName"],
                        parse_timestamp(tags.get(TAG_CREATED_AT))
                        or parse_timestamp(stack.get("CreationTime")),
                        tags,
                        keep=tags.get(TAG_KEEP) == "true",
                        detail={"status": stack["StackStatus"]},
                    )
                )
        # Load balancers of live clusters go with their cluster; these lost theirs.
        for balancer in self.load_balancers(None):
            cluster = balancer["cluster"]
            if cluster in cluster_names:
                continue
            leftovers.append(
                Leftover(
                    ENVIRONMENT,
                    "load-balancer",
                    balancer.get("name") or balancer["id"],
                    parse_timestamp(balancer.get("created")),
                    parent=cluster,
                    detail={"balancer": balancer, "orphan": f"its cluster {cluster} is gone"},
                )
            )
        return leftovers

    def remove(self, leftovers: list[Leftover]) -> dict[str, str]:
        outcome: dict[str, str] = {}
        clusters = [item.name for item in leftovers if item.kind == "eks-cluster"]
        balancers = [item for item in leftovers if item.kind == "load-balancer"]
        # Load balancers of reaped clusters go first: nobody deletes their Services now.
        if clusters:
            for balancer in self.load_balancers(clusters):
                label = balancer.get("name") or balancer["id"]
                if not any(item.name == label for item in balancers):
                    balancers.append(
                        Leftover(
                            ENVIRONMENT,
                            "load-balancer",
                            label,
                            parse_timestamp(balancer.get("created")),
                            parent=balancer["cluster"],
                            detail={"balancer": balancer},
                        )
                    )
        for item in balancers:
            try:
                self.delete_load_balancer(item.detail["balancer"])
                outcome[item.describe()] = "deleted"
            except Exception as exc:
                outcome[item.describe()] = f"error: {exc}"
                log.warning("could not delete %s: %s", item.describe(), exc)
        if clusters:
            try:
                deleted = self.delete_clusters_by_name(clusters)
                for item in leftovers:
                    if item.kind == "eks-cluster":
                        outcome[item.describe()] = deleted.get(item.name, "deleted")
                    elif item.kind == "eks-nodegroup" and item.parent in clusters:
                        outcome[item.describe()] = "deleted with its cluster"
                self.delete_orphan_security_groups(clusters)
            except Exception as exc:
                for item in leftovers:
                    if item.kind in ("eks-cluster", "eks-nodegroup"):
                        outcome.setdefault(item.describe(), f"error: {exc}")
                log.warning("could not delete clusters %s: %s", ", ".join(clusters), exc)
        for item in leftovers:
            if item.kind == "eks-nodegroup" and item.parent not in clusters:
                try:
                    gone = not self._delete_with_retries(
                        item.describe(),
                        self.eks.delete_nodegroup,
                        clusterName=item.parent,
                        nodegroupName=item.name,
                    )
                    outcome[item.describe()] = "already gone" if gone else "deleted"
                except Exception as exc:
                    outcome[item.describe()] = f"error: {exc}"
        for item in leftovers:
            if item.kind != "cloudformation-stack":
                continue
            try:
                self.cloudformation.delete_stack(StackName=item.name)
                self.cloudformation.get_waiter("stack_delete_complete").wait(
                    StackName=item.name, WaiterConfig=_waiter_config(self.env)
                )
                outcome[item.describe()] = "deleted"
            except Exception as exc:
                outcome[item.describe()] = f"error: {exc}"
                log.warning("could not delete %s: %s", item.describe(), exc)
        return outcome

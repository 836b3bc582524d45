"""Load balancers Kubernetes makes for the run's Services."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from meshbench.backend import RunContext
from meshbench.environments.aws.constants import (
    _ELB_TAG_BATCH,
    LBC_CLUSTER_TAG,
    LOAD_BALANCER_ANNOTATIONS,
    _chunks,
)
from meshbench.environments.aws.security_groups import AwsSecurityGroups

log = logging.getLogger(__name__)

# (type, boto3 service, the list in a describe_load_balancers page, the id in an item, the
# describe_tags parameter and the id in its answer): classic ELBs by name, ELBv2 by ARN.
_BALANCER_APIS = (
    (
        "classic",
        "elb",
        "LoadBalancerDescriptions",
        "LoadBalancerName",
        "LoadBalancerNames",
        "LoadBalancerName",
    ),
    ("v2", "elbv2", "LoadBalancers", "LoadBalancerArn", "ResourceArns", "ResourceArn"),
)


class AwsLoadBalancers(AwsSecurityGroups):
    def service_annotations(self) -> dict[str, str]:
        return dict(LOAD_BALANCER_ANNOTATIONS)

    def load_balancer_source_ranges(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> list[str]:
        """The egress addresses (/32s) of the ``clients`` clusters (default: the other
        one): their nodes' public addresses, or the NAT gateway's for private nodes.
        Placeholders while planning."""
        ranges: list[str] = []
        for client in clients or (self.peer_role(role),):
            name = self.cluster_name(ctx, client)
            if self.is_planning:
                found = [f"<public IPv4 of each node of {name}>/32"]
            else:
                found = self.egress_cidrs(name, need_public_nodes=False)
            # Private nodes of both clusters leave through the same NAT gateway.
            ranges += [cidr for cidr in found if cidr not in ranges]
        return ranges

    # -- load balancers ----------------------------------------------------------------
    def load_balancers(self, clusters: list[str] | None = None) -> list[dict[str, Any]]:
        """Load balancers Kubernetes made for ``clusters`` (all meshbench-looking clusters
        when None): classic ELBs and ELBv2, with the cluster they belong to."""
        wanted = set(clusters) if clusters is not None else None
        found: list[dict[str, Any]] = []

        def owner(tags: dict[str, str]) -> str | None:
            for key, value in tags.items():
                if key.startswith("kubernetes.io/cluster/"):
                    return key.removeprefix("kubernetes.io/cluster/")
                if key == LBC_CLUSTER_TAG:
                    return value
            return None

        def keep(cluster: str | None) -> bool:
            if cluster is None:
                return False
            return cluster in wanted if wanted is not None else cluster.startswith("mb-")

        for kind, service, listing, id_key, tag_request, tag_answer in _BALANCER_APIS:
            client = self.client(service)
            balancers = {
                item[id_key]: item
                for page in client.get_paginator("describe_load_balancers").paginate()
                for item in page[listing]
            }
            for balancer_id, cluster in _owners(client, balancers, tag_request, tag_answer, owner):
                if keep(cluster):
                    item = balancers[balancer_id]
                    found.append(
                        {
                            "type": kind,
                            "id": balancer_id,
                            "name": item.get("LoadBalancerName"),
                            "cluster": cluster,
                            "created": item.get("CreatedTime"),
                        }
                    )
        return found

    def delete_load_balancer(self, balancer: dict[str, Any]) -> None:
        if balancer["type"] == "classic":
            self.client("elb").delete_load_balancer(LoadBalancerName=balancer["id"])
        else:
            self.client("elbv2").delete_load_balancer(LoadBalancerArn=balancer["id"])

    def drain_load_balancers(self, clusters: list[str]) -> dict[str, Any]:
        """Wait for the clusters' load balancers to go (the mesh uninstall deletes their
        Services); after ``load_balancer_wait`` delete those still there."""
        deadline = time.monotonic() + self.env.load_balancer_wait
        remaining = self.load_balancers(clusters)
        waited_for = len(remaining)
        while remaining and time.monotonic() < deadline:
            log.info(
                "waiting for %d load balancer(s) of %s to be deleted: %s",
                len(remaining),
                ", ".join(clusters),
                ", ".join(balancer.get("name") or balancer["id"] for balancer in remaining),
            )
            time.sleep(min(self.env.waiter_delay, max(0.0, deadline - time.monotonic())))
            remaining = self.load_balancers(clusters)
        forced = []
        for balancer in remaining:
            label = balancer.get("name") or balancer["id"]
            log.warning(
                "load balancer %s of %s outlived its Service for %gs; deleting it",
                label,
                balancer["cluster"],
                self.env.load_balancer_wait,
            )
            try:
                self.delete_load_balancer(balancer)
                forced.append(label)
            except Exception as exc:  # best effort: the reaper retries tomorrow
                log.warning("could not delete load balancer %s: %s", label, exc)
        return {"waited_for": waited_for, "force_deleted": forced}


def _owners(
    client: Any,
    balancers: dict[str, Any],
    request_key: str,
    answer_key: str,
    owner: Callable[[dict[str, str]], str | None],
) -> Iterator[tuple[str, str | None]]:
    """Each balancer's id with the cluster its tags name, asking for tags in batches (the
    ELB APIs take at most 20 names per call)."""
    for batch in _chunks(list(balancers), _ELB_TAG_BATCH):
        for description in client.describe_tags(**{request_key: batch})["TagDescriptions"]:
            tags = {tag["Key"]: tag["Value"] for tag in description.get("Tags", [])}
            yield description[answer_key], owner(tags)

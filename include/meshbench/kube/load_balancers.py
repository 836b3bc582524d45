"""What an environment requires of every LoadBalancer Service in a run's clusters.

The cluster source knows which annotations its load balancers need (aws: internet-facing,
so the AWS Load Balancer Controller, when installed, does not make internal NLBs) and who
may reach them (aws: the other cluster's egress addresses). The Kubernetes backend turns
that into one ``LoadBalancerPolicy`` per cluster and gives it to the mesh installer, which
renders it into the manifests, helm values and istioctl overlays it generates. A Service
that only upstream's manifests describe is patched right after it is created
(``policy_patch_op``), and the patch is a step of the plan like any other.

A policy holds annotations and CIDRs, never credentials. While a plan is rendered the
cluster source answers with placeholders (``ProvisionedBackend.plan``), so the same code
renders the plan and the run without the plan reaching a cloud.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from meshbench.backend import StepFailed
from meshbench.kube.ops import Op, call_op, render_manifests

if TYPE_CHECKING:
    from meshbench.backend import RunContext
    from meshbench.kube.cluster import Clusters

# The patches get a field manager of their own: a server-side apply by meshbench's usual
# manager that leaves fields out would remove the fields it set earlier on the same object.
POLICY_FIELD_MANAGER = "meshbench-load-balancer-policy"


class LoadBalancerSettings(Protocol):
    """What a cluster source says about load balancers (see ``ClusterProvider``)."""

    def service_annotations(self) -> dict[str, str]: ...

    def load_balancer_source_ranges(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> list[str]: ...


@dataclass(frozen=True)
class LoadBalancerPolicy:
    """Annotations and ``loadBalancerSourceRanges`` for the LoadBalancer Services of one
    cluster; empty fields leave a Service as upstream renders it."""

    annotations: Mapping[str, str] = field(default_factory=dict)
    source_ranges: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.annotations and not self.source_ranges

    def apply_to(self, service: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``service`` with the policy's fields, when it is a LoadBalancer (the
        annotations concern load balancers, and the API refuses source ranges on other
        types); any other object comes back unchanged."""
        result = copy.deepcopy(dict(service))
        spec = result.get("spec") or {}
        if result.get("kind") != "Service" or spec.get("type") != "LoadBalancer":
            return result
        if self.annotations:
            metadata = result.setdefault("metadata", {})
            metadata["annotations"] = {**(metadata.get("annotations") or {}), **self.annotations}
        if self.source_ranges:
            spec["loadBalancerSourceRanges"] = list(self.source_ranges)
        return result

    def service_patch(self, namespace: str, name: str) -> dict[str, Any]:
        """The partial Service a server-side apply sends: only the policy's fields."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        patch: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": metadata}
        if self.source_ranges:
            patch["spec"] = {"loadBalancerSourceRanges": list(self.source_ranges)}
        return patch

    def record(self) -> dict[str, Any]:
        return {"annotations": dict(self.annotations), "source_ranges": list(self.source_ranges)}


NO_POLICY = LoadBalancerPolicy()

# (ctx, cluster role, the roles whose workloads reach the Service; None: the other cluster)
PolicyLookup = Callable[["RunContext", str, "Sequence[str] | None"], LoadBalancerPolicy]


def no_policy(
    ctx: RunContext, role: str, clients: Sequence[str] | None = None
) -> LoadBalancerPolicy:
    """Used when an installer runs without an environment (tests): Services stay as
    upstream renders them."""
    return NO_POLICY


def policy_from(
    settings: LoadBalancerSettings,
    ctx: RunContext,
    role: str,
    clients: Sequence[str] | None = None,
) -> LoadBalancerPolicy:
    return LoadBalancerPolicy(
        dict(settings.service_annotations()),
        tuple(settings.load_balancer_source_ranges(ctx, role, clients)),
    )


def policy_patch_op(
    phase: str,
    role: str,
    namespace: str,
    name: str,
    policy: LoadBalancerPolicy,
    description: str,
) -> Op:
    """Server-side apply of ``policy``'s fields to a LoadBalancer Service that upstream's
    manifests created (it must exist: a partial Service cannot create one). A Service of
    another type has no load balancer to restrict (and the API refuses source ranges on
    it): it is left as it is, and the step says so."""
    patch = policy.service_patch(namespace, name)
    key = f"load_balancer_policy_{role}_{namespace}_{name}"

    def action(clusters: Clusters) -> dict[str, Any]:
        api = clusters[role].api
        found = api.get("v1", "Service", name, namespace)
        if found is None:
            raise StepFailed(f"Service {namespace}/{name} does not exist, so it cannot be patched")
        found_type = (found.get("spec") or {}).get("type")
        if found_type != "LoadBalancer":
            return {key: f"type {found_type}, not a LoadBalancer: left as it is"}
        api.apply(patch, field_manager=POLICY_FIELD_MANAGER, force=True)
        return {key: policy.record()}

    return call_op(
        phase,
        role,
        "manifest",
        description,
        action,
        f"# server-side apply (field manager {POLICY_FIELD_MANAGER}) to the existing "
        f"Service {namespace}/{name} when it is a LoadBalancer\n" + render_manifests([patch]),
    )

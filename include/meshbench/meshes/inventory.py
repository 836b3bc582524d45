"""Proof that uninstall leaves a cluster as it was: namespaces, CRDs and webhooks are
listed before install and compared after uninstall.

The "before" lists live in a ConfigMap in ``kube-system`` (``<run prefix>-inventory``),
one key per checkpoint, so the check works across tasks, workers and retries: a key is
written once, and a retried install compares against the state before its first try.
The ConfigMap itself is removed when the pair is cleaned up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from meshbench.backend import RunContext, StepFailed
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.ops import Op, call_op
from meshbench.kube.waits import Readiness, wait_for
from meshbench.meshes.common import ROLES, Component, managed_labels, phase, step_text

INVENTORY_NAMESPACE = "kube-system"
COMPONENT = "inventory"
# What "as before" means: these cluster-scoped lists must be equal.
KINDS: dict[str, tuple[str, str]] = {
    "namespaces": ("v1", "Namespace"),
    "crds": ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    "mutating_webhooks": ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
    "validating_webhooks": ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
}


def inventory_name(ctx: RunContext) -> str:
    return f"{ctx.resource_prefix}-inventory"


def snapshot(cluster: KubeCluster) -> dict[str, list[str]]:
    return {
        key: sorted(item["metadata"]["name"] for item in cluster.api.list(api_version, kind))
        for key, (api_version, kind) in KINDS.items()
    }


def differences(before: Mapping[str, list[str]], now: Mapping[str, list[str]]) -> list[str]:
    """What keeps ``now`` from being ``before``, in words."""
    found = []
    for key in KINDS:
        added = sorted(set(now.get(key, [])) - set(before.get(key, [])))
        removed = sorted(set(before.get(key, [])) - set(now.get(key, [])))
        if added:
            found.append(f"left behind {key}: {', '.join(added)}")
        if removed:
            found.append(f"gone although there before {key}: {', '.join(removed)}")
    return found


def stored(cluster: KubeCluster, ctx: RunContext) -> dict[str, str]:
    found = cluster.api.get("v1", "ConfigMap", inventory_name(ctx), INVENTORY_NAMESPACE)
    return dict((found or {}).get("data") or {})


def stored_snapshot(cluster: KubeCluster, ctx: RunContext, key: str) -> dict[str, list[str]] | None:
    text = stored(cluster, ctx).get(key)
    return json.loads(text) if text else None


def _config_map(ctx: RunContext, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": inventory_name(ctx),
            "namespace": INVENTORY_NAMESPACE,
            "labels": managed_labels(ctx),
        },
        "data": dict(data),
    }


def record(cluster: KubeCluster, ctx: RunContext, key: str) -> dict[str, list[str]]:
    """Store the current lists under ``key`` unless an earlier try already did."""
    data = stored(cluster, ctx)
    if key in data:
        return json.loads(data[key])
    current = snapshot(cluster)
    data[key] = json.dumps(current, sort_keys=True)
    # Server-side apply drops keys this manager set before and omits now: apply them all.
    cluster.apply([_config_map(ctx, data)])
    return current


def before_names(cluster: KubeCluster, ctx: RunContext, key: str, kind_key: str) -> set[str]:
    found = stored_snapshot(cluster, ctx, key)
    return set((found or {}).get(kind_key, []))


def crds_recorded(ctx: RunContext, key: str) -> Callable[[KubeCluster], set[str]]:
    """The CRD names a cluster had at checkpoint ``key``: those a teardown must keep."""
    return lambda cluster: before_names(cluster, ctx, key, "crds")


def iteration_key(iteration: int) -> str:
    """The checkpoint of a cluster's state before an iteration installs its mesh."""
    return f"before-iteration-{iteration:02d}"


def record_op(step_phase: str, role: str, ctx: RunContext, key: str, before_what: str) -> Op:
    def action(clusters: Clusters) -> dict[str, Any]:
        lists = record(clusters[role], ctx, key)
        return {f"inventory_{role}_{key}": {k: len(v) for k, v in lists.items()}}

    return call_op(
        step_phase,
        role,
        "api",
        step_text(COMPONENT, f"list namespaces, CRDs and webhooks before {before_what}"),
        action,
        f"LIST Namespace, CustomResourceDefinition, MutatingWebhookConfiguration, "
        f"ValidatingWebhookConfiguration; keep the names in ConfigMap "
        f"{INVENTORY_NAMESPACE}/{inventory_name(ctx)} key {key} (written once, so a retry "
        f"compares with the state before its first try)",
    )


def verify_op(
    step_phase: str, role: str, ctx: RunContext, key: str, after_what: str, timeout: float
) -> Op:
    """Wait until the lists equal the ones stored under ``key``; fail naming the rest."""

    def action(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[role]
        before = stored_snapshot(cluster, ctx, key)
        if before is None:
            raise StepFailed(
                f"no inventory {key!r} in {INVENTORY_NAMESPACE}/{inventory_name(ctx)}: the "
                f"state before install was never recorded, so it cannot be compared"
            )

        def check() -> Readiness:
            gaps = differences(before, snapshot(cluster))
            return Readiness(not gaps, tuple(gaps))

        wait_for(
            check,
            what=f"{role} cluster: namespaces, CRDs and webhooks as before {after_what}",
            timeout=timeout,
            interval=cluster.poll_interval,
        )
        return {f"inventory_{role}_{key}": "as before"}

    return call_op(
        step_phase,
        role,
        "wait",
        step_text(COMPONENT, f"namespaces, CRDs and webhooks are as before {after_what}"),
        action,
        f"LIST the same four kinds and compare with ConfigMap "
        f"{INVENTORY_NAMESPACE}/{inventory_name(ctx)} key {key}; wait up to {timeout:g}s, then "
        f"fail naming what was left behind or removed",
    )


def remove_op(step_phase: str, role: str, ctx: RunContext) -> Op:
    def action(clusters: Clusters) -> None:
        clusters[role].delete("v1", "ConfigMap", inventory_name(ctx), INVENTORY_NAMESPACE)

    return call_op(
        step_phase,
        role,
        "api",
        step_text(COMPONENT, "remove the run's inventory ConfigMap"),
        action,
        f"DELETE v1 ConfigMap {INVENTORY_NAMESPACE}/{inventory_name(ctx)}",
    )


def iteration_component(
    ctx: RunContext, iteration: int, mesh: str, namespace_deletion: float
) -> Component:
    """The inventory part of one iteration: both clusters recorded before ``mesh`` is
    installed, and checked against that record once it is uninstalled."""
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    key = iteration_key(iteration)
    part = Component("inventory")
    for role in ROLES:
        part.install.append(record_op(install, role, ctx, key, f"{mesh} is installed"))
        part.uninstall.append(
            verify_op(uninstall, role, ctx, key, f"{mesh} was installed", namespace_deletion)
        )
    return part

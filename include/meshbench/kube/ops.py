"""Steps that are planned and run from the same description.

An ``Op`` pairs a plan ``Step`` with the action that carries it out, so the plan printed by
``meshbench plan`` and shown in the DAG's doc is, by construction, what the task does.
Environments and mesh installers return lists of ops per DAG task; the backend runs them
in order or collects their steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from meshbench.backend import Step, StepFailed
from meshbench.kube.api import object_name
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.waits import Readiness

log = logging.getLogger(__name__)

Action = Callable[[Clusters], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Op:
    step: Step
    action: Action


# libyaml's emitter writes the same text about five times faster; the DAG docs render every
# environment's manifests each time the DAG folder is parsed.
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _ManifestDumper(_SafeDumper):
    """Multi-line strings (an nginx.conf in a ConfigMap) as readable ``|`` blocks."""


def _represent_text(dumper: yaml.BaseDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_ManifestDumper.add_representer(str, _represent_text)


def render_manifests(manifests: Iterable[Mapping[str, Any]]) -> str:
    return yaml.dump_all(
        [dict(m) for m in manifests], Dumper=_ManifestDumper, sort_keys=False
    ).rstrip()


def run_ops(ops: Sequence[Op], clusters: Clusters) -> dict[str, Any]:
    """Run ``ops`` in order. Returns ``{"steps": [...], **what the actions returned}``; the
    first failure raises ``StepFailed`` naming the step."""
    summary: dict[str, Any] = {"steps": []}
    for number, op in enumerate(ops, 1):
        where = f" [{op.step.cluster}]" if op.step.cluster else ""
        log.info("step %d/%d%s: %s", number, len(ops), where, op.step.description)
        try:
            result = op.action(clusters)
        except StepFailed as exc:
            raise StepFailed(f"{op.step.description}{where}: {exc}") from exc
        summary["steps"].append(f"{op.step.description}{where}")
        if result:
            summary.update(result)
    return summary


def plan_steps(ops: Iterable[Op]) -> list[Step]:
    return [op.step for op in ops]


def apply_op(phase: str, role: str, manifests: Sequence[Mapping[str, Any]], description: str) -> Op:
    manifests = [dict(m) for m in manifests]
    names = ", ".join(object_name(m) for m in manifests)

    def action(clusters: Clusters) -> None:
        clusters[role].apply(manifests)

    return Op(
        Step(
            phase,
            "manifest",
            f"{description} (server-side apply: {names})",
            render_manifests(manifests),
            role,
        ),
        action,
    )


def wait_op(
    phase: str,
    role: str,
    description: str,
    wait: Callable[[KubeCluster], Any],
    detail: str = "",
    record_as: str | None = None,
) -> Op:
    """A wait (``wait`` calls one of ``KubeCluster.wait_*``); its value is returned under
    ``record_as`` when given (a LoadBalancer address, say)."""

    def action(clusters: Clusters) -> Mapping[str, Any] | None:
        value = wait(clusters[role])
        return {record_as: value} if record_as else None

    return Op(Step(phase, "wait", description, detail, role), action)


def check_op(
    phase: str,
    role: str,
    description: str,
    check: Callable[[KubeCluster], Readiness],
    detail: str = "",
) -> Op:
    """A one-shot check that fails the step at once when not satisfied."""

    def action(clusters: Clusters) -> None:
        state = check(clusters[role])
        if not state.ready:
            raise StepFailed("; ".join(state.pending) or "check failed")

    return Op(Step(phase, "api", description, detail, role), action)


def delete_op(
    phase: str,
    role: str,
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    wait_timeout: float | None,
    description: str | None = None,
) -> Op:
    """Delete an object (already gone is fine), optionally waiting until it has disappeared."""
    where = f"{namespace}/{name}" if namespace else name
    text = description or f"delete {kind} {where}"
    detail = f"DELETE {api_version} {kind} {where} (propagationPolicy=Background)"
    if wait_timeout:
        detail += f"; wait up to {wait_timeout:g}s until it is gone"

    def action(clusters: Clusters) -> None:
        cluster = clusters[role]
        cluster.delete(api_version, kind, name, namespace)
        if wait_timeout:
            cluster.wait_gone(api_version, kind, name, wait_timeout, namespace)

    return Op(Step(phase, "api", text, detail, role), action)


def call_op(
    phase: str,
    role: str | None,
    kind: str,
    description: str,
    action: Action,
    detail: str = "",
) -> Op:
    """Any other action, described in words (and ``detail``) for the plan."""
    return Op(Step(phase, kind, description, detail, role), action)

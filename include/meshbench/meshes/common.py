"""What the Istio, Kuma and NSM installers share: names, versions, support ranges, and
ops that the kube layer does not have (CLI calls that need files, API calls against a
control plane behind a port-forward, waits on CLI output).

Every step description starts with the component it belongs to ("control plane: ...").
Install steps run the components in order and uninstall steps run them in reverse, so the
plan shows (and tests check) that uninstall mirrors install.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshbench.backend import RunContext, StepFailed
from meshbench.config import BenchmarkConfig, ContainerResources, KubernetesMesh
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.load_balancers import NO_POLICY, LoadBalancerPolicy
from meshbench.kube.ops import Op, call_op, delete_op, render_manifests
from meshbench.kube.redact import format_command
from meshbench.kube.waits import Readiness, wait_for
from meshbench.meshes.base import MeshInstaller
from meshbench.names import ROLES as ROLES  # re-exported for the installers
from meshbench.names import iteration_task_id as phase  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# Labels on everything meshbench creates outside the workload namespace, so a person
# looking at a cluster sees whose it is.
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "meshbench"}
RUN_LABEL = "meshbench.io/run"


def other(role: str) -> str:
    return "server" if role == "client" else "client"


def managed_labels(ctx: RunContext) -> dict[str, str]:
    return {**MANAGED_LABELS, RUN_LABEL: ctx.slug}


def component_of(description: str) -> str:
    """The component a step belongs to: the text before the first ': '."""
    return description.split(": ", 1)[0]


def step_text(component: str, text: str) -> str:
    return f"{component}: {text}"


# ------------------------------------------------------------------------- versions


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split(".") if part.isdigit())


def release_line(version: str) -> str:
    """``1.19`` for ``1.19.3``; ``1.11`` for ``v1.11.1``."""
    return ".".join(version.lstrip("v").split(".")[:2])


def at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


def kubernetes_minor(version: str | None) -> str | None:
    """``1.28`` from ``v1.28.3`` or ``1.28``; None when unknown."""
    if not version:
        return None
    match = re.match(r"v?(1)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def require_version(ctx: RunContext, mesh: str) -> str:
    if not ctx.mesh_version:
        raise StepFailed(f"no {mesh} version: set it in the version profile")
    return ctx.mesh_version


@dataclass(frozen=True)
class SupportCheck:
    """Whether a mesh version supports the environment's Kubernetes version."""

    mesh: str
    version: str
    kubernetes: str | None
    minimum: str | None = None
    maximum: str | None = None
    source: str | None = None

    @property
    def known(self) -> bool:
        return self.minimum is not None and self.kubernetes is not None

    @property
    def supported(self) -> bool | None:
        if not self.known:
            return None
        assert self.minimum and self.maximum and self.kubernetes
        wanted = version_tuple(self.kubernetes)
        return version_tuple(self.minimum) <= wanted <= version_tuple(self.maximum)

    def record(self) -> dict[str, Any]:
        return {
            "kubernetes_version": self.kubernetes,
            "supported_range": f"{self.minimum}-{self.maximum}" if self.minimum else None,
            "supported": self.supported,
            "source": self.source,
        }

    def warning(self) -> str | None:
        line = release_line(self.version)
        if self.minimum is None:
            return (
                f"{self.mesh} {self.version}: no supported Kubernetes range is configured for "
                f"release line {line} (meshes.{self.mesh}.supported_kubernetes); whether it "
                f"runs on Kubernetes {self.kubernetes or '(unknown)'} was not checked"
            )
        if self.kubernetes is None:
            return (
                f"{self.mesh} {self.version} supports Kubernetes {self.minimum}-{self.maximum}, "
                f"but this environment sets no kubernetes_version: support is not checked "
                f"before the clusters are adopted"
            )
        if not self.supported:
            return (
                f"UNSUPPORTED COMBINATION: {self.mesh} {self.version} supports Kubernetes "
                f"{self.minimum}-{self.maximum} ({self.source}); this environment runs "
                f"{self.kubernetes}. The run goes ahead, but its results come from a "
                f"combination upstream does not support."
            )
        return None


def support_check(config: BenchmarkConfig, ctx: RunContext, mesh: str) -> SupportCheck:
    settings: KubernetesMesh = config.meshes.get(mesh)  # type: ignore[assignment]
    version = ctx.mesh_version or "(none)"
    kubernetes = kubernetes_minor(config.environment(ctx.environment).kubernetes_version)
    found = settings.supported_kubernetes.get(release_line(version))
    if found is None:
        return SupportCheck(mesh, version, kubernetes)
    return SupportCheck(mesh, version, kubernetes, found.min, found.max, found.source)


def resources_record(spec: ContainerResources) -> dict[str, Any]:
    return {
        "requests": {"cpu": spec.cpu_request, "memory": spec.memory_request},
        "limits": {"cpu": spec.cpu_limit, "memory": spec.memory_limit},
    }


# ------------------------------------------------------------------------- ops


@dataclass(frozen=True)
class CliFile:
    """A file a CLI call reads (an IstioOperator, a kustomization), written to a private
    temporary folder when the step runs and shown in full in the plan."""

    name: str
    text: str


def cli_op(
    step_phase: str,
    role: str,
    description: str,
    tool: str,
    args: Sequence[str],
    timeout: float,
    files: Sequence[CliFile] = (),
    stdin: str | None = None,
    check: Callable[[str], None] | None = None,
    secret_output: bool = False,
    note: str = "",
    gone_if: Sequence[str] = (),
) -> Op:
    """Run ``tool args`` against the ``role`` cluster. ``{dir}`` in an argument is the
    folder holding ``files``. ``check`` looks at stdout and raises ``StepFailed``.
    ``gone_if``: error texts meaning there was nothing left to remove (a teardown step
    finding its object already gone succeeds)."""
    shown = [arg.replace("{dir}", "<tmp>") for arg in args]
    detail = format_command([tool, *shown])
    for item in files:
        detail += f"\n# <tmp>/{item.name}\n{item.text.rstrip()}"
    if gone_if:
        detail += "\nalready gone is fine (" + "; ".join(repr(text) for text in gone_if) + ")"
    if note:
        detail += f"\n{note}"

    def action(clusters: Clusters) -> None:
        with tempfile.TemporaryDirectory(prefix="meshbench-") as folder:
            for item in files:
                path = Path(folder) / item.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(item.text, encoding="utf-8")
            real = [arg.replace("{dir}", folder) for arg in args]
            result = clusters[role].run(
                tool,
                real,
                timeout=timeout,
                stdin=stdin,
                secret_output=secret_output,
                check=not gone_if,
            )
        if result.returncode != 0:
            output = f"{result.stdout}\n{result.stderr}"
            if any(text in output for text in gone_if):
                return
            raise StepFailed(
                f"{result.command}: exit {result.returncode}; stderr: {result.stderr[-2000:]}"
            )
        if check is not None:
            check(result.stdout)

    return call_op(step_phase, role, "command", description, action, detail)


def poll_cli(
    cluster: KubeCluster,
    what: str,
    tool: str,
    args: Sequence[str] | Callable[[KubeCluster], Sequence[str]],
    judge: Callable[[str], Readiness],
    timeout: float,
    interval: float,
    command_timeout: float,
) -> Any:
    """Run a read-only CLI command until ``judge`` finds its output ready; its value."""

    def attempt() -> Readiness:
        real = args(cluster) if callable(args) else args
        result = cluster.run(tool, list(real), timeout=command_timeout, check=False)
        if result.returncode != 0:
            return Readiness(False, (f"exit {result.returncode}: {result.stderr[-300:]}",))
        return judge(result.stdout)

    return wait_for(
        attempt, what=f"{cluster.role} cluster: {what}", timeout=timeout, interval=interval
    )


def poll_cli_op(
    step_phase: str,
    role: str,
    description: str,
    tool: str,
    args: Sequence[str],
    judge: Callable[[str], Readiness],
    timeout: float,
    interval: float,
    command_timeout: float,
    note: str = "",
    record_as: str | None = None,
) -> Op:
    detail = f"{format_command([tool, *args])}\nrepeat every {interval:g}s, up to {timeout:g}s"
    if note:
        detail += f"\n{note}"

    def action(clusters: Clusters) -> dict[str, Any] | None:
        value = poll_cli(
            clusters[role], description, tool, args, judge, timeout, interval, command_timeout
        )
        return {record_as: value} if record_as else None

    return call_op(step_phase, role, "wait", description, action, detail)


def api_wait_op(
    step_phase: str,
    role: str,
    description: str,
    check: Callable[[KubeCluster], Readiness],
    timeout: float,
    detail: str,
    record_as: str | None = None,
) -> Op:
    """Poll an API check (``check`` gets the cluster, not just its API)."""

    def action(clusters: Clusters) -> dict[str, Any] | None:
        cluster = clusters[role]
        value = wait_for(
            lambda: check(cluster),
            what=f"{role} cluster: {description}",
            timeout=timeout,
            interval=cluster.poll_interval,
        )
        return {record_as: value} if record_as else None

    return call_op(step_phase, role, "wait", description, action, detail)


def redacted_secret(manifest: Mapping[str, Any], note: str) -> dict[str, Any]:
    """A Secret as a plan may show it: keys kept, values replaced by ``note``."""
    shown = {key: value for key, value in manifest.items() if key not in ("data", "stringData")}
    for key in ("data", "stringData"):
        if key in manifest:
            shown[key] = {name: note for name in manifest[key]}
    return shown


def render(manifests: Sequence[Mapping[str, Any]]) -> str:
    return render_manifests(manifests)


@dataclass
class Component:
    """One part of a mesh: its install, readiness and uninstall ops (all of one kind of
    thing, so uninstall can run the components in reverse)."""

    name: str
    install: list[Op] = field(default_factory=list)
    uninstall: list[Op] = field(default_factory=list)


class ComponentMeshInstaller(MeshInstaller):
    """An installer made of components: install runs them in order, uninstall in reverse."""

    # What the inventory steps call the mesh ("Istio is installed").
    display_name: str
    # Install order; uninstall runs them backwards.
    component_builders: tuple[ComponentBuilder, ...] = ()
    # False where teardown deletes by name, so that it never needs the environment's
    # load-balancer settings; an installer whose uninstall steps render them keeps True.
    uninstall_uses_load_balancer_policy = True

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self.timeouts = config.kubernetes.timeouts
        self._building_teardown = False

    def components(self, ctx: RunContext, iteration: int) -> list[Component]:
        return [build(self, ctx, iteration) for build in self.component_builders]

    def install_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        return install_sequence(self.components(ctx, iteration))

    def uninstall_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        """With ``uninstall_uses_load_balancer_policy`` False, built without asking the
        environment anything: its answers (the other cluster's node addresses, for
        load-balancer source ranges) need clusters that may be gone by now. Each op then
        reaches only its own cluster when it runs, so an unreachable one fails its own steps
        alone."""
        self._building_teardown = not self.uninstall_uses_load_balancer_policy
        try:
            components = self.components(ctx, iteration)
        finally:
            self._building_teardown = False
        return uninstall_sequence(components)

    def load_balancer_policy(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> LoadBalancerPolicy:
        if self._building_teardown:
            # Only install ops use it, and those built alongside the teardown are dropped.
            return NO_POLICY
        return super().load_balancer_policy(ctx, role, clients)


ComponentBuilder = Callable[[ComponentMeshInstaller, RunContext, int], Component]


def inventory_component(
    installer: ComponentMeshInstaller, ctx: RunContext, iteration: int
) -> Component:
    """Both clusters' namespaces, CRDs and webhooks recorded before the mesh is installed
    and compared with that record once it is uninstalled."""
    from meshbench.meshes import inventory  # it builds on this module

    return inventory.iteration_component(
        ctx, iteration, installer.display_name, installer.timeouts.namespace_deletion
    )


def install_sequence(components: Sequence[Component]) -> list[Op]:
    return [op for component in components for op in component.install]


def uninstall_sequence(components: Sequence[Component]) -> list[Op]:
    """The components' teardown steps, last component first, each attempted even when an
    earlier one failed (a stuck uninstall must not leave the rest behind); a final step
    fails the task naming every step that did not succeed."""
    ops = [op for component in reversed(components) for op in component.uninstall]
    if not ops:
        return []
    failures: list[str] = []

    def attempt(op: Op) -> Op:
        def action(clusters: Clusters) -> Mapping[str, Any] | None:
            try:
                return op.action(clusters)
            except Exception as exc:  # every teardown step runs; the last step reports
                where = f" [{op.step.cluster}]" if op.step.cluster else ""
                reason = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
                failures.append(f"{op.step.description}{where}: {reason}")
                log.warning(
                    "teardown step failed, going on: %s%s: %s", op.step.description, where, reason
                )
                return None

        return Op(op.step, action)

    def report(clusters: Clusters) -> None:
        if failures:
            raise StepFailed(f"{len(failures)} teardown step(s) failed: " + " | ".join(failures))

    return [
        *(attempt(op) for op in ops),
        call_op(
            ops[0].step.phase,
            None,
            "note",
            step_text("teardown", "fail if any step above failed (each one was attempted)"),
            report,
        ),
    ]


def delete_namespace_op(
    step_phase: str, role: str, component: str, namespace: str, timeout: float, text: str
) -> Op:
    """Delete a namespace the component made and wait until it is gone with what it held."""
    return delete_op(
        step_phase, role, "v1", "Namespace", namespace, None, timeout, step_text(component, text)
    )


def delete_secret_op(
    step_phase: str, role: str, component: str, namespace: str, name: str, why: str = ""
) -> Op:
    """Delete a Secret the component made (already gone is fine); ``why`` says whose it is."""
    text = f"delete Secret {namespace}/{name}" + (f" ({why})" if why else "")
    return delete_op(
        step_phase, role, "v1", "Secret", name, namespace, None, step_text(component, text)
    )


def namespace_manifest(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(labels)},
    }


def crd_names_in_group(cluster: KubeCluster, group: str) -> list[str]:
    crds = cluster.api.list("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    return sorted(
        crd["metadata"]["name"]
        for crd in crds
        if (crd.get("spec") or {}).get("group") == group
        or crd["metadata"]["name"].endswith(f".{group}")
    )


def delete_crds_op(
    step_phase: str, role: str, component: str, group: str, keep: Callable[[KubeCluster], set[str]]
) -> Op:
    """Delete the CRDs of API group ``group`` except those ``keep`` names (CRDs the cluster
    had before the run)."""

    def action(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[role]
        kept = keep(cluster)
        deleted = []
        for name in crd_names_in_group(cluster, group):
            if name in kept:
                continue
            cluster.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
            deleted.append(name)
        return {f"crds_deleted_{role}_{group}": deleted}

    return call_op(
        step_phase,
        role,
        "api",
        step_text(component, f"delete the {group} CRDs the run added"),
        action,
        f"LIST apiextensions.k8s.io/v1 CustomResourceDefinition; DELETE each of group {group} "
        "that was not there before the run (see the inventory)",
    )

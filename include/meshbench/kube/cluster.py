"""One task's view of its clusters: API, CLIs bound to the cluster's kubeconfig, waits.

``Clusters`` opens each cluster lazily, on first use, and closes everything (removing the
kubeconfig files) when the block ends, so a step that creates a cluster can run before a
step that talks to it within one task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshbench.backend import StepFailed
from meshbench.kube.access import ClusterAccess
from meshbench.kube.api import DynamicKubeApi, KubeApi, object_name
from meshbench.kube.portforward import PortForward, start_port_forward
from meshbench.kube.runner import CommandResult, CommandRunner
from meshbench.kube.waits import (
    Readiness,
    condition_state,
    deployment_state,
    gone_state,
    load_balancer_state,
    pods_state,
    wait_for,
)

# Builds the API for an opened cluster: (access, kubeconfig path) -> KubeApi.
ApiFactory = Callable[[ClusterAccess, str], KubeApi]


def default_api_factory(access: ClusterAccess, kubeconfig_path: str) -> KubeApi:
    return DynamicKubeApi(access.api_client(kubeconfig_path))


@dataclass
class KubeCluster:
    """An opened cluster. ``runner`` runs CLIs against this cluster only."""

    role: str
    api: KubeApi
    runner: CommandRunner
    kubeconfig_path: str
    poll_interval: float = 2.0

    # -- objects ---------------------------------------------------------------------
    def apply(self, manifests: Iterable[Mapping[str, Any]]) -> list[str]:
        """Server-side apply each manifest in order; returns ``kind/ns/name`` of each."""
        applied = []
        for manifest in manifests:
            self.api.apply(manifest)
            applied.append(object_name(manifest))
        return applied

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        return self.api.delete(api_version, kind, name, namespace)

    # -- CLIs ------------------------------------------------------------------------
    def run(self, tool: str, args: Sequence[str], **options: Any) -> CommandResult:
        return self.runner.run(tool, args, **options)

    def kubectl(self, *args: str, **options: Any) -> CommandResult:
        return self.runner.run("kubectl", args, **options)

    def port_forward(
        self, namespace: str, target: str, remote_port: int, ready_timeout: float = 30.0
    ) -> PortForward:
        return start_port_forward(self.runner, namespace, target, remote_port, ready_timeout)

    # -- waits -----------------------------------------------------------------------
    def wait(self, check: Callable[[KubeApi], Readiness], what: str, timeout: float) -> Any:
        return wait_for(
            lambda: check(self.api),
            what=f"{self.role} cluster: {what}",
            timeout=timeout,
            interval=self.poll_interval,
        )

    def _wait_namespaced(
        self,
        state: Callable[[KubeApi, str, str], Readiness],
        namespace: str,
        name: str,
        what: str,
        timeout: float,
    ) -> Any:
        """Wait until ``state`` of object ``namespace/name`` is ready; ``what`` names the
        wait for the message, the object's name follows it."""
        return self.wait(
            lambda api: state(api, namespace, name), f"{what} {namespace}/{name}", timeout
        )

    def wait_rollout(self, namespace: str, name: str, timeout: float) -> Any:
        return self._wait_namespaced(
            deployment_state, namespace, name, "rollout of deployment", timeout
        )

    def wait_pods_ready(
        self, namespace: str, label_selector: str, timeout: float, minimum: int = 1
    ) -> Any:
        return self.wait(
            lambda api: pods_state(api, namespace, label_selector, minimum),
            f"pods {label_selector!r} in {namespace} ready",
            timeout,
        )

    def wait_load_balancer(self, namespace: str, name: str, timeout: float) -> str:
        return self._wait_namespaced(
            load_balancer_state, namespace, name, "LoadBalancer address of service", timeout
        )

    def wait_condition(
        self,
        api_version: str,
        kind: str,
        name: str,
        condition: str,
        timeout: float,
        namespace: str | None = None,
    ) -> Any:
        return self.wait(
            lambda api: condition_state(api, api_version, kind, name, condition, namespace),
            f"{kind} {name} {condition}",
            timeout,
        )

    def wait_gone(
        self,
        api_version: str,
        kind: str,
        name: str,
        timeout: float,
        namespace: str | None = None,
    ) -> Any:
        return self.wait(
            lambda api: gone_state(api, api_version, kind, name, namespace),
            f"{kind} {name} deleted",
            timeout,
        )


class Clusters:
    """The clusters of one task, opened on first use and closed together.

    Use as a context manager; ``clusters["server"]`` opens the server cluster.
    """

    def __init__(
        self,
        accesses: Mapping[str, ClusterAccess],
        runner: CommandRunner,
        api_factory: ApiFactory = default_api_factory,
        poll_interval: float = 2.0,
    ) -> None:
        self._accesses = dict(accesses)
        self._runner = runner
        self._api_factory = api_factory
        self._poll_interval = poll_interval
        self._opened: dict[str, KubeCluster] = {}
        self._stack = contextlib.ExitStack()

    def access(self, role: str) -> ClusterAccess:
        return self._accesses[role]

    def __getitem__(self, role: str) -> KubeCluster:
        if role not in self._opened:
            if role not in self._accesses:
                raise StepFailed(f"no {role} cluster in this environment")
            access = self._accesses[role]
            path = self._stack.enter_context(access.open())
            self._opened[role] = KubeCluster(
                role,
                self._api_factory(access, path),
                self._runner.with_kubeconfig(path),
                path,
                self._poll_interval,
            )
        return self._opened[role]

    def close(self) -> None:
        try:
            for cluster in self._opened.values():
                close = getattr(cluster.api, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        close()
        finally:
            self._opened.clear()
            self._stack.close()

    def __enter__(self) -> Clusters:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

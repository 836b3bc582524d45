"""create_clusters: the steps, and the waits until both clusters have Ready nodes."""

from __future__ import annotations

import functools
import logging

from meshbench.backend import RunContext, StepFailed
from meshbench.environments import capi_manifests as manifests
from meshbench.environments.capi.clusters import WorkloadClusterManifests
from meshbench.environments.capi.management import KUBECONFIG_SECRET, MANAGEMENT, NODES_PER_CLUSTER
from meshbench.environments.capi.providers import ClusterApiProviders
from meshbench.environments.provider import ROLES
from meshbench.kube.api import KubeApi
from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, call_op
from meshbench.kube.redact import format_command
from meshbench.kube.waits import Readiness

log = logging.getLogger(__name__)


class ClusterCreation(ClusterApiProviders, WorkloadClusterManifests):
    """create_clusters: providers, both workload clusters, their CNI, and the waits."""

    def _describe_conditions(self, clusters: Clusters, name: str) -> None:
        """Log clusterctl's condition tree (best effort, for whoever reads the task log)."""
        try:
            result = clusters[MANAGEMENT].run(
                "clusterctl",
                self.describe_cluster_args(name),
                check=False,
                timeout=self.env.command_timeout,
            )
            log.info("clusterctl describe cluster %s:\n%s", name, result.stdout.strip())
        except StepFailed as exc:
            log.warning("clusterctl describe cluster %s failed: %s", name, exc)

    def _wait_cluster_condition(
        self, clusters: Clusters, name: str, condition: str, timeout: float
    ) -> None:
        try:
            clusters[MANAGEMENT].wait_condition(
                manifests.CLUSTER_API, "Cluster", name, condition, timeout, self.env.namespace
            )
        except StepFailed:
            self._describe_conditions(clusters, name)
            raise

    def create_ops(self, ctx: RunContext) -> list[Op]:
        env = self.env
        ns = env.namespace
        names = self.cluster_names(ctx)
        on_management = functools.partial(call_op, "create_clusters", MANAGEMENT, "wait")
        ops: list[Op] = [self.providers_op()]
        ops += [self.apply_cluster_op(ctx, role) for role in ROLES]
        ops += [
            on_management(
                f"Wait until Cluster {name} has ControlPlaneInitialized",
                lambda clusters, name=name: self._wait_cluster_condition(
                    clusters, name, "ControlPlaneInitialized", env.cluster_ready_timeout
                ),
                f"kubectl wait --for=condition=ControlPlaneInitialized cluster/{name} -n "
                f"{ns} --timeout={env.cluster_ready_timeout:g}s",
            )
            for name in names.values()
        ]
        cni_args = ["apply", "--server-side", "--force-conflicts", "-f", env.cni_manifest_url]
        ops += [
            self.kubectl_op(
                "create_clusters",
                role,
                f"Install the CNI in {name} (the template installs none; the control plane "
                f"is not Ready without one)",
                cni_args,
                f"kubeconfig: Secret {ns}/{KUBECONFIG_SECRET.format(name=name)} (what "
                f"clusterctl get kubeconfig {name} prints), 0600 temporary file\n",
            )
            for role, name in names.items()
        ]
        for name in names.values():
            workers = f"{name}-{manifests.WORKER_POOL}"
            ops.append(
                on_management(
                    f"Wait until Cluster {name} is Ready and its worker MachineDeployment is "
                    f"Available; log clusterctl describe",
                    lambda clusters, name=name, workers=workers: self._wait_ready(
                        clusters, name, workers
                    ),
                    f"kubectl wait --for=condition=Ready cluster/{name} -n {ns}\n"
                    f"kubectl wait --for=condition=Available machinedeployment/{workers} -n "
                    f"{ns}\n" + format_command(["clusterctl", *self.describe_cluster_args(name)]),
                )
            )
        nodes_ready = [
            "wait",
            "--for=condition=Ready",
            "nodes",
            "--all",
            f"--timeout={env.cluster_ready_timeout:g}s",
        ]
        ops += [
            call_op(
                "create_clusters",
                role,
                "wait",
                f"Wait until both nodes of {name} are Ready",
                lambda clusters, role=role: self._wait_nodes(clusters, role, nodes_ready),
                format_command(["kubectl", *nodes_ready]),
            )
            for role, name in names.items()
        ]
        return ops

    def _wait_ready(self, clusters: Clusters, name: str, workers: str) -> None:
        timeout = self.env.cluster_ready_timeout
        self._wait_cluster_condition(clusters, name, "Ready", timeout)
        clusters[MANAGEMENT].wait_condition(
            manifests.CLUSTER_API,
            "MachineDeployment",
            workers,
            "Available",
            timeout,
            self.env.namespace,
        )
        self._describe_conditions(clusters, name)

    def _wait_nodes(self, clusters: Clusters, role: str, wait_args: list[str]) -> None:
        cluster = clusters[role]

        def state(api: KubeApi) -> Readiness:
            nodes = api.list("v1", "Node")
            if len(nodes) < NODES_PER_CLUSTER:
                return Readiness(False, (f"{len(nodes)} of {NODES_PER_CLUSTER} nodes joined",))
            return Readiness(True)

        cluster.wait(state, f"{NODES_PER_CLUSTER} nodes registered", self.env.cluster_ready_timeout)
        cluster.kubectl(*wait_args, timeout=self.env.cluster_ready_timeout + 30)

"""The ``existing`` environment: two clusters someone already runs.

Each cluster is an Airflow connection of type ``kubernetes`` (kubeconfig content or path,
or in-cluster, plus an optional context). meshbench creates and deletes no cluster here:
``create_clusters`` only checks both API servers answer and records their versions, and
``delete_clusters`` only makes sure the run's namespace is gone. Everything a run makes
lives in the namespace ``mb-<slug>`` in both clusters; metrics-server is installed if the
settings allow it and it is missing, and then left in place (see docs/real-clusters.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from meshbench.backend import RunContext, Step, StepFailed
from meshbench.config import BenchmarkConfig, ExistingEnvironment
from meshbench.environments.kubernetes import ROLES, KubernetesBackend, build_kubernetes_backend
from meshbench.environments.provider import ClusterSourceBase
from meshbench.kube.access import ConnectionAccess
from meshbench.kube.cluster import Clusters

log = logging.getLogger(__name__)


def _minor(version: str | None) -> str | None:
    if not version:
        return None
    parts = version.lstrip("v").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else None


class ExistingClusters(ClusterSourceBase):
    """Adopts the two clusters named by Airflow connections; creates and deletes none."""

    environment = "existing"

    @property
    def settings(self) -> ExistingEnvironment:
        return self.config.environments.existing

    def conn_id(self, role: str) -> str:
        return self.settings.client_conn_id if role == "client" else self.settings.server_conn_id

    def access(self, ctx: RunContext, role: str) -> ConnectionAccess:
        if role not in ROLES:
            raise StepFailed(f"the existing environment has no {role} cluster")
        return ConnectionAccess(role, self.conn_id(role))

    # -- plan ----------------------------------------------------------------------------
    def plan_warnings(self, ctx: RunContext) -> list[str]:
        return []

    def plan_create(self, ctx: RunContext) -> list[Step]:
        expected = self.settings.kubernetes_version
        return [
            Step(
                "create_clusters",
                "api",
                f"adopt the {role} cluster from Airflow connection {self.conn_id(role)!r} "
                "(nothing is created)",
                f"GET /version; expect Kubernetes {expected or '(any version)'}",
                role,
            )
            for role in ROLES
        ]

    def plan_prepare(self, ctx: RunContext) -> list[Step]:
        return []

    def plan_delete(self, ctx: RunContext) -> list[Step]:
        return [
            Step(
                "delete_clusters",
                "note",
                "release both clusters: nothing to delete (the run's namespace is gone)",
            )
        ]

    # -- tasks ---------------------------------------------------------------------------
    def create(self, ctx: RunContext) -> dict[str, Any]:
        expected = _minor(self.settings.kubernetes_version)
        found: dict[str, Any] = {}
        with Clusters(
            {role: self.access(ctx, role) for role in ROLES}, self.runner, self.api_factory
        ) as clusters:
            for role in ROLES:
                cluster = clusters[role]
                try:
                    version = cluster.api.server_version()
                except StepFailed:
                    raise
                except Exception as exc:
                    raise StepFailed(
                        f"{role} cluster (connection {self.conn_id(role)!r}) does not answer: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                entry = {**clusters.access(role).describe(), "server_version": version}
                if expected and _minor(version) != expected:
                    entry["version_note"] = (
                        f"configured kubernetes_version {expected}, cluster runs {version}"
                    )
                    log.warning("%s cluster: %s", role, entry["version_note"])
                found[role] = entry
        return {"environment": "existing", "clusters": found}

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def delete(self, ctx: RunContext) -> dict[str, Any]:
        return {"deleted": []}

    def service_annotations(self) -> dict[str, str]:
        return dict(self.settings.load_balancer_annotations)

    def load_balancer_source_ranges(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> list[str]:
        """The configured egress networks of ``clients`` (default: the other cluster); none
        when ``egress_cidrs`` is not set."""
        egress = self.settings.egress_cidrs
        if not egress:
            return []
        ranges: list[str] = []
        for client in clients or ("server" if role == "client" else "client",):
            ranges += [cidr for cidr in egress[client] if cidr not in ranges]  # type: ignore[index]
        return ranges

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        info: dict[str, Any] = {
            "environment": "existing",
            "client_conn_id": self.settings.client_conn_id,
            "server_conn_id": self.settings.server_conn_id,
            "kubernetes_version": self.settings.kubernetes_version,
            "clusters_created_by_meshbench": False,
            "load_balancer": "whatever the clusters provide (recorded by their owner)",
        }
        if self.settings.load_balancer_annotations or self.settings.egress_cidrs:
            info["load_balancer_settings"] = {
                "annotations": dict(self.settings.load_balancer_annotations),
                "egress_cidrs": {
                    role: list(networks) for role, networks in self.settings.egress_cidrs.items()
                },
            }
        return info


def build_backend(config: BenchmarkConfig, mesh: str, **options: Any) -> KubernetesBackend:
    """The registry's entry point: the two clusters of the Airflow connections as the
    source of the shared Kubernetes backend."""
    return build_kubernetes_backend(config, mesh, ExistingClusters, **options)

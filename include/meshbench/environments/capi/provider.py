"""The capi provider as a whole: its tasks, its plan, and the registry's entry point."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from meshbench.backend import RunContext, Step
from meshbench.config import BenchmarkConfig
from meshbench.environments.capi.create import ClusterCreation
from meshbench.environments.capi.infrastructure import LoadBalancerSetup
from meshbench.environments.capi.management import ENVIRONMENT
from meshbench.environments.capi.teardown import ClusterTeardown
from meshbench.environments.kubernetes import build_kubernetes_backend
from meshbench.environments.provider import ROLES
from meshbench.kube.ops import plan_steps, run_ops

if TYPE_CHECKING:
    from meshbench.backend import Backend

log = logging.getLogger(__name__)


class CapiProvider(ClusterCreation, LoadBalancerSetup, ClusterTeardown):
    """Cluster API workload clusters for one run; every method is safe to repeat."""

    # -- the tasks ---------------------------------------------------------------------
    def create(self, ctx: RunContext) -> dict[str, Any]:
        with self.clusters(ctx) as clusters:
            summary = run_ops(self.create_ops(ctx), clusters)
        return {
            "environment": ENVIRONMENT,
            "namespace": self.env.namespace,
            "clusters": {role: summary.get(f"{role}_cluster") for role in ROLES},
            "providers": summary.get("providers"),
            "steps": summary["steps"],
        }

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        with self.clusters(ctx) as clusters:
            summary = run_ops(self.prepare_ops(ctx), clusters)
        return {"metallb": self.env.metallb_mode, "steps": summary["steps"]}

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        env = self.env
        return {
            "provider": f"cluster-api/{env.infrastructure_provider}",
            "cluster_api": env.core_version,
            "infrastructure": f"{env.infrastructure_provider}:{env.infrastructure_version}",
            "kubernetes_version": env.kubernetes_version,
            "clusters": self.cluster_names(ctx),
            "machine_type": env.machine_type,
            "control_plane_machine_type": self.control_plane_machine_type,
            "metro": env.metro,
            "node_os": env.node_os,
            "cluster_template": env.cluster_template,
            "cni": env.cni_manifest_url,
            "metallb": f"{env.metallb_version} ({env.metallb_mode})",
            "prices_per_hour": env.prices.model_dump(),
        }

    # -- plan --------------------------------------------------------------------------
    def plan_create(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.create_ops(ctx))

    def plan_prepare(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.prepare_ops(ctx))

    def plan_delete(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.delete_ops(ctx))

    def plan_warnings(self, ctx: RunContext) -> list[str]:
        warnings = []
        if self.env.infrastructure_provider == "packet":
            warnings.append(
                "Equinix Metal closed in June 2026 and the packet provider is deprecated: this "
                "path reproduces the study's set-up but cannot run there any more. Point "
                "cluster_template, credentials_env_var and metallb_mode at another provider."
            )
        return warnings


def build_backend(config: BenchmarkConfig, mesh: str, **options: Any) -> Backend:
    """The registry's entry point. kubeadm clusters serve self-signed kubelet certificates,
    so metrics-server runs with ``--kubelet-insecure-tls`` here unless told otherwise."""
    from meshbench.environments.cloud import ProvisionedBackend

    return build_kubernetes_backend(
        config,
        mesh,
        CapiProvider,
        backend_type=ProvisionedBackend,
        metrics_server={"kubelet_insecure_tls": True},
        **options,
    )

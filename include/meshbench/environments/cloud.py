"""The backend of the environments whose clusters meshbench creates (aws, capi).

It is the shared ``KubernetesBackend`` (the same per-iteration steps as ``existing``) with
a ``ClusterProvider`` as its cluster source, plus what creating clusters adds:

* the plan is rendered without touching any cloud (the provider answers with
  placeholders while planning) and ends with the cost and duration estimate of the
  environment's whole matrix;
* ``delete_clusters`` removes the run's namespace and runs the mesh installer's
  ``cleanup_pair_ops``, both best effort (so the cloud controller deletes the run's load
  balancers), always deletes the clusters, and returns the cluster-minutes the run used.
"""

from __future__ import annotations

import logging
from typing import Any

from meshbench.backend import Plan, RunContext, Step
from meshbench.config import BenchmarkConfig
from meshbench.environments.estimate import estimate_environment, render_estimate
from meshbench.environments.kubernetes import KubernetesBackend
from meshbench.environments.provider import ClusterProvider
from meshbench.meshes.base import MeshInstaller

log = logging.getLogger(__name__)


class ProvisionedBackend(KubernetesBackend):
    source: ClusterProvider

    def __init__(
        self,
        config: BenchmarkConfig,
        source: ClusterProvider,
        installer: MeshInstaller,
        **options: Any,
    ) -> None:
        super().__init__(config, source, installer, **options)

    def plan(self, ctx: RunContext) -> Plan:
        with self.source.planning():
            plan = super().plan(ctx)
        estimate = estimate_environment(self.config, self.environment)
        step = Step(
            "estimate",
            "note",
            f"Cost and duration of the {self.environment} matrix, one run of each mesh "
            f"(ESTIMATE from config prices and timings; delete_clusters records the actual "
            f"cluster-minutes)",
            render_estimate(estimate),
        )
        return Plan(plan.environment, plan.mesh, (*plan.steps, step), plan.warnings)

    def delete_clusters(self, ctx: RunContext) -> dict[str, Any]:  # type: ignore[override]
        namespace_note = "removed"
        try:
            self._run(ctx, self._namespace_removal_ops(ctx, "delete_clusters"))
        except Exception as exc:  # unreachable or never-created clusters: delete them anyway
            namespace_note = f"not removed ({type(exc).__name__}: {exc})"
            log.warning("run namespace %s %s; deleting the clusters anyway", ctx.slug, exc)
        cleanup_note = self._cleanup_pair(ctx)
        used = self.source.delete(ctx)
        return {**used, "namespace": namespace_note, "mesh_cleanup": cleanup_note}

    def _cleanup_pair(self, ctx: RunContext) -> str:
        """Undo what the installer's prepare_pair made (the plan lists these steps), best
        effort: the clusters are deleted right after, so a failure here only leaves cluster
        objects that go with them."""
        ops = self.installer.cleanup_pair_ops(ctx)
        if not ops:
            return "nothing to clean up"
        try:
            self._run(ctx, ops)
        except Exception as exc:  # unreachable or never-created clusters: delete them anyway
            log.warning(
                "mesh cleanup of %s failed (%s); deleting the clusters anyway", ctx.slug, exc
            )
            return f"not done ({type(exc).__name__}: {exc})"
        return "done"

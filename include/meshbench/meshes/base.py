"""What a mesh installer provides to the Kubernetes backend.

The backend owns the order of a run (environment, workloads, load, clean-up); an
installer adds its own ops at four points and describes how the workloads must look:

- ``prepare_pair_ops``: once per cluster pair (a shared CA, SPIRE federation, a global
  control plane);
- ``install_ops`` / ``ready_ops``: per iteration, before the workloads are deployed;
- ``workload_ready_ops``: per iteration, after the workloads are up (the client proxy
  sees the remote endpoint, ...); the backend adds a probe through the path after them;
- ``uninstall_ops``: per iteration, after the workloads' namespace is gone; they must
  leave the clusters as they were before ``install_ops``.
- ``cleanup_pair_ops``: once per pair, in delete_clusters: undo ``prepare_pair_ops`` so
  adopted clusters end as they were before the run.

Ops are built without touching a cluster (plans are rendered from them); only their
actions do. Names come from ``ctx`` so a retried task finds what an earlier try made.

Every LoadBalancer Service an installer creates gets ``load_balancer_policy(ctx, role)``:
the environment's annotations and source ranges, which the Kubernetes backend provides
(an installer used on its own has none).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from meshbench.backend import RunContext
from meshbench.config import BenchmarkConfig
from meshbench.kube.cluster import Clusters
from meshbench.kube.load_balancers import LoadBalancerPolicy, PolicyLookup, no_policy
from meshbench.kube.ops import Op
from meshbench.workloads.kubernetes import WorkloadProfile


class MeshInstaller(abc.ABC):
    name: str

    def __init__(self, config: BenchmarkConfig) -> None:
        self.config = config
        self._load_balancer_policy: PolicyLookup = no_policy

    def use_load_balancer_policy(self, lookup: PolicyLookup) -> None:
        """Where the environment's LoadBalancer settings come from (set by the backend)."""
        self._load_balancer_policy = lookup

    def load_balancer_policy(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> LoadBalancerPolicy:
        """Annotations and source ranges for a LoadBalancer Service in cluster ``role``
        used by the workloads of ``clients`` (default: the other cluster). Placeholders
        while a plan is rendered."""
        return self._load_balancer_policy(ctx, role, clients)

    def warnings(self, ctx: RunContext) -> list[str]:
        """Shown at the top of the plan (an unsupported Kubernetes version, say)."""
        return []

    def prepare_pair_ops(self, ctx: RunContext) -> list[Op]:
        return []

    def cleanup_pair_ops(self, ctx: RunContext) -> list[Op]:
        return []

    @abc.abstractmethod
    def install_ops(self, ctx: RunContext, iteration: int) -> list[Op]: ...

    @abc.abstractmethod
    def ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]: ...

    def workload_ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        return []

    @abc.abstractmethod
    def uninstall_ops(self, ctx: RunContext, iteration: int) -> list[Op]: ...

    @abc.abstractmethod
    def workload_profile(self, ctx: RunContext) -> WorkloadProfile:
        """Labels, annotations, Service shape and recorded path for this run's workloads."""

    @abc.abstractmethod
    def describe_target(self, ctx: RunContext) -> str:
        """The URL Fortio loads, in words for the plan (it may only be known at run time)."""

    @abc.abstractmethod
    def target_url(self, ctx: RunContext, clusters: Clusters) -> str:
        """The URL Fortio loads, resolved against the live clusters."""

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        """Mesh settings recorded with the run (version, profile, mechanism, ...)."""
        return {"mesh": self.name, "mesh_version": ctx.mesh_version}

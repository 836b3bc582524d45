"""prepare_pair on aws: the nodes Ready, the mesh's node-to-node ports open between the
clusters, and what every LoadBalancer Service of the run gets."""

from __future__ import annotations

import logging
from typing import Any

from meshbench.backend import RunContext
from meshbench.environments.aws.constants import LOAD_BALANCER_ANNOTATIONS
from meshbench.environments.aws.load_balancers import AwsLoadBalancers
from meshbench.environments.aws.steps import PREPARE, states_a_fact
from meshbench.environments.provider import ROLES
from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, call_op, run_ops

log = logging.getLogger(__name__)


class AwsPreparation(AwsLoadBalancers):
    def prepare_ops(
        self,
        ctx: RunContext,
        ready: dict[str, int] | None = None,
        opened: dict[str, Any] | None = None,
    ) -> list[Op]:
        """``ready`` and ``opened`` collect the node counts and the rules opened, for the
        task's result; the plan leaves them out."""
        ops = [
            call_op(
                PREPARE,
                None,
                "api",
                "Kubeconfig per task: EksHook.generate_config_file_with_credentials (0600 "
                "temporary kubeconfig and credentials files, removed when the task ends)",
                # How the steps below reach the clusters: each is opened on first use.
                states_a_fact,
            )
        ]
        ops += self.node_wait_ops(ctx, {} if ready is None else ready)
        ops += self.security_group_ops(ctx, {} if opened is None else opened)
        ops += [self._load_balancer_settings_op(ctx, role) for role in ROLES]
        return ops

    def _load_balancer_settings_op(self, ctx: RunContext, role: str) -> Op:
        # The Services are made by the steps that install the workloads and the mesh; they
        # take these settings from service_annotations and load_balancer_source_ranges.
        peer = self.cluster_name(ctx, self.peer_role(role))
        annotations = ", ".join(f"{k}: {v}" for k, v in LOAD_BALANCER_ANNOTATIONS.items())
        return call_op(
            PREPARE,
            role,
            "manifest",
            f"Every LoadBalancer Service in {self.cluster_name(ctx, role)} is internet-facing "
            f"and reachable from {peer}'s node addresses only (one that both clusters use, "
            f"Kuma's global KDS, from its own cluster's too); the steps that create each "
            f"Service show these settings",
            states_a_fact,
            f"metadata.annotations: {annotations}\n"
            f"spec.loadBalancerSourceRanges: [<public IPv4 of each node of {peer}>/32]",
        )

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        ready: dict[str, int] = {}
        opened: dict[str, Any] = {}
        with Clusters(
            {role: self.access(ctx, role) for role in ROLES},
            self.runner,
            self.api_factory,
            poll_interval=float(self.env.waiter_delay),
        ) as clusters:
            summary = run_ops(self.prepare_ops(ctx, ready, opened), clusters)
        return {"rules": opened, "nodes_ready": ready, "steps": summary["steps"]}

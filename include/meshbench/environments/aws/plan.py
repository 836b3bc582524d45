"""The aws environment's plan: the steps of the ops create, prepare and delete run."""

from __future__ import annotations

from meshbench.backend import RunContext, Step
from meshbench.environments.aws.deletion import AwsDeletion
from meshbench.kube.ops import plan_steps


class AwsPlan(AwsDeletion):
    def plan_create(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.create_ops(ctx))

    def plan_prepare(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.prepare_ops(ctx))

    def plan_delete(self, ctx: RunContext) -> list[Step]:
        return plan_steps(self.delete_ops(ctx))

    def plan_warnings(self, ctx: RunContext) -> list[str]:
        # Mesh-version support ranges are the installers' warnings (meshes.*).
        warnings = []
        if self.env.endpoint_public_access_cidrs == ["0.0.0.0/0"]:
            warnings.append(
                "EKS API endpoints are public (IAM-authenticated; Istio multi-primary needs each "
                "istiod to reach the other cluster's API). Narrow them with "
                "endpoint_public_access_cidrs."
            )
        return warnings

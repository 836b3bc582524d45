"""No mesh: nginx exposed to the client cluster through a LoadBalancer Service.

The floor every mesh is compared with (the study had none). Fortio in the client cluster
requests ``http://<the Service's external address>:80/``, so the path is: Fortio -> the
environment's load balancer (a cloud LB on AWS, MetalLB on bare metal) -> kube-proxy ->
nginx. Nothing is installed or removed.
"""

from __future__ import annotations

from typing import Any

from meshbench.backend import RunContext, StepFailed
from meshbench.config import BenchmarkConfig
from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, call_op
from meshbench.kube.waits import load_balancer_state
from meshbench.meshes.base import MeshInstaller
from meshbench.names import iteration_task_id
from meshbench.workloads.kubernetes import NGINX, NGINX_PORT, NO_MESH_PROFILE, WorkloadProfile


def http_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/"


def describe_load_balancer_target(namespace: str) -> str:
    return f"http://<LoadBalancer address of service {namespace}/{NGINX}>:{NGINX_PORT}/"


def load_balancer_url(clusters: Clusters, namespace: str) -> str:
    """nginx's URL through its LoadBalancer Service in ``namespace`` of the server cluster."""
    state = load_balancer_state(clusters["server"].api, namespace, NGINX)
    if not state.ready:
        raise StepFailed("; ".join(state.pending))
    return http_url(str(state.value), NGINX_PORT)


class BaselineInstaller(MeshInstaller):
    name = "baseline"

    def install_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        return [
            call_op(
                iteration_task_id(iteration, "install_mesh"),
                None,
                "note",
                "no mesh to install: the baseline is nginx behind a LoadBalancer Service",
                lambda clusters: None,
            )
        ]

    def ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        return []

    def uninstall_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        return []

    def workload_profile(self, ctx: RunContext) -> WorkloadProfile:
        return NO_MESH_PROFILE

    def describe_target(self, ctx: RunContext) -> str:
        return describe_load_balancer_target(ctx.resource_prefix)

    def target_url(self, ctx: RunContext, clusters: Clusters) -> str:
        return load_balancer_url(clusters, ctx.resource_prefix)

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        return {"mesh": self.name, "mesh_version": None}


def build_installer(config: BenchmarkConfig) -> BaselineInstaller:
    return BaselineInstaller(config)

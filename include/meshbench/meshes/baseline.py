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
from meshbench.workloads.kubernetes import NGINX, NGINX_PORT, WorkloadProfile


def http_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/"


class BaselineInstaller(MeshInstaller):
    name = "baseline"

    def install_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        return [
            call_op(
                f"iteration_{iteration:02d}.install_mesh",
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
        return WorkloadProfile(
            service_type="LoadBalancer",
            protocol="http",
            path="fortio -> server cluster's LoadBalancer -> kube-proxy -> nginx (no proxies)",
            # A cloud LB on AWS, MetalLB on bare metal: the environment records which.
            crosses_load_balancer=True,
        )

    def describe_target(self, ctx: RunContext) -> str:
        service = f"{ctx.resource_prefix}/{NGINX}"
        return f"http://<LoadBalancer address of service {service}>:{NGINX_PORT}/"

    def target_url(self, ctx: RunContext, clusters: Clusters) -> str:
        state = load_balancer_state(clusters["server"].api, ctx.resource_prefix, NGINX)
        if not state.ready:
            raise StepFailed("; ".join(state.pending))
        return http_url(str(state.value), NGINX_PORT)

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        return {"mesh": self.name, "mesh_version": None}


def build_installer(config: BenchmarkConfig) -> BaselineInstaller:
    return BaselineInstaller(config)

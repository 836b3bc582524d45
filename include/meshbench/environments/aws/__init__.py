"""The ``aws`` environment: two EKS clusters per run through providers-amazon and boto3.

What it makes, and how it finds it again:

* a **network stack** (CloudFormation, ``aws_network.yaml``: VPC, public subnets, optional
  private subnets, cluster and node roles) named by ``network_stack_name``, created once
  and reused by every run; it is tagged ``meshbench:keep=true`` so the reaper spares it;
* per run, **two clusters** ``mb-<slug>-client`` and ``mb-<slug>-server`` (API
  authentication mode, an admin access entry for the creating identity) with one managed
  node group each, tagged with the DAG id, run id, slug and creation time. A retried
  create adopts clusters carrying the same slug; a cluster of that name without it is a
  name collision and fails the step;
* in prepare_pair, **security-group rules** on each cluster's security group for the
  node-to-node ports the mesh needs (NSM's WireGuard tunnel), from the other cluster's
  node addresses only, never 0.0.0.0/0. LoadBalancer Services are reached the same way:
  ``loadBalancerSourceRanges`` lists the other cluster's addresses.

Deletion first waits for the load balancers Kubernetes made for the run's Services (they
outlive clusters and block VPC deletion), deletes what is still there after
``load_balancer_wait``, then deletes node groups and clusters, both clusters in parallel.

All AWS calls go through an Airflow ``aws`` connection (``aws_conn_id``); kubeconfigs are
made per task with ``EksHook.generate_config_file_with_credentials`` in temporary files
removed when the task's block ends."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from meshbench.backend import RunContext
from meshbench.config import BenchmarkConfig
from meshbench.environments.aws.access import EksClusterAccess
from meshbench.environments.aws.constants import (
    EKS_CLUSTER_TAG,
    EKS_NODE_CLUSTER_TAG,
    ENVIRONMENT,
    NETWORK_TEMPLATE,
    TAG_CREATED_AT,
    TAG_DAG_ID,
    TAG_KEEP,
    TAG_MANAGED,
    TAG_RUN_ID,
    TAG_SLUG,
)
from meshbench.environments.aws.network import NetworkStack
from meshbench.environments.aws.reaper import AwsReaper
from meshbench.environments.aws.rules import PortRule, ip_permissions, node_rules
from meshbench.environments.kubernetes import build_kubernetes_backend

if TYPE_CHECKING:
    from meshbench.backend import Backend

log = logging.getLogger(__name__)

# What the environment's users (the registry, the reaper, tests) name; the rest stays in
# the modules that define it.
__all__ = [
    "EKS_CLUSTER_TAG",
    "EKS_NODE_CLUSTER_TAG",
    "ENVIRONMENT",
    "NETWORK_TEMPLATE",
    "TAG_CREATED_AT",
    "TAG_DAG_ID",
    "TAG_KEEP",
    "TAG_MANAGED",
    "TAG_RUN_ID",
    "TAG_SLUG",
    "AwsProvider",
    "EksClusterAccess",
    "NetworkStack",
    "PortRule",
    "build_backend",
    "ip_permissions",
    "node_rules",
]


class AwsProvider(AwsReaper):
    """EKS clusters for one run; every method is safe to repeat."""

    environment = ENVIRONMENT

    # -- access ------------------------------------------------------------------------
    def access(self, ctx: RunContext, role: str) -> EksClusterAccess:
        return EksClusterAccess(
            role, self.cluster_name(ctx, role), self.env.aws_conn_id, self.env.region
        )

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        env = self.env
        return {
            "provider": "eks",
            "region": env.region,
            "kubernetes_version": env.kubernetes_version,
            "clusters": self.cluster_names(ctx),
            "nodes_per_cluster": env.node_count,
            "instance_type": env.instance_type,
            "ami_type": env.ami_type,
            "capacity_type": env.capacity_type,
            "disk_size_gib": env.disk_size,
            "node_placement": env.node_placement,
            "network_stack": env.network_stack_name,
            "authentication_mode": env.authentication_mode,
            "prices_per_hour": env.prices.model_dump(),
        }


def build_backend(config: BenchmarkConfig, mesh: str, **options: Any) -> Backend:
    """The registry's entry point: EKS clusters as the source of the shared Kubernetes
    backend."""
    from meshbench.environments.cloud import ProvisionedBackend

    return build_kubernetes_backend(
        config, mesh, AwsProvider, backend_type=ProvisionedBackend, **options
    )

"""Names, tags and states the aws environment uses, and small helpers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from meshbench.config import AwsEnvironment

log = logging.getLogger(__name__)


ENVIRONMENT = "aws"
NETWORK_TEMPLATE = Path(__file__).parent.with_name("aws_network.yaml")

TAG_MANAGED = "meshbench:managed"
TAG_ENVIRONMENT = "meshbench:environment"
TAG_DAG_ID = "meshbench:dag-id"
TAG_RUN_ID = "meshbench:run-id"
TAG_SLUG = "meshbench:slug"
TAG_ROLE = "meshbench:role"
TAG_MESH = "meshbench:mesh"
TAG_CREATED_AT = "meshbench:created-at"
TAG_KEEP = "meshbench:keep"
TAG_KIND = "meshbench:kind"
# Set by EKS on its cluster security group and on managed-node-group instances.
EKS_CLUSTER_TAG = "aws:eks:cluster-name"
EKS_NODE_CLUSTER_TAG = "eks:cluster-name"
# Set on load balancers: by the in-tree cloud provider, and by the AWS LB Controller.
KUBERNETES_CLUSTER_TAG = "kubernetes.io/cluster/{name}"
LBC_CLUSTER_TAG = "elbv2.k8s.aws/cluster"

CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
# Annotations every LoadBalancer Service gets. The in-tree provider makes internet-facing
# load balancers anyway; the AWS Load Balancer Controller (whose webhook claims every new
# LoadBalancer Service from v2.5) makes internal ones unless told otherwise.
LOAD_BALANCER_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
}
STACK_READY = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"})
STACK_CREATING = frozenset({"CREATE_IN_PROGRESS"})
STACK_BUSY = frozenset(
    {
        "UPDATE_IN_PROGRESS",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    }
)
# A stack that never came up and holds nothing: safe to delete and make again.
STACK_ROLLED_BACK = frozenset({"ROLLBACK_COMPLETE"})
STACK_DELETING = frozenset({"DELETE_IN_PROGRESS"})
# Tags are read and written in batches of at most this many load balancers.
_ELB_TAG_BATCH = 20
# Attempts at a delete call while the resource is still settling from an earlier one.
RESOURCE_IN_USE_RETRIES = 5
RESOURCE_NOT_FOUND = "ResourceNotFoundException"
RESOURCE_IN_USE = "ResourceInUseException"
VALIDATION_ERROR = "ValidationError"
ALREADY_EXISTS = "AlreadyExistsException"
PERMISSION_DUPLICATE = "InvalidPermission.Duplicate"


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def _waiter_config(env: AwsEnvironment) -> dict[str, int]:
    return {"Delay": env.waiter_delay, "MaxAttempts": env.waiter_max_attempts}


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

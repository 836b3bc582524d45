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
removed when the task's block ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshbench.backend import RunContext, Step, StepFailed
from meshbench.config import AwsEnvironment, BenchmarkConfig
from meshbench.environments.provider import (
    ROLES,
    ClusterProvider,
    Leftover,
    isoformat,
    parse_timestamp,
    tag_value,
    utcnow,
)
from meshbench.kube.access import ClusterAccess, ClusterAccessError
from meshbench.kube.cluster import ApiFactory, Clusters, default_api_factory
from meshbench.kube.runner import CommandRunner
from meshbench.kube.waits import Readiness

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from meshbench.backend import Backend

log = logging.getLogger(__name__)

ENVIRONMENT = "aws"
NETWORK_TEMPLATE = Path(__file__).with_name("aws_network.yaml")

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
_RESOURCE_IN_USE_RETRIES = 5


@dataclass(frozen=True)
class PortRule:
    """One ingress rule a mesh needs between the nodes of the two clusters."""

    protocol: str  # "tcp" or "udp"
    from_port: int
    to_port: int
    purpose: str

    def label(self) -> str:
        ports = str(self.from_port)
        if self.to_port != self.from_port:
            ports += f"-{self.to_port}"
        return f"{self.protocol}/{ports}"


# Node-to-node traffic between the clusters (mesh-recipes.md sections 3.8 and 4.6). Every
# other cross-cluster path goes through LoadBalancer Services, whose node rules the in-tree
# cloud provider manages itself; their sources are limited with loadBalancerSourceRanges.
NODE_TO_NODE_RULES: dict[str, tuple[PortRule, ...]] = {
    "baseline": (),
    "istio": (),
    "kuma": (),
    "nsm": (
        PortRule(
            "udp",
            51820,
            51820,
            "NSM vl3 data path: WireGuard between forwarders (the default remote "
            "mechanism for IP payload)",
        ),
    ),
}
# NSM with NSM_MECHANISM_PRIORITY=ipsec (meshes.nsm.inter_node_mechanism: ipsec).
NSM_IPSEC_RULES = (
    PortRule("udp", 4500, 4500, "NSM vl3 data path: IPsec (IKEv2 and ESP in UDP)"),
    PortRule("udp", 500, 500, "NSM vl3 data path: IPsec IKE"),
)
# Meshes whose data path addresses the other cluster's nodes directly, so nodes need
# public addresses (NSM interdomain maps node InternalIP to ExternalIP).
NEEDS_NODE_REACHABILITY = frozenset({"nsm"})


def node_rules(mesh: str, nsm_mechanism: str = "wireguard") -> tuple[PortRule, ...]:
    """The node-to-node ports ``mesh`` needs between the clusters."""
    if mesh == "nsm" and nsm_mechanism == "ipsec":
        return NSM_IPSEC_RULES
    return NODE_TO_NODE_RULES.get(mesh, ())


def ip_permissions(
    rules: tuple[PortRule, ...] | list[PortRule], sources: list[str], note: str
) -> list[dict[str, Any]]:
    """EC2 ``IpPermissions`` opening ``rules`` to ``sources`` (CIDRs); refuses 0.0.0.0/0."""
    for cidr in sources:
        if ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
            raise StepFailed(f"refusing to open {note} to {cidr}: sources must be the peer's nodes")
    return [
        {
            "IpProtocol": rule.protocol,
            "FromPort": rule.from_port,
            "ToPort": rule.to_port,
            "IpRanges": [
                {"CidrIp": cidr, "Description": f"{note}: {rule.label()}"[:255]} for cidr in sources
            ],
        }
        for rule in rules
    ]


def subnet_blocks(vpc: ipaddress.IPv4Network) -> dict[str, str]:
    """The VPC split in four equal subnets: two public, two private."""
    public1, public2, private1, private2 = vpc.subnets(prefixlen_diff=2)
    return {
        "PublicSubnet01Block": str(public1),
        "PublicSubnet02Block": str(public2),
        "PrivateSubnet01Block": str(private1),
        "PrivateSubnet02Block": str(private2),
    }


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def _waiter_config(env: AwsEnvironment) -> dict[str, int]:
    return {"Delay": env.waiter_delay, "MaxAttempts": env.waiter_max_attempts}


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class NetworkStack:
    name: str
    vpc_id: str
    public_subnets: tuple[str, ...]
    private_subnets: tuple[str, ...]
    cluster_role_arn: str
    node_role_arn: str
    created: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "stack": self.name,
            "vpc_id": self.vpc_id,
            "public_subnets": list(self.public_subnets),
            "private_subnets": list(self.private_subnets),
            "created_now": self.created,
        }


@contextlib.contextmanager
def _interpreter_first_on_path() -> Iterator[None]:
    """The EKS kubeconfig's exec plugin runs a bare ``python3.X``: make it this venv's."""
    folder = os.path.dirname(sys.executable)
    before = os.environ.get("PATH", "")
    if before.split(os.pathsep)[:1] == [folder]:
        yield
        return
    os.environ["PATH"] = os.pathsep.join([folder, before]) if before else folder
    try:
        yield
    finally:
        os.environ["PATH"] = before


class EksClusterAccess(ClusterAccess):
    """An EKS cluster reached with a kubeconfig the provider's EksHook makes per task.

    The kubeconfig's exec plugin reads a temporary credentials file written from the
    Airflow connection; both files exist only inside :meth:`open`.
    """

    def __init__(self, role: str, cluster_name: str, aws_conn_id: str, region: str) -> None:
        super().__init__(role)
        self.cluster_name = cluster_name
        self.aws_conn_id = aws_conn_id
        self.region = region

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "kubeconfig_source": "eks",
            "cluster": self.cluster_name,
            "region": self.region,
            "aws_conn_id": self.aws_conn_id,
        }

    def kubeconfig(self) -> dict[str, Any]:
        raise ClusterAccessError(
            f"{self.role} cluster: an EKS kubeconfig is only valid inside open(), which keeps "
            f"its credentials file alive"
        )

    @contextlib.contextmanager
    def open(self) -> Iterator[str]:
        from airflow.providers.amazon.aws.hooks.eks import EksHook

        hook = EksHook(aws_conn_id=self.aws_conn_id, region_name=self.region)
        try:
            context = hook.generate_config_file_with_credentials(
                eks_cluster_name=self.cluster_name, pod_namespace=None
            )
            with _interpreter_first_on_path(), context as (config_path, _credentials_path):
                yield config_path
        except ClusterAccessError:
            raise
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise ClusterAccessError(
                    f"{self.role} cluster: EKS cluster {self.cluster_name!r} does not exist"
                ) from None
            raise

    def api_client(self, kubeconfig_path: str) -> ApiClient:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from kubernetes.client import Configuration

        hook = KubernetesHook(
            conn_id=None, config_file=kubeconfig_path, client_configuration=Configuration()
        )
        return hook.get_conn()


class AwsProvider(ClusterProvider):
    """EKS clusters for one run; every method is safe to repeat."""

    environment = ENVIRONMENT

    def __init__(
        self,
        config: BenchmarkConfig,
        *,
        runner: CommandRunner | None = None,
        api_factory: ApiFactory = default_api_factory,
    ) -> None:
        super().__init__(config, runner=runner, api_factory=api_factory)
        self.env: AwsEnvironment = config.environments.aws
        self._clients: dict[str, Any] = {}

    # -- clients -----------------------------------------------------------------------
    @cached_property
    def eks_hook(self) -> Any:
        from airflow.providers.amazon.aws.hooks.eks import EksHook

        return EksHook(aws_conn_id=self.env.aws_conn_id, region_name=self.env.region)

    @cached_property
    def eks(self) -> Any:
        return self.eks_hook.conn

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` from the Airflow connection (one per service)."""
        if service not in self._clients:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            hook = AwsBaseHook(
                aws_conn_id=self.env.aws_conn_id, region_name=self.env.region, client_type=service
            )
            self._clients[service] = hook.conn
        return self._clients[service]

    @cached_property
    def cloudformation(self) -> Any:
        from airflow.providers.amazon.aws.hooks.cloud_formation import CloudFormationHook

        return CloudFormationHook(
            aws_conn_id=self.env.aws_conn_id, region_name=self.env.region
        ).conn

    @cached_property
    def ec2(self) -> Any:
        return self.client("ec2")

    # -- the network stack ---------------------------------------------------------------
    def network_parameters(self) -> list[dict[str, str]]:
        values = {"VpcBlock": str(self.env.vpc_cidr), **subnet_blocks(self.env.vpc_cidr)}
        zones = self.env.availability_zones or ["", ""]
        values["AvailabilityZone01"], values["AvailabilityZone02"] = zones
        values["WithPrivateSubnets"] = "true" if self.env.private_subnets else "false"
        return [{"ParameterKey": key, "ParameterValue": value} for key, value in values.items()]

    def network_tags(self) -> list[dict[str, str]]:
        tags = {
            TAG_MANAGED: "true",
            TAG_ENVIRONMENT: ENVIRONMENT,
            TAG_KIND: "network",
            TAG_KEEP: "true",
            TAG_CREATED_AT: isoformat(utcnow()),
        }
        return [{"Key": key, "Value": value} for key, value in tags.items()]

    def _describe_stack(self, name: str) -> dict[str, Any] | None:
        try:
            stacks = self.cloudformation.describe_stacks(StackName=name)["Stacks"]
        except Exception as exc:
            if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
                return None
            raise
        return stacks[0] if stacks else None

    def _wait_stack(self, waiter: str, name: str) -> None:
        try:
            self.cloudformation.get_waiter(waiter).wait(
                StackName=name, WaiterConfig=_waiter_config(self.env)
            )
        except Exception as exc:
            stack = self._describe_stack(name) or {}
            raise StepFailed(
                f"network stack {name}: {waiter} did not succeed: state "
                f"{stack.get('StackStatus', 'gone')} "
                f"({stack.get('StackStatusReason', exc)})"
            ) from None

    def ensure_network(self) -> NetworkStack:
        """The shared network stack: adopted when it exists, created once otherwise."""
        name = self.env.network_stack_name
        stack = self._describe_stack(name)
        created = False
        status = stack["StackStatus"] if stack else None
        if status in STACK_ROLLED_BACK:
            log.warning(
                "network stack %s is %s (%s); deleting it to create it again",
                name,
                status,
                stack.get("StackStatusReason", "no reason given") if stack else "",
            )
            self.cloudformation.delete_stack(StackName=name)
            self._wait_stack("stack_delete_complete", name)
            stack, status = None, None
        elif status in STACK_DELETING:
            log.info("network stack %s is being deleted; waiting to create it again", name)
            self._wait_stack("stack_delete_complete", name)
            stack, status = None, None
        if stack is None:
            log.info("creating the shared network stack %s (once; later runs reuse it)", name)
            try:
                self.cloudformation.create_stack(
                    StackName=name,
                    TemplateBody=NETWORK_TEMPLATE.read_text(encoding="utf-8"),
                    Parameters=self.network_parameters(),
                    Capabilities=["CAPABILITY_IAM"],
                    Tags=self.network_tags(),
                )
                created = True
            except Exception as exc:
                if error_code(exc) != "AlreadyExistsException":
                    raise
                log.info("network stack %s was created concurrently; waiting for it", name)
            self._wait_stack("stack_create_complete", name)
        elif status in STACK_CREATING:
            log.info("network stack %s is being created by another run; waiting", name)
            self._wait_stack("stack_create_complete", name)
        elif status in STACK_BUSY:
            log.info("network stack %s is being updated (%s); waiting", name, status)
            self._wait_stack("stack_update_complete", name)
        elif status not in STACK_READY:
            raise StepFailed(
                f"network stack {name} is {status} "
                f"({stack.get('StackStatusReason', 'no reason given')}); fix or delete it"
            )
        else:
            log.info("reusing the shared network stack %s (%s)", name, status)
        return self._network_from(self._describe_stack(name), created)

    def describe_network(self) -> NetworkStack:
        """The existing network stack (never creates it)."""
        name = self.env.network_stack_name
        stack = self._describe_stack(name)
        if stack is None or stack["StackStatus"] not in STACK_READY:
            state = stack["StackStatus"] if stack else "missing"
            raise StepFailed(f"network stack {name} is {state}; create_clusters makes it")
        return self._network_from(stack, False)

    def _network_from(self, stack: dict[str, Any] | None, created: bool) -> NetworkStack:
        if stack is None:
            raise StepFailed(f"network stack {self.env.network_stack_name} disappeared")
        outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}
        missing = [
            key
            for key in ("VpcId", "PublicSubnetIds", "ClusterRoleArn", "NodeRoleArn")
            if not outputs.get(key)
        ]
        if missing:
            raise StepFailed(
                f"network stack {stack['StackName']} lacks outputs {', '.join(missing)}; was it "
                f"made from another template?"
            )

        def split(value: str | None) -> tuple[str, ...]:
            return tuple(part for part in (value or "").split(",") if part)

        return NetworkStack(
            name=stack["StackName"],
            vpc_id=outputs["VpcId"],
            public_subnets=split(outputs["PublicSubnetIds"]),
            private_subnets=split(outputs.get("PrivateSubnetIds")),
            cluster_role_arn=outputs["ClusterRoleArn"],
            node_role_arn=outputs["NodeRoleArn"],
            created=created,
        )

    def node_subnets(self, mesh: str, network: NetworkStack) -> tuple[list[str], str]:
        """Where the nodes go, and why."""
        if self.env.node_placement == "private-unless-needed" and mesh not in (
            NEEDS_NODE_REACHABILITY
        ):
            if network.private_subnets:
                return list(network.private_subnets), "private subnets (the mesh crosses via LBs)"
            log.warning(
                "node_placement asks for private subnets but stack %s has none; using public",
                network.name,
            )
        reason = (
            f"public subnets: {mesh} needs node-to-node reachability"
            if mesh in NEEDS_NODE_REACHABILITY
            else "public subnets (node_placement: public)"
        )
        return list(network.public_subnets), reason

    # -- requests ----------------------------------------------------------------------
    def resource_tags(self, ctx: RunContext, role: str, created_at: datetime) -> dict[str, str]:
        return {
            TAG_MANAGED: "true",
            TAG_ENVIRONMENT: ENVIRONMENT,
            TAG_DAG_ID: tag_value(ctx.dag_id),
            TAG_RUN_ID: tag_value(ctx.run_id),
            TAG_SLUG: ctx.slug,
            TAG_ROLE: role,
            TAG_MESH: ctx.mesh,
            TAG_CREATED_AT: isoformat(created_at),
        }

    def cluster_request(
        self, ctx: RunContext, role: str, network: NetworkStack, created_at: datetime
    ) -> dict[str, Any]:
        vpc_config: dict[str, Any] = {
            "subnetIds": [*network.public_subnets, *network.private_subnets],
            "endpointPublicAccess": True,
            "endpointPrivateAccess": True,
        }
        if self.env.endpoint_public_access_cidrs != ["0.0.0.0/0"]:
            vpc_config["publicAccessCidrs"] = list(self.env.endpoint_public_access_cidrs)
        return {
            "name": self.cluster_name(ctx, role),
            "version": self.env.kubernetes_version,
            "roleArn": network.cluster_role_arn,
            "resourcesVpcConfig": vpc_config,
            "accessConfig": {
                "authenticationMode": self.env.authentication_mode,
                # The creating identity (the Airflow connection) gets a cluster-admin access
                # entry; it cannot be added later.
                "bootstrapClusterCreatorAdminPermissions": True,
            },
            "upgradePolicy": {"supportType": self.env.support_type},
            "tags": self.resource_tags(ctx, role, created_at),
        }

    def nodegroup_name(self, ctx: RunContext, role: str) -> str:
        return f"{self.cluster_name(ctx, role)}-nodes"

    def nodegroup_request(
        self,
        ctx: RunContext,
        role: str,
        network: NetworkStack,
        created_at: datetime,
    ) -> dict[str, Any]:
        subnets, _reason = self.node_subnets(ctx.mesh, network)
        count = self.env.node_count
        return {
            "clusterName": self.cluster_name(ctx, role),
            "nodegroupName": self.nodegroup_name(ctx, role),
            "subnets": subnets,
            "nodeRole": network.node_role_arn,
            "scalingConfig": {"minSize": count, "maxSize": count, "desiredSize": count},
            "version": self.env.kubernetes_version,
            "instanceTypes": [self.env.instance_type],
            "amiType": self.env.ami_type,
            "capacityType": self.env.capacity_type,
            "diskSize": self.env.disk_size,
            "labels": {"meshbench.io/role": role},
            "tags": self.resource_tags(ctx, role, created_at),
        }

    # -- create ------------------------------------------------------------------------
    def _describe_cluster(self, name: str) -> dict[str, Any] | None:
        try:
            return self.eks.describe_cluster(name=name)["cluster"]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def _describe_nodegroup(self, cluster: str, nodegroup: str) -> dict[str, Any] | None:
        try:
            return self.eks.describe_nodegroup(clusterName=cluster, nodegroupName=nodegroup)[
                "nodegroup"
            ]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def _check_ours(self, ctx: RunContext, kind: str, name: str, tags: dict[str, str]) -> None:
        if tags.get(TAG_SLUG) != ctx.slug:
            raise StepFailed(
                f"{kind} {name} exists but is not this run's (its {TAG_SLUG} tag is "
                f"{tags.get(TAG_SLUG)!r}, this run's slug is {ctx.slug!r}); refusing to adopt it"
            )

    def _wait(self, waiter: str, what: str, **params: Any) -> None:
        try:
            self.eks.get_waiter(waiter).wait(**params, WaiterConfig=_waiter_config(self.env))
        except Exception as exc:
            raise StepFailed(f"{what}: waiter {waiter} gave up: {exc}") from None

    def create(self, ctx: RunContext) -> dict[str, Any]:
        network = self.ensure_network()
        created_at = utcnow()
        clusters: dict[str, dict[str, Any]] = {}
        # Both control planes are requested before waiting for either (they take ~10 min).
        for role in ROLES:
            name = self.cluster_name(ctx, role)
            existing = self._describe_cluster(name)
            if existing is not None:
                self._check_ours(ctx, "EKS cluster", name, existing.get("tags") or {})
                status = existing.get("status")
                if status in ("DELETING", "FAILED"):
                    raise StepFailed(
                        f"EKS cluster {name} is {status}; delete_clusters (or the reaper) "
                        f"removes it, then a new run creates it again"
                    )
                log.info("adopting EKS cluster %s (%s) made by an earlier try", name, status)
                clusters[role] = {"name": name, "adopted": True}
                continue
            request = self.cluster_request(ctx, role, network, created_at)
            log.info(
                "creating EKS cluster %s: Kubernetes %s, %s auth, subnets %s",
                name,
                request["version"],
                self.env.authentication_mode,
                ",".join(request["resourcesVpcConfig"]["subnetIds"]),
            )
            try:
                self.eks_hook.create_cluster(**request)
            except Exception as exc:
                if error_code(exc) != "ResourceInUseException":
                    raise
                log.info("EKS cluster %s appeared concurrently; adopting it", name)
            clusters[role] = {"name": name, "adopted": False}
        for role in ROLES:
            name = clusters[role]["name"]
            self._wait("cluster_active", f"EKS cluster {name}", name=name)
        self.grant_admins(ctx)
        for role in ROLES:
            cluster = clusters[role]["name"]
            nodegroup = self.nodegroup_name(ctx, role)
            existing = self._describe_nodegroup(cluster, nodegroup)
            if existing is not None:
                self._check_ours(ctx, "node group", nodegroup, existing.get("tags") or {})
                log.info("adopting node group %s (%s)", nodegroup, existing.get("status"))
            else:
                request = self.nodegroup_request(ctx, role, network, created_at)
                _subnets, why = self.node_subnets(ctx.mesh, network)
                log.info(
                    "creating node group %s: %d x %s (%s, %s) in %s",
                    nodegroup,
                    self.env.node_count,
                    self.env.instance_type,
                    self.env.ami_type,
                    self.env.capacity_type,
                    why,
                )
                try:
                    self.eks_hook.create_nodegroup(**request)
                except Exception as exc:
                    if error_code(exc) != "ResourceInUseException":
                        raise
            clusters[role]["nodegroup"] = nodegroup
        for role in ROLES:
            cluster, nodegroup = clusters[role]["name"], clusters[role]["nodegroup"]
            self._wait(
                "nodegroup_active",
                f"node group {nodegroup}",
                clusterName=cluster,
                nodegroupName=nodegroup,
            )
        for role in ROLES:
            described = self._describe_cluster(clusters[role]["name"]) or {}
            clusters[role].update(
                {
                    "arn": described.get("arn"),
                    "version": described.get("version"),
                    "status": described.get("status"),
                    "created_at": (described.get("tags") or {}).get(TAG_CREATED_AT),
                }
            )
        return {
            "environment": ENVIRONMENT,
            "region": self.env.region,
            "network": network.describe(),
            "clusters": clusters,
        }

    def grant_admins(self, ctx: RunContext) -> None:
        """Access entries for the extra principals in ``admin_principal_arns`` (the creating
        identity already has one)."""
        for role in ROLES:
            cluster = self.cluster_name(ctx, role)
            for principal in self.env.admin_principal_arns:
                try:
                    self.eks.create_access_entry(clusterName=cluster, principalArn=principal)
                except Exception as exc:
                    if error_code(exc) != "ResourceInUseException":
                        raise StepFailed(
                            f"access entry for {principal} on {cluster}: {exc}"
                        ) from None
                self.eks.associate_access_policy(
                    clusterName=cluster,
                    principalArn=principal,
                    policyArn=CLUSTER_ADMIN_POLICY,
                    accessScope={"type": "cluster"},
                )
                log.info("granted cluster admin on %s to %s", cluster, principal)

    # -- prepare: security groups ------------------------------------------------------
    def cluster_security_group(self, cluster: str) -> str:
        described = self._describe_cluster(cluster)
        if described is None:
            raise StepFailed(f"EKS cluster {cluster} does not exist")
        group = (described.get("resourcesVpcConfig") or {}).get("clusterSecurityGroupId")
        if group:
            return group
        groups = self.ec2.describe_security_groups(
            Filters=[{"Name": f"tag:{EKS_CLUSTER_TAG}", "Values": [cluster]}]
        )["SecurityGroups"]
        if not groups:
            raise StepFailed(f"EKS cluster {cluster} has no cluster security group yet")
        return groups[0]["GroupId"]

    def node_addresses(self, cluster: str) -> dict[str, str | None]:
        """Public IPv4 address of each running node of ``cluster`` (None: no public one)."""
        reservations = self.ec2.describe_instances(
            Filters=[
                {"Name": f"tag:{EKS_NODE_CLUSTER_TAG}", "Values": [cluster]},
                {"Name": "instance-state-name", "Values": ["running"]},
            ]
        )["Reservations"]
        return {
            instance["InstanceId"]: instance.get("PublicIpAddress")
            for reservation in reservations
            for instance in reservation["Instances"]
        }

    def nat_addresses(self, vpc_id: str) -> list[str]:
        gateways = self.ec2.describe_nat_gateways(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "state", "Values": ["available"]},
            ]
        )["NatGateways"]
        return sorted(
            address["PublicIp"]
            for gateway in gateways
            for address in gateway.get("NatGatewayAddresses", [])
            if address.get("PublicIp")
        )

    def egress_cidrs(self, cluster: str, *, need_public_nodes: bool) -> list[str]:
        """The addresses traffic from ``cluster``'s nodes comes from, as /32s."""
        nodes = self.node_addresses(cluster)
        if not nodes:
            raise StepFailed(f"EKS cluster {cluster} has no running nodes")
        public = sorted({address for address in nodes.values() if address})
        if len(public) == len(nodes):
            return [f"{address}/32" for address in public]
        if need_public_nodes:
            lacking = sorted(node for node, address in nodes.items() if not address)
            raise StepFailed(
                f"nodes {', '.join(lacking)} of {cluster} have no public address, but the mesh "
                f"needs node-to-node reachability; use public subnets (node_placement: public)"
            )
        nat = self.nat_addresses(self.describe_network().vpc_id)
        if not nat:
            raise StepFailed(f"nodes of {cluster} have neither public addresses nor a NAT gateway")
        return [f"{address}/32" for address in nat]

    def node_rules(self, ctx: RunContext) -> tuple[PortRule, ...]:
        nsm = getattr(self.config.meshes, "nsm", None)
        return node_rules(ctx.mesh, getattr(nsm, "inter_node_mechanism", "wireguard"))

    def peer_role(self, role: str) -> str:
        return "server" if role == "client" else "client"

    def open_security_groups(self, ctx: RunContext) -> dict[str, Any]:
        """Authorize the mesh's node-to-node ports on each cluster's security group, from the
        other cluster's node addresses only. Repeating it is harmless."""
        rules = self.node_rules(ctx)
        opened: dict[str, Any] = {}
        if not rules:
            log.info("mesh %s needs no node-to-node rules (it crosses via LBs)", ctx.mesh)
            return {"rules": opened}
        for role in ROLES:
            cluster = self.cluster_name(ctx, role)
            peer = self.cluster_name(ctx, self.peer_role(role))
            group = self.cluster_security_group(cluster)
            sources = self.egress_cidrs(peer, need_public_nodes=True)
            permissions = ip_permissions(rules, sources, f"meshbench {ctx.slug} from {peer}")
            for permission in permissions:
                try:
                    self.ec2.authorize_security_group_ingress(
                        GroupId=group, IpPermissions=[permission]
                    )
                except Exception as exc:
                    if error_code(exc) != "InvalidPermission.Duplicate":
                        raise StepFailed(f"security group {group} of {cluster}: {exc}") from None
                log.info(
                    "security group %s of %s: %s/%s-%s open to %s",
                    group,
                    cluster,
                    permission["IpProtocol"],
                    permission["FromPort"],
                    permission["ToPort"],
                    ", ".join(sources),
                )
            opened[role] = {
                "security_group": group,
                "ports": [rule.label() for rule in rules],
                "sources": sources,
            }
        return {"rules": opened}

    def wait_nodes_ready(self, ctx: RunContext) -> dict[str, Any]:
        """Every node of both clusters registered and Ready (node groups can be ACTIVE a
        little before their kubelets report Ready)."""
        wanted = self.env.node_count
        timeout = self.env.waiter_delay * self.env.waiter_max_attempts
        found: dict[str, int] = {}

        def state(api: Any) -> Readiness:
            nodes = api.list("v1", "Node")
            ready = [
                node
                for node in nodes
                if any(
                    condition.get("type") == "Ready" and condition.get("status") == "True"
                    for condition in (node.get("status") or {}).get("conditions") or []
                )
            ]
            if len(ready) < wanted:
                return Readiness(False, (f"{len(ready)} of {wanted} node(s) Ready",))
            return Readiness(True, (), len(ready))

        with Clusters(
            {role: self.access(ctx, role) for role in ROLES},
            self.runner,
            self.api_factory,
            poll_interval=float(self.env.waiter_delay),
        ) as clusters:
            for role in ROLES:
                found[role] = clusters[role].wait(state, f"{wanted} node(s) Ready", timeout)
        return {"nodes_ready": found}

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        opened = self.open_security_groups(ctx)
        return {**opened, **self.wait_nodes_ready(ctx)}

    def service_annotations(self) -> dict[str, str]:
        return dict(LOAD_BALANCER_ANNOTATIONS)

    def load_balancer_source_ranges(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> list[str]:
        """The egress addresses (/32s) of the ``clients`` clusters (default: the other
        one): their nodes' public addresses, or the NAT gateway's for private nodes.
        Placeholders while planning."""
        ranges: list[str] = []
        for client in clients or (self.peer_role(role),):
            name = self.cluster_name(ctx, client)
            if self.is_planning:
                found = [f"<public IPv4 of each node of {name}>/32"]
            else:
                found = self.egress_cidrs(name, need_public_nodes=False)
            # Private nodes of both clusters leave through the same NAT gateway.
            ranges += [cidr for cidr in found if cidr not in ranges]
        return ranges

    # -- load balancers ----------------------------------------------------------------
    def load_balancers(self, clusters: list[str] | None = None) -> list[dict[str, Any]]:
        """Load balancers Kubernetes made for ``clusters`` (all meshbench-looking clusters
        when None): classic ELBs and ELBv2, with the cluster they belong to."""
        wanted = set(clusters) if clusters is not None else None
        found: list[dict[str, Any]] = []

        def owner(tags: dict[str, str]) -> str | None:
            for key, value in tags.items():
                if key.startswith("kubernetes.io/cluster/"):
                    return key.removeprefix("kubernetes.io/cluster/")
                if key == LBC_CLUSTER_TAG:
                    return value
            return None

        def keep(cluster: str | None) -> bool:
            if cluster is None:
                return False
            return cluster in wanted if wanted is not None else cluster.startswith("mb-")

        elb = self.client("elb")
        created = {
            item["LoadBalancerName"]: item.get("CreatedTime")
            for page in elb.get_paginator("describe_load_balancers").paginate()
            for item in page["LoadBalancerDescriptions"]
        }
        for batch in _chunks(list(created), _ELB_TAG_BATCH):
            for description in elb.describe_tags(LoadBalancerNames=batch)["TagDescriptions"]:
                tags = {tag["Key"]: tag["Value"] for tag in description.get("Tags", [])}
                cluster = owner(tags)
                if keep(cluster):
                    name = description["LoadBalancerName"]
                    found.append(
                        {
                            "type": "classic",
                            "id": name,
                            "cluster": cluster,
                            "created": created.get(name),
                        }
                    )
        elbv2 = self.client("elbv2")
        balancers = {
            item["LoadBalancerArn"]: item
            for page in elbv2.get_paginator("describe_load_balancers").paginate()
            for item in page["LoadBalancers"]
        }
        for batch in _chunks(list(balancers), _ELB_TAG_BATCH):
            for description in elbv2.describe_tags(ResourceArns=batch)["TagDescriptions"]:
                tags = {tag["Key"]: tag["Value"] for tag in description.get("Tags", [])}
                cluster = owner(tags)
                if keep(cluster):
                    arn = description["ResourceArn"]
                    found.append(
                        {
                            "type": "v2",
                            "id": arn,
                            "name": balancers[arn].get("LoadBalancerName"),
                            "cluster": cluster,
                            "created": balancers[arn].get("CreatedTime"),
                        }
                    )
        return found

    def delete_load_balancer(self, balancer: dict[str, Any]) -> None:
        if balancer["type"] == "classic":
            self.client("elb").delete_load_balancer(LoadBalancerName=balancer["id"])
        else:
            self.client("elbv2").delete_load_balancer(LoadBalancerArn=balancer["id"])

    def drain_load_balancers(self, clusters: list[str]) -> dict[str, Any]:
        """Wait for the clusters' load balancers to go (the mesh uninstall deletes their
        Services); after ``load_balancer_wait`` delete those still there."""
        deadline = time.monotonic() + self.env.load_balancer_wait
        remaining = self.load_balancers(clusters)
        waited_for = len(remaining)
        while remaining and time.monotonic() < deadline:
            log.info(
                "waiting for %d load balancer(s) of %s to be deleted: %s",
                len(remaining),
                ", ".join(clusters),
                ", ".join(balancer.get("name") or balancer["id"] for balancer in remaining),
            )
            time.sleep(min(self.env.waiter_delay, max(0.0, deadline - time.monotonic())))
            remaining = self.load_balancers(clusters)
        forced = []
        for balancer in remaining:
            label = balancer.get("name") or balancer["id"]
            log.warning(
                "load balancer %s of %s outlived its Service for %gs; deleting it",
                label,
                balancer["cluster"],
                self.env.load_balancer_wait,
            )
            try:
                self.delete_load_balancer(balancer)
                forced.append(label)
            except Exception as exc:  # best effort: the reaper retries tomorrow
                log.warning("could not delete load balancer %s: %s", label, exc)
        return {"waited_for": waited_for, "force_deleted": forced}

    def delete_orphan_security_groups(self, clusters: list[str]) -> list[str]:
        """Security groups the in-tree provider made for load balancers (``k8s-elb-*``) of
        deleted clusters; the EKS cluster security group itself is EKS's to delete."""
        deleted = []
        for cluster in clusters:
            key = KUBERNETES_CLUSTER_TAG.format(name=cluster)
            groups = self.ec2.describe_security_groups(
                Filters=[{"Name": "tag-key", "Values": [key]}]
            )["SecurityGroups"]
            for group in groups:
                tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
                if EKS_CLUSTER_TAG in tags:
                    continue
                try:
                    self.ec2.delete_security_group(GroupId=group["GroupId"])
                    deleted.append(group["GroupId"])
                    log.info("deleted security group %s left by %s", group["GroupId"], cluster)
                except Exception as exc:  # DependencyViolation until ENIs are gone
                    log.warning("could not delete security group %s: %s", group["GroupId"], exc)
        return deleted

    # -- delete ------------------------------------------------------------------------
    def _delete_with_retries(self, what: str, call: Any, **params: Any) -> bool:
        """Call a delete API; True when deleted, False when already gone."""
        for attempt in range(1, _RESOURCE_IN_USE_RETRIES + 1):
            try:
                call(**params)
                return True
            except Exception as exc:
                code = error_code(exc)
                if code == "ResourceNotFoundException":
                    return False
                if code == "ResourceInUseException" and attempt < _RESOURCE_IN_USE_RETRIES:
                    log.info("%s is busy (%s); retrying in %ds", what, exc, self.env.waiter_delay)
                    time.sleep(self.env.waiter_delay)
                    continue
                raise
        return False

    def delete_clusters_by_name(self, clusters: list[str]) -> dict[str, str]:
        """Delete node groups, then clusters, all in parallel; waits for both."""
        outcome: dict[str, str] = {}
        present = [name for name in clusters if self._describe_cluster(name) is not None]
        for name in clusters:
            if name not in present:
                outcome[name] = "already gone"
        for name in present:
            for nodegroup in self.eks_hook.list_nodegroups(clusterName=name):
                log.info("deleting node group %s of %s", nodegroup, name)
                self._delete_with_retries(
                    f"node group {nodegroup}",
                    self.eks.delete_nodegroup,
                    clusterName=name,
                    nodegroupName=nodegroup,
                )
        for name in present:
            try:
                self.eks_hook.get_waiter("all_nodegroups_deleted").wait(
                    clusterName=name, WaiterConfig=_waiter_config(self.env)
                )
            except Exception as exc:
                raise StepFailed(f"node groups of {name} were not deleted: {exc}") from None
        for name in present:
            log.info("deleting EKS cluster %s", name)
            deleted = self._delete_with_retries(
                f"EKS cluster {name}", self.eks.delete_cluster, name=name
            )
            outcome[name] = "deleted" if deleted else "already gone"
        for name in present:
            self._wait("cluster_deleted", f"EKS cluster {name}", name=name)
        return outcome

    def usage(self, ctx: RunContext) -> dict[str, Any]:
        """When the run's clusters and node groups were created (before deleting them)."""
        found: dict[str, Any] = {}
        for role in ROLES:
            name = self.cluster_name(ctx, role)
            cluster = self._describe_cluster(name)
            if cluster is None:
                found[role] = None
                continue
            nodegroup = self._describe_nodegroup(name, self.nodegroup_name(ctx, role)) or {}
            found[role] = {
                "name": name,
                "created_at": parse_timestamp(cluster.get("createdAt"))
                or parse_timestamp((cluster.get("tags") or {}).get(TAG_CREATED_AT)),
                "nodegroup_created_at": parse_timestamp(nodegroup.get("createdAt")),
                "nodes": int((nodegroup.get("scalingConfig") or {}).get("desiredSize") or 0),
            }
        return found

    def minutes_used(self, found: dict[str, Any], ended: datetime) -> dict[str, Any]:
        prices = self.env.prices
        clusters: dict[str, Any] = {}
        cluster_minutes = node_minutes = 0.0
        for role, item in found.items():
            if item is None or item["created_at"] is None:
                clusters[role] = {"found": False}
                continue
            minutes = (ended - item["created_at"]).total_seconds() / 60
            nodes = 0.0
            if item["nodegroup_created_at"] is not None:
                nodes = (ended - item["nodegroup_created_at"]).total_seconds() / 60 * item["nodes"]
            cluster_minutes += minutes
            node_minutes += nodes
            clusters[role] = {
                "found": True,
                "name": item["name"],
                "created_at": isoformat(item["created_at"]),
                "cluster_minutes": round(minutes, 2),
                "node_minutes": round(nodes, 2),
            }
        cost = cluster_minutes / 60 * prices.cluster_hour + node_minutes / 60 * prices.node_hour
        return {
            "cluster_minutes": round(cluster_minutes, 2),
            "node_minutes": round(node_minutes, 2),
            "estimated_cost_usd": round(cost, 2),
            "cost_basis": "list prices from config (estimate; excludes load balancers, traffic)",
            "complete": all(item.get("found") for item in clusters.values()),
            "clusters": clusters,
            "ended_at": isoformat(ended),
        }

    def delete(self, ctx: RunContext) -> dict[str, Any]:
        names = [self.cluster_name(ctx, role) for role in ROLES]
        found = self.usage(ctx)
        balancers = self.drain_load_balancers(names)
        outcome = self.delete_clusters_by_name(names)
        groups = self.delete_orphan_security_groups(names)
        used = self.minutes_used(found, utcnow())
        used.update(
            {"deleted": outcome, "load_balancers": balancers, "security_groups_deleted": groups}
        )
        log.info(
            "run %s used %.1f cluster-minutes and %.1f node-minutes (about $%.2f)",
            ctx.slug,
            used["cluster_minutes"],
            used["node_minutes"],
            used["estimated_cost_usd"],
        )
        return used

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

    # -- plan --------------------------------------------------------------------------
    def _placeholder_network(self) -> NetworkStack:
        stack = self.env.network_stack_name
        return NetworkStack(
            name=stack,
            vpc_id=f"<VpcId output of {stack}>",
            public_subnets=(f"<{stack} public subnet 1>", f"<{stack} public subnet 2>"),
            private_subnets=(
                (f"<{stack} private subnet 1>", f"<{stack} private subnet 2>")
                if self.env.private_subnets
                else ()
            ),
            cluster_role_arn=f"<ClusterRoleArn output of {stack}>",
            node_role_arn=f"<NodeRoleArn output of {stack}>",
        )

    def plan_create(self, ctx: RunContext) -> list[Step]:
        env = self.env
        network = self._placeholder_network()
        stack_call = {
            "StackName": env.network_stack_name,
            "TemplateBody": "<include/meshbench/environments/aws_network.yaml>",
            "Parameters": {
                p["ParameterKey"]: p["ParameterValue"] for p in self.network_parameters()
            },
            "Capabilities": ["CAPABILITY_IAM"],
            "Tags": {TAG_MANAGED: "true", TAG_KEEP: "true", TAG_KIND: "network"},
        }
        waiter = f"(delay {env.waiter_delay}s, at most {env.waiter_max_attempts} polls)"
        steps = [
            Step(
                "create_clusters",
                "api",
                f"Use the shared network stack {env.network_stack_name} in {env.region}, or "
                f"create it once (later runs reuse it)",
                f"cloudformation.describe_stacks(StackName={env.network_stack_name!r})\n"
                f"if missing: cloudformation.create_stack({json.dumps(stack_call, indent=2)})\n"
                f"waiter stack_create_complete {waiter}",
            )
        ]
        moment = utcnow()
        for role in ROLES:
            request = self.cluster_request(ctx, role, network, moment)
            request["tags"][TAG_CREATED_AT] = "<creation time, UTC>"
            steps.append(
                Step(
                    "create_clusters",
                    "api",
                    f"Create EKS cluster {request['name']} (adopted when an earlier try of "
                    f"this run made it; requested before waiting for either cluster)",
                    f"EksHook.create_cluster(**{json.dumps(request, indent=2)})",
                    cluster=role,
                )
            )
        names = ", ".join(self.cluster_names(ctx).values())
        steps.append(
            Step(
                "create_clusters",
                "wait",
                f"Wait until both clusters are ACTIVE: {names}",
                f"eks waiter cluster_active {waiter}",
            )
        )
        if env.admin_principal_arns:
            steps.append(
                Step(
                    "create_clusters",
                    "api",
                    "Access entries for the extra admin principals",
                    "\n".join(
                        f"eks.create_access_entry(principalArn={arn!r}); "
                        f"eks.associate_access_policy(policyArn={CLUSTER_ADMIN_POLICY!r}, "
                        f"accessScope={{'type': 'cluster'}})"
                        for arn in env.admin_principal_arns
                    ),
                )
            )
        for role in ROLES:
            request = self.nodegroup_request(ctx, role, network, moment)
            request["tags"][TAG_CREATED_AT] = "<creation time, UTC>"
            _subnets, why = self.node_subnets(ctx.mesh, network)
            steps.append(
                Step(
                    "create_clusters",
                    "api",
                    f"Create managed node group {request['nodegroupName']}: {env.node_count} x "
                    f"{env.instance_type}, {env.ami_type}, {env.capacity_type}, in {why}",
                    f"EksHook.create_nodegroup(**{json.dumps(request, indent=2)})",
                    cluster=role,
                )
            )
        steps.append(
            Step(
                "create_clusters",
                "wait",
                "Wait until both node groups are ACTIVE",
                f"eks waiter nodegroup_active {waiter}",
            )
        )
        return steps

    def plan_prepare(self, ctx: RunContext) -> list[Step]:
        steps = [
            Step(
                "prepare_pair",
                "api",
                "Kubeconfig per task: EksHook.generate_config_file_with_credentials (0600 "
                "temporary kubeconfig and credentials files, removed when the task ends)",
            )
        ]
        timeout = self.env.waiter_delay * self.env.waiter_max_attempts
        steps += [
            Step(
                "prepare_pair",
                "wait",
                f"Wait until {self.env.node_count} node(s) of {self.cluster_name(ctx, role)} are "
                f"Ready",
                f"poll LIST v1 Node every {self.env.waiter_delay}s, up to {timeout}s",
                cluster=role,
            )
            for role in ROLES
        ]
        rules = self.node_rules(ctx)
        for role in ROLES:
            cluster = self.cluster_name(ctx, role)
            peer = self.cluster_name(ctx, self.peer_role(role))
            if not rules:
                continue
            sources = [f"<public IPv4 of each node of {peer}>/32"]
            permissions = [
                {
                    "IpProtocol": rule.protocol,
                    "FromPort": rule.from_port,
                    "ToPort": rule.to_port,
                    "IpRanges": [{"CidrIp": source} for source in sources],
                }
                for rule in rules
            ]
            steps.append(
                Step(
                    "prepare_pair",
                    "api",
                    f"Open {', '.join(rule.label() for rule in rules)} on {cluster}'s cluster "
                    f"security group to {peer}'s nodes only ("
                    + "; ".join(rule.purpose for rule in rules)
                    + ")",
                    f"ec2.authorize_security_group_ingress(GroupId=<clusterSecurityGroupId of "
                    f"{cluster}>, IpPermissions={json.dumps(permissions, indent=2)})\n"
                    f"InvalidPermission.Duplicate counts as done",
                    cluster=role,
                )
            )
        if not rules:
            steps.append(
                Step(
                    "prepare_pair",
                    "api",
                    f"No node-to-node security-group rules: {ctx.mesh} crosses between the "
                    f"clusters through LoadBalancer Services only",
                )
            )
        annotations = ", ".join(f"{k}: {v}" for k, v in LOAD_BALANCER_ANNOTATIONS.items())
        for role in ROLES:
            peer = self.cluster_name(ctx, self.peer_role(role))
            steps.append(
                Step(
                    "prepare_pair",
                    "manifest",
                    f"Every LoadBalancer Service in {self.cluster_name(ctx, role)} is "
                    f"internet-facing and reachable from {peer}'s node addresses only (one "
                    f"that both clusters use, Kuma's global KDS, from its own cluster's too); "
                    f"the steps that create each Service show these settings",
                    f"metadata.annotations: {annotations}\n"
                    f"spec.loadBalancerSourceRanges: [<public IPv4 of each node of {peer}>/32]",
                    cluster=role,
                )
            )
        return steps

    def plan_delete(self, ctx: RunContext) -> list[Step]:
        env = self.env
        names = list(self.cluster_names(ctx).values())
        tags = " or ".join(
            [f"{KUBERNETES_CLUSTER_TAG.format(name='<cluster>')}", f"{LBC_CLUSTER_TAG}=<cluster>"]
        )
        waiter = f"(delay {env.waiter_delay}s, at most {env.waiter_max_attempts} polls)"
        return [
            Step(
                "delete_clusters",
                "wait",
                f"Wait up to {env.load_balancer_wait:g}s for the load balancers of "
                f"{', '.join(names)} to go (they outlive clusters and block VPC deletion); "
                f"delete those still there",
                f"elb.describe_load_balancers + describe_tags, elbv2.describe_load_balancers + "
                f"describe_tags: tag {tags}",
            ),
            Step(
                "delete_clusters",
                "api",
                "Delete the node groups of both clusters, then wait",
                "eks.delete_nodegroup(clusterName=..., nodegroupName=...) for every node group\n"
                f"EksHook waiter all_nodegroups_deleted {waiter}",
            ),
            Step(
                "delete_clusters",
                "api",
                f"Delete both clusters ({', '.join(names)}), then wait; record cluster-minutes",
                f"eks.delete_cluster(name=...); eks waiter cluster_deleted {waiter}",
            ),
            Step(
                "delete_clusters",
                "api",
                "Delete security groups Kubernetes made for load balancers of these clusters "
                "(best effort)",
                "ec2.delete_security_group for groups tagged kubernetes.io/cluster/<cluster> "
                f"without {EKS_CLUSTER_TAG}",
            ),
            Step(
                "delete_clusters",
                "api",
                f"Keep the shared network stack {env.network_stack_name} "
                f"({TAG_KEEP}=true; the reaper spares it)",
            ),
        ]

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

    # -- reaper ------------------------------------------------------------------------
    @property
    def reaper_ttl(self) -> float:
        return self.env.reaper_ttl

    def find_leftovers(self) -> list[Leftover]:
        leftovers: list[Leftover] = []
        cluster_names = set(self.eks_hook.list_clusters())
        for name in sorted(cluster_names):
            cluster = self._describe_cluster(name)
            if cluster is None:
                continue
            tags = cluster.get("tags") or {}
            if tags.get(TAG_MANAGED) != "true":
                continue
            created = parse_timestamp(tags.get(TAG_CREATED_AT)) or parse_timestamp(
                cluster.get("createdAt")
            )
            leftovers.append(
                Leftover(
                    ENVIRONMENT,
                    "eks-cluster",
                    name,
                    created,
                    dag_id=tags.get(TAG_DAG_ID),
                    run_id=tags.get(TAG_RUN_ID),
                    detail={"status": cluster.get("status"), "slug": tags.get(TAG_SLUG)},
                )
            )
            for nodegroup in self.eks_hook.list_nodegroups(clusterName=name):
                leftovers.append(
                    Leftover(
                        ENVIRONMENT,
                        "eks-nodegroup",
                        nodegroup,
                        created,
                        dag_id=tags.get(TAG_DAG_ID),
                        run_id=tags.get(TAG_RUN_ID),
                        parent=name,
                    )
                )
        for page in self.cloudformation.get_paginator("describe_stacks").paginate():
            for stack in page["Stacks"]:
                tags = {tag["Key"]: tag["Value"] for tag in stack.get("Tags", [])}
                if tags.get(TAG_MANAGED) != "true" or stack["StackStatus"] in (
                    "DELETE_COMPLETE",
                    "DELETE_IN_PROGRESS",
                ):
                    continue
                leftovers.append(
                    Leftover(
                        ENVIRONMENT,
                        "cloudformation-stack",
                        stack["StackName"],
                        parse_timestamp(tags.get(TAG_CREATED_AT))
                        or parse_timestamp(stack.get("CreationTime")),
                        dag_id=tags.get(TAG_DAG_ID),
                        run_id=tags.get(TAG_RUN_ID),
                        keep=tags.get(TAG_KEEP) == "true",
                        detail={"status": stack["StackStatus"]},
                    )
                )
        # Load balancers of live clusters go with their cluster; these lost theirs.
        for balancer in self.load_balancers(None):
            cluster = balancer["cluster"]
            if cluster in cluster_names:
                continue
            leftovers.append(
                Leftover(
                    ENVIRONMENT,
                    "load-balancer",
                    balancer.get("name") or balancer["id"],
                    parse_timestamp(balancer.get("created")),
                    parent=cluster,
                    detail={"balancer": balancer, "orphan": f"its cluster {cluster} is gone"},
                )
            )
        return leftovers

    def remove(self, leftovers: list[Leftover]) -> dict[str, str]:
        outcome: dict[str, str] = {}
        clusters = [item.name for item in leftovers if item.kind == "eks-cluster"]
        balancers = [item for item in leftovers if item.kind == "load-balancer"]
        # Load balancers of reaped clusters go first: nobody deletes their Services now.
        if clusters:
            for balancer in self.load_balancers(clusters):
                label = balancer.get("name") or balancer["id"]
                if not any(item.name == label for item in balancers):
                    balancers.append(
                        Leftover(
                            ENVIRONMENT,
                            "load-balancer",
                            label,
                            parse_timestamp(balancer.get("created")),
                            parent=balancer["cluster"],
                            detail={"balancer": balancer},
                        )
                    )
        for item in balancers:
            try:
                self.delete_load_balancer(item.detail["balancer"])
                outcome[item.describe()] = "deleted"
            except Exception as exc:
                outcome[item.describe()] = f"error: {exc}"
                log.warning("could not delete %s: %s", item.describe(), exc)
        if clusters:
            try:
                deleted = self.delete_clusters_by_name(clusters)
                for item in leftovers:
                    if item.kind == "eks-cluster":
                        outcome[item.describe()] = deleted.get(item.name, "deleted")
                    elif item.kind == "eks-nodegroup" and item.parent in clusters:
                        outcome[item.describe()] = "deleted with its cluster"
                self.delete_orphan_security_groups(clusters)
            except Exception as exc:
                for item in leftovers:
                    if item.kind in ("eks-cluster", "eks-nodegroup"):
                        outcome.setdefault(item.describe(), f"error: {exc}")
                log.warning("could not delete clusters %s: %s", ", ".join(clusters), exc)
        for item in leftovers:
            if item.kind == "eks-nodegroup" and item.parent not in clusters:
                try:
                    gone = not self._delete_with_retries(
                        item.describe(),
                        self.eks.delete_nodegroup,
                        clusterName=item.parent,
                        nodegroupName=item.name,
                    )
                    outcome[item.describe()] = "already gone" if gone else "deleted"
                except Exception as exc:
                    outcome[item.describe()] = f"error: {exc}"
        for item in leftovers:
            if item.kind != "cloudformation-stack":
                continue
            try:
                self.cloudformation.delete_stack(StackName=item.name)
                self.cloudformation.get_waiter("stack_delete_complete").wait(
                    StackName=item.name, WaiterConfig=_waiter_config(self.env)
                )
                outcome[item.describe()] = "deleted"
            except Exception as exc:
                outcome[item.describe()] = f"error: {exc}"
                log.warning("could not delete %s: %s", item.describe(), exc)
        return outcome


def build_backend(
    config: BenchmarkConfig,
    mesh: str,
    *,
    runner: CommandRunner | None = None,
    api_factory: ApiFactory = default_api_factory,
    **options: Any,
) -> Backend:
    """The registry's entry point: EKS clusters as the source of the shared Kubernetes
    backend; ``runner``/``api_factory`` let tests swap kubectl and the Kubernetes API."""
    from meshbench.environments.cloud import build_provisioned_backend

    runner = runner or CommandRunner(default_timeout=config.kubernetes.timeouts.command)
    provider = AwsProvider(config, runner=runner, api_factory=api_factory)
    options.setdefault(
        "metrics_server",
        config.kubernetes.metrics_server.for_kubernetes(
            config.environment("aws").kubernetes_version
        ),
    )
    return build_provisioned_backend(
        config, mesh, provider, runner=runner, api_factory=api_factory, **options
    )

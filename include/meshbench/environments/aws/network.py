"""The shared network stack (CloudFormation) every run uses."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from meshbench.backend import StepFailed
from meshbench.environments.aws.clients import AwsClients
from meshbench.environments.aws.constants import (
    ALREADY_EXISTS,
    ENVIRONMENT,
    NETWORK_TEMPLATE,
    STACK_BUSY,
    STACK_CREATING,
    STACK_DELETING,
    STACK_READY,
    STACK_ROLLED_BACK,
    TAG_CREATED_AT,
    TAG_ENVIRONMENT,
    TAG_KEEP,
    TAG_KIND,
    TAG_MANAGED,
    VALIDATION_ERROR,
    _waiter_config,
)
from meshbench.environments.aws.rules import (
    NEEDS_NODE_REACHABILITY,
    subnet_blocks,
)
from meshbench.environments.aws.steps import CREATE
from meshbench.environments.provider import (
    isoformat,
    utcnow,
)
from meshbench.kube.ops import Op, call_op

log = logging.getLogger(__name__)


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


class AwsNetwork(AwsClients):
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

    def planned_network(self) -> NetworkStack:
        """The network stack as the plan shows it: its outputs are only known once it exists."""
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

    def network_op(self, found: Callable[[NetworkStack], None]) -> Op:
        """Use or create the shared network stack; ``found`` receives it for the later steps."""
        env = self.env
        stack_call = {
            "StackName": env.network_stack_name,
            "TemplateBody": "<include/meshbench/environments/aws_network.yaml>",
            "Parameters": {
                p["ParameterKey"]: p["ParameterValue"] for p in self.network_parameters()
            },
            "Capabilities": ["CAPABILITY_IAM"],
            "Tags": {TAG_MANAGED: "true", TAG_KEEP: "true", TAG_KIND: "network"},
        }
        return call_op(
            CREATE,
            None,
            "api",
            f"Use the shared network stack {env.network_stack_name} in {env.region}, or "
            f"create it once (later runs reuse it)",
            lambda clusters: found(self.ensure_network()),
            f"cloudformation.describe_stacks(StackName={env.network_stack_name!r})\n"
            f"if missing: cloudformation.create_stack({json.dumps(stack_call, indent=2)})\n"
            f"waiter stack_create_complete {self.waiter_limits()}",
        )

    def waiter_limits(self) -> str:
        return f"(delay {self.env.waiter_delay}s, at most {self.env.waiter_max_attempts} polls)"

    def _describe_stack(self, name: str) -> dict[str, Any] | None:
        try:
            stacks = self.cloudformation.describe_stacks(StackName=name)["Stacks"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == VALIDATION_ERROR and "does not exist" in str(exc):
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
            except ClientError as exc:
                if exc.response["Error"]["Code"] != ALREADY_EXISTS:
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

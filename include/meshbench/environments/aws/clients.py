"""The aws provider's clients and the EKS look-ups every concern shares."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError

from meshbench.backend import RunContext, StepFailed
from meshbench.config import AwsEnvironment
from meshbench.environments.aws.constants import (
    ENVIRONMENT,
    RESOURCE_NOT_FOUND,
    TAG_SLUG,
    _waiter_config,
)
from meshbench.environments.provider import (
    ClusterProvider,
)

log = logging.getLogger(__name__)


class AwsClients(ClusterProvider):
    """The boto3 clients of the aws environment, from the Airflow connection."""

    environment = ENVIRONMENT

    @property
    def env(self) -> AwsEnvironment:
        return self.config.environments.aws

    # -- clients -----------------------------------------------------------------------
    @cached_property
    def _clients(self) -> dict[str, Any]:
        """boto3 clients by service, each made on first use."""
        return {}

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

    # -- create ------------------------------------------------------------------------
    def _describe_cluster(self, name: str) -> dict[str, Any] | None:
        try:
            return self.eks.describe_cluster(name=name)["cluster"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == RESOURCE_NOT_FOUND:
                return None
            raise

    def _describe_nodegroup(self, cluster: str, nodegroup: str) -> dict[str, Any] | None:
        try:
            return self.eks.describe_nodegroup(clusterName=cluster, nodegroupName=nodegroup)[
                "nodegroup"
            ]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == RESOURCE_NOT_FOUND:
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

"""The management cluster, the credentials, and access to the workload clusters."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from meshbench.backend import RunContext, StepFailed
from meshbench.config import BenchmarkConfig, CapiEnvironment
from meshbench.environments.provider import ROLES, ClusterProvider
from meshbench.kube.access import (
    ClusterAccess,
    ClusterAccessError,
    ConnectionAccess,
    select_context,
)
from meshbench.kube.cluster import ApiFactory, Clusters, default_api_factory
from meshbench.kube.ops import Op, call_op
from meshbench.kube.redact import format_command
from meshbench.kube.runner import CommandRunner

ENVIRONMENT = "capi"
MANAGEMENT = "management"
KUBECONFIG_SECRET = "{name}-kubeconfig"
NODES_PER_CLUSTER = 2  # one control plane, one worker


@dataclass(frozen=True)
class Credentials:
    """What the infrastructure provider needs; ``api_key`` is a secret."""

    api_key: str
    project_id: str
    ssh_keys: tuple[str, ...] = ()


def read_credentials(conn_id: str) -> Credentials:
    """From an Airflow connection: password = API token; extra ``project_id`` and an
    optional ``ssh_public_key`` (one key per line)."""
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise StepFailed(f"Cluster API credentials connection {conn_id!r}: {exc}") from None
    extras = connection.extra_dejson or {}
    api_key = connection.password or ""
    project_id = str(extras.get("project_id") or "")
    if not api_key or not project_id:
        raise StepFailed(
            f"connection {conn_id!r} must hold the provider's API token as password and "
            f"project_id in its extra"
        )
    keys = tuple(
        line.strip() for line in str(extras.get("ssh_public_key") or "").splitlines() if line
    )
    return Credentials(api_key, project_id, keys)


class CapiWorkloadAccess(ClusterAccess):
    """A workload cluster, reached with the kubeconfig Cluster API stores in the management
    cluster as Secret ``<name>-kubeconfig`` (key ``value``)."""

    def __init__(
        self,
        role: str,
        cluster_name: str,
        namespace: str,
        management: ClusterAccess,
        api_factory: ApiFactory = default_api_factory,
    ) -> None:
        super().__init__(role)
        self.cluster_name = cluster_name
        self.namespace = namespace
        self.management = management
        self.api_factory = api_factory

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "kubeconfig_source": (
                f"cluster-api secret {self.namespace}/"
                f"{KUBECONFIG_SECRET.format(name=self.cluster_name)}"
            ),
            "cluster": self.cluster_name,
            "management": self.management.describe(),
        }

    def kubeconfig(self) -> dict[str, Any]:
        secret_name = KUBECONFIG_SECRET.format(name=self.cluster_name)
        with self.management.open() as path:
            api = self.api_factory(self.management, path)
            secret = api.get("v1", "Secret", secret_name, self.namespace)
        if secret is None:
            raise ClusterAccessError(
                f"{self.role} cluster {self.cluster_name}: Secret {self.namespace}/{secret_name} "
                f"does not exist yet (the control plane is not initialised)"
            )
        encoded = (secret.get("data") or {}).get("value")
        if not encoded:
            raise ClusterAccessError(f"Secret {self.namespace}/{secret_name} has no 'value' key")
        document = yaml.safe_load(base64.b64decode(encoded))
        if not isinstance(document, dict):
            raise ClusterAccessError(f"Secret {self.namespace}/{secret_name} holds no kubeconfig")
        return select_context(document, None)


def done(_result: Any) -> None:
    """Op actions return a summary dict or None; plain results are not summaries."""
    return None


class CapiBase(ClusterProvider):
    """What every part of the capi provider stands on: its settings, the credentials and
    the management cluster, and access to the run's workload clusters."""

    environment = ENVIRONMENT

    def __init__(
        self,
        config: BenchmarkConfig,
        *,
        runner: CommandRunner | None = None,
        api_factory: ApiFactory = default_api_factory,
        credentials: Callable[[], Credentials] | None = None,
        management_access: ClusterAccess | None = None,
    ) -> None:
        env = config.environments.capi
        super().__init__(
            config,
            runner=runner or CommandRunner(default_timeout=env.command_timeout),
            api_factory=api_factory,
        )
        self.env: CapiEnvironment = env
        self._credentials = credentials or (lambda: read_credentials(self.env.credentials_conn_id))
        self.management_access = management_access or ConnectionAccess(
            MANAGEMENT, self.env.management_conn_id
        )

    # -- access ------------------------------------------------------------------------
    def access(self, ctx: RunContext, role: str) -> CapiWorkloadAccess:
        return CapiWorkloadAccess(
            role,
            self.cluster_name(ctx, role),
            self.env.namespace,
            self.management_access,
            self.api_factory,
        )

    def clusters(self, ctx: RunContext | None) -> Clusters:
        """Management plus (with a run) both workload clusters, opened on first use."""
        accesses: dict[str, ClusterAccess] = {MANAGEMENT: self.management_access}
        if ctx is not None:
            accesses.update({role: self.access(ctx, role) for role in ROLES})
        return Clusters(
            accesses, self.runner, self.api_factory, poll_interval=self.env.poll_interval
        )

    @property
    def control_plane_machine_type(self) -> str:
        return self.env.control_plane_machine_type or self.env.machine_type

    def describe_cluster_args(self, name: str) -> list[str]:
        """``clusterctl`` arguments that print the condition tree of Cluster ``name``."""
        return ["describe", "cluster", name, "-n", self.env.namespace, "--show-conditions", "all"]

    def kubectl_op(
        self, task: str, role: str, description: str, args: list[str], detail_prefix: str = ""
    ) -> Op:
        """An op of ``task`` that runs ``kubectl args`` in cluster ``role``."""
        timeout = self.env.command_timeout
        return call_op(
            task,
            role,
            "command",
            description,
            lambda clusters: done(clusters[role].kubectl(*args, timeout=timeout)),
            detail_prefix + format_command(["kubectl", *args]),
        )

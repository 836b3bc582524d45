"""What a cluster provider (aws, capi) does, apart from the per-iteration steps.

A provider creates (or adopts) the two clusters of a run, opens them to each other, gives
per-task access to them, deletes them, and finds what earlier runs leaked. Everything it
makes is named from the run's slug (``ctx.resource_prefix``) and marked with the run's
identity, so a retried task, another worker or the reaper finds it again without memory.
The per-iteration steps (workloads, meshes, load) are not here: the backend in
``environments/cloud.py`` hands the clusters to the same code the ``existing`` environment
uses.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meshbench.backend import RunContext, Step
from meshbench.kube.cluster import ApiFactory, default_api_factory
from meshbench.kube.runner import CommandRunner
from meshbench.names import ROLES

if TYPE_CHECKING:
    from meshbench.config import BenchmarkConfig
    from meshbench.kube.access import ClusterAccess

# DAG run states after which nothing of the run may still exist.
FINISHED_RUN_STATES = frozenset({"success", "failed"})

# Given (dag_id, run_id), the state of that DAG run ("running", "success", ...) or None
# when it cannot be found out.
RunStateLookup = Callable[[str, str], "str | None"]

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """UTC timestamp without fractions, e.g. 2026-11-26T07:00:00Z (valid in AWS tags)."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: Any) -> datetime | None:
    """A timezone-aware datetime from an ISO string or datetime; None when unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def tag_value(text: str, limit: int = 256) -> str:
    """``text`` made safe for AWS tag values (letters, digits, spaces and + - = . _ : / @)."""
    return _TAG_UNSAFE.sub("_", text)[:limit]


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclass(frozen=True)
class Leftover:
    """Something a meshbench run created that still exists, as the reaper sees it."""

    environment: str
    kind: str  # eks-cluster, eks-nodegroup, cloudformation-stack, load-balancer, capi-cluster
    name: str
    created_at: datetime | None
    dag_id: str | None = None
    run_id: str | None = None
    keep: bool = False  # marked to be kept (the shared network stack)
    parent: str | None = None  # the cluster a node group or load balancer belongs to
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        where = f" in {self.parent}" if self.parent else ""
        return f"{self.kind} {self.name}{where}"


@dataclass(frozen=True)
class Verdict:
    leftover: Leftover
    delete: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        item = self.leftover
        return {
            "environment": item.environment,
            "kind": item.kind,
            "name": item.name,
            "parent": item.parent,
            "created_at": isoformat(item.created_at) if item.created_at else None,
            "dag_id": item.dag_id,
            "run_id": item.run_id,
            "action": "delete" if self.delete else "keep",
            "reason": self.reason,
        }


class ClusterSourceBase:
    """What every source of a run's two clusters (``existing`` and the cloud providers) is
    built with: the configuration, the kubectl runner it shares with the backend, and how
    it makes Kubernetes API clients (tests pass fakes of both)."""

    environment: str

    def __init__(
        self,
        config: BenchmarkConfig,
        *,
        runner: CommandRunner | None = None,
        api_factory: ApiFactory = default_api_factory,
    ) -> None:
        self.config = config
        self.runner = runner or CommandRunner(default_timeout=config.kubernetes.timeouts.command)
        self.api_factory = api_factory


class ClusterProvider(ClusterSourceBase, abc.ABC):
    """Creates, opens, deletes and reaps the two clusters of one environment."""

    _planning = False  # set on the instance for the length of planning()

    @contextlib.contextmanager
    def planning(self) -> Iterator[None]:
        """While planning, nothing may reach a cloud: answers that need one (the peer's
        addresses) are placeholders."""
        before, self._planning = self._planning, True
        try:
            yield
        finally:
            self._planning = before

    @property
    def is_planning(self) -> bool:
        return self._planning

    # -- names -------------------------------------------------------------------------
    def cluster_name(self, ctx: RunContext, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown cluster role {role!r}; roles: {', '.join(ROLES)}")
        return f"{ctx.resource_prefix}-{role}"

    def cluster_names(self, ctx: RunContext) -> dict[str, str]:
        return {role: self.cluster_name(ctx, role) for role in ROLES}

    # -- the plan ----------------------------------------------------------------------
    @abc.abstractmethod
    def plan_create(self, ctx: RunContext) -> list[Step]:
        """The create_clusters steps (commands, API calls, manifests), without running them."""

    @abc.abstractmethod
    def plan_prepare(self, ctx: RunContext) -> list[Step]:
        """The provider's part of prepare_pair (firewall rules, load balancer support)."""

    @abc.abstractmethod
    def plan_delete(self, ctx: RunContext) -> list[Step]:
        """The delete_clusters steps."""

    def plan_warnings(self, ctx: RunContext) -> list[str]:
        return []

    # -- the tasks ---------------------------------------------------------------------
    @abc.abstractmethod
    def create(self, ctx: RunContext) -> dict[str, Any]:
        """Create or adopt both clusters; returns a description without secrets."""

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        """Open the clusters to each other for this run's mesh; idempotent."""
        return {}

    @abc.abstractmethod
    def delete(self, ctx: RunContext) -> dict[str, Any]:
        """Delete both clusters (tolerating what is gone); returns the cluster-minutes used."""

    @abc.abstractmethod
    def access(self, ctx: RunContext, role: str) -> ClusterAccess:
        """Per-task access to one of the run's clusters (kubeconfig made on open)."""

    def service_annotations(self) -> dict[str, str]:
        """Annotations every LoadBalancer Service of the run needs in this environment."""
        return {}

    def load_balancer_source_ranges(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> list[str]:
        """Who may reach the LoadBalancer Services of cluster ``role``: the addresses the
        ``clients`` clusters' traffic comes from (default: the other cluster only). Empty:
        no limit set by the environment."""
        return []

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    # -- the reaper --------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def reaper_ttl(self) -> float:
        """Seconds after which anything this environment made counts as leaked."""

    @abc.abstractmethod
    def find_leftovers(self) -> list[Leftover]:
        """Everything meshbench made in this environment that still exists."""

    @abc.abstractmethod
    def remove(self, leftovers: list[Leftover]) -> dict[str, str]:
        """Delete ``leftovers`` (in a safe order) and wait; maps each described leftover to
        "deleted", "already gone" or the error. Never raises for one failed item."""

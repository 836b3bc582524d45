"""The reaper: finds what meshbench runs leaked in a cloud environment and removes it.

Each provider lists everything it made that still exists (``find_leftovers``: EKS
clusters and node groups, CloudFormation stacks, orphaned load balancers; Cluster API
``Cluster`` objects). :func:`judge` decides per item, and says why:

* marked to be kept (the shared network stack): keep;
* its DAG run has finished (success or failed), so its teardown already ran: delete;
* older than the environment's ``reaper_ttl``: delete;
* a load balancer whose cluster is gone: delete;
* otherwise (a run in progress, or no way to tell): keep.

``reap`` logs every decision, deletes unless ``dry_run``, and returns a report without
secrets (it goes through XCom). The daily DAG ``meshbench_reaper`` and ``meshbench reap``
both call it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meshbench.config import BenchmarkConfig, ConfigError
from meshbench.environments.provider import (
    FINISHED_RUN_STATES,
    ClusterProvider,
    Leftover,
    RunStateLookup,
    Verdict,
    format_age,
    isoformat,
    utcnow,
)
from meshbench.registry import import_entry

log = logging.getLogger(__name__)

REAPABLE_ENVIRONMENTS = ("aws", "capi")
PROVIDER_CLASSES = {
    "aws": "meshbench.environments.aws:AwsProvider",
    "capi": "meshbench.environments.capi:CapiProvider",
}


def make_provider(config: BenchmarkConfig, environment: str) -> ClusterProvider:
    reapable = ", ".join(REAPABLE_ENVIRONMENTS)
    unknown = f"environment {environment!r} creates no clusters; the reaper handles {reapable}"
    return import_entry(PROVIDER_CLASSES, environment, unknown)(config)


def _run_state(lookup: RunStateLookup | None, dag_id: str | None, run_id: str | None) -> str | None:
    if lookup is None or not dag_id or not run_id:
        return None
    try:
        return lookup(dag_id, run_id)
    except Exception as exc:  # a deleted run, an API hiccup: fall back to the TTL
        log.info("state of DAG run %s/%s unknown (%s); judging by age", dag_id, run_id, exc)
        return None


def judge(
    leftover: Leftover,
    now: datetime,
    ttl: float,
    run_state: RunStateLookup | None = None,
    states: dict[tuple[str, str], str | None] | None = None,
) -> Verdict:
    """Whether to delete ``leftover``, and why (the reason is logged and reported)."""
    if leftover.keep:
        return Verdict(leftover, False, "marked to be kept (meshbench:keep=true)")
    orphan = leftover.detail.get("orphan")
    if orphan:
        return Verdict(leftover, True, str(orphan))
    key = (leftover.dag_id or "", leftover.run_id or "")
    if states is not None and key in states:
        state = states[key]
    else:
        state = _run_state(run_state, leftover.dag_id, leftover.run_id)
        if states is not None:
            states[key] = state
    run = f"DAG run {leftover.dag_id}/{leftover.run_id}"
    if state in FINISHED_RUN_STATES:
        return Verdict(leftover, True, f"its {run} is {state}, so its teardown already ran")
    if leftover.created_at is None:
        return Verdict(leftover, False, "no creation time recorded; left for a person to check")
    age = (now - leftover.created_at).total_seconds()
    created = f"created {isoformat(leftover.created_at)} ({format_age(age)} ago)"
    if age > ttl:
        return Verdict(leftover, True, f"{created}, older than the TTL of {format_age(ttl)}")
    state_text = f"its {run} is {state}" if state else "its DAG run state is unknown"
    return Verdict(
        leftover, False, f"fresh: {created}, within the TTL of {format_age(ttl)}; {state_text}"
    )


@dataclass
class ReapReport:
    environment: str
    dry_run: bool
    ttl_seconds: float
    checked_at: str
    verdicts: list[Verdict] = field(default_factory=list)
    outcome: dict[str, str] = field(default_factory=dict)

    @property
    def to_delete(self) -> list[Verdict]:
        return [verdict for verdict in self.verdicts if verdict.delete]

    @property
    def failures(self) -> dict[str, str]:
        return {what: result for what, result in self.outcome.items() if result.startswith("error")}

    def as_dict(self) -> dict[str, Any]:
        items = []
        for verdict in self.verdicts:
            item = verdict.as_dict()
            item["result"] = self.outcome.get(
                verdict.leftover.describe(),
                ("would delete" if self.dry_run else "not deleted") if verdict.delete else "kept",
            )
            items.append(item)
        return {
            "environment": self.environment,
            "dry_run": self.dry_run,
            "ttl_seconds": self.ttl_seconds,
            "checked_at": self.checked_at,
            "found": len(self.verdicts),
            "to_delete": len(self.to_delete),
            "failures": len(self.failures),
            "items": items,
        }

    def render(self) -> str:
        mode = "dry run: nothing deleted" if self.dry_run else "deleting"
        lines = [
            f"reaper for {self.environment} ({mode}); TTL {format_age(self.ttl_seconds)}; "
            f"{len(self.verdicts)} meshbench resource(s) found, {len(self.to_delete)} to delete"
        ]
        for item in self.as_dict()["items"]:
            where = f" in {item['parent']}" if item["parent"] else ""
            lines.append(
                f"  {item['result']:<16} {item['kind']} {item['name']}{where}: {item['reason']}"
            )
        return "\n".join(lines)


def reap(
    provider: ClusterProvider,
    *,
    dry_run: bool,
    run_state: RunStateLookup | None = None,
    now: datetime | None = None,
    ttl: float | None = None,
) -> ReapReport:
    """Find, judge and (unless ``dry_run``) delete one environment's leftovers."""
    moment = now or utcnow()
    limit = provider.reaper_ttl if ttl is None else ttl
    report = ReapReport(provider.environment, dry_run, limit, isoformat(moment))
    leftovers = provider.find_leftovers()
    states: dict[tuple[str, str], str | None] = {}
    by_cluster: dict[str, Verdict] = {}
    for leftover in leftovers:
        if leftover.kind == "eks-nodegroup" and leftover.parent in by_cluster:
            parent = by_cluster[leftover.parent]
            verdict = Verdict(leftover, parent.delete, f"goes with its cluster: {parent.reason}")
        else:
            verdict = judge(leftover, moment, limit, run_state, states)
        if leftover.kind in ("eks-cluster", "capi-cluster"):
            by_cluster[leftover.name] = verdict
        report.verdicts.append(verdict)
        action = "delete" if verdict.delete else "keep"
        if dry_run and verdict.delete:
            action = "would delete"
        log.info("%s %s: %s", action, leftover.describe(), verdict.reason)
    doomed = [verdict.leftover for verdict in report.to_delete]
    if doomed and not dry_run:
        report.outcome = provider.remove(doomed)
        for what, result in report.outcome.items():
            level = logging.WARNING if result.startswith("error") else logging.INFO
            log.log(level, "%s: %s", what, result)
    return report


# -- the DAG's task ----------------------------------------------------------------------

REAPER_DOC = """\
# meshbench_reaper

Finds what benchmark runs of the **aws** (EKS) and **capi** (Cluster API) environments
left behind and deletes it, once a day. A run's own `delete_clusters` teardown normally
removes everything; this catches what a killed worker, an expired credential or a
cancelled run leaked, before it costs money for days.

What it looks at (only what carries meshbench's tags or labels):

| environment | resources |
| --- | --- |
| aws | EKS clusters, their node groups, CloudFormation stacks, orphaned load balancers |
| capi | `Cluster` objects in the management cluster's meshbench namespace |

A resource is deleted when its DAG run has **finished** (success or failed) or it is
**older than the environment's `reaper_ttl`** (8 h by default); the shared network stack
(`meshbench:keep=true`) is always kept. Every decision is logged with what and why, and the
task's return value lists them.

**Params:** `dry_run` lists and judges without deleting anything. An environment whose
Airflow connection does not exist is skipped (nothing was ever created there).
Logic: `meshbench.environments.reaper`; from a shell: `meshbench reap --env aws --dry-run`.
"""


def connection_id(config: BenchmarkConfig, environment: str) -> str:
    if environment == "aws":
        return config.environments.aws.aws_conn_id
    if environment == "capi":
        return config.environments.capi.management_conn_id
    raise ConfigError(f"environment {environment!r} creates no clusters")


def task_run_state(ti: Any) -> RunStateLookup:
    """DAG run states through the task instance (the Task SDK's API, not the database)."""

    def lookup(dag_id: str, run_id: str) -> str | None:
        state = ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)
        return str(state) if state else None

    return lookup


def reap_environment_task(
    environment: str, *, dry_run: bool, ti: Any, config: BenchmarkConfig | None = None
) -> dict[str, Any]:
    """The body of the reaper DAG's ``reap_<environment>`` task."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowSkipException

    from meshbench.config import load_config

    config = config or load_config()
    conn_id = connection_id(config, environment)
    try:
        BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise AirflowSkipException(
            f"no Airflow connection {conn_id!r} for {environment}: nothing to reap ({exc})"
        ) from None
    report = reap(make_provider(config, environment), dry_run=dry_run, run_state=task_run_state(ti))
    log.info("%s", report.render())
    if report.failures:
        raise RuntimeError(
            f"{len(report.failures)} deletion(s) failed: "
            + "; ".join(f"{what}: {why}" for what, why in report.failures.items())
        )
    return report.as_dict()

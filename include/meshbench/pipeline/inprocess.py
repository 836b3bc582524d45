"""A whole benchmark run in this process: the DAG's tasks, in its order, under its rules.

``meshbench local run``, the fidelity benchmark and the end-to-end tests drive the same
``Pipeline`` that Airflow drives one task at a time: the same task graph
(``pipeline.graph``), trigger rules, skips, failure records, artifacts, machine lease and
run state. What Airflow adds and this does not: retries, and a scheduler that can mark
the run failed from outside (here Ctrl-C does that: the teardowns still run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine

from meshbench.backend import PHASE_MEASURED, Backend, RunContext
from meshbench.config import BenchmarkConfig, LoadProfile
from meshbench.pipeline import lease
from meshbench.pipeline.collect import AttemptFolders, collect_records
from meshbench.pipeline.graph import TaskSpec, task_graph
from meshbench.pipeline.lease import RESCHEDULE_SECONDS
from meshbench.pipeline.steps import (
    AirflowTask,
    Pipeline,
    RunObserver,
    StepRescheduled,
    StepSkipped,
    TaskRun,
)
from meshbench.results.loader import MeasurementRecord, negative_reason, run_state

log = logging.getLogger(__name__)

# Airflow's task states, as the load's stop-from-outside check reads them.
SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED = "success", "failed", "skipped", "upstream_failed"


@dataclass
class InProcessRun:
    """What a run driven in this process did: each task's state, its measurements (the
    kept artifacts and a negative for each run never made) and the run's state."""

    ctx: RunContext
    task_states: dict[str, str]
    measurements: list[MeasurementRecord]
    failures: dict[str, str]
    teardown_problems: list[str]
    state: str
    positive_measured: int
    artifacts: str
    loaded: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> list[MeasurementRecord]:
        return [record for record in self.measurements if record.phase == PHASE_MEASURED]


class _Walk:
    """The tasks' states so far, and the trigger rules that decide the next one."""

    def __init__(self, specs: list[TaskSpec]) -> None:
        self.specs = {spec.task_id: spec for spec in specs}
        self.states: dict[str, str] = {}

    def airflow_view(self) -> dict[str, AirflowTask]:
        return {
            task_id: AirflowTask(state, self.specs[task_id].waits_for, self.specs[task_id].teardown)
            for task_id, state in self.states.items()
        }

    def blocked(self, spec: TaskSpec) -> str | None:
        """The state Airflow gives a task its upstream keeps from running, else None."""
        if spec.runs_after_failures:
            return None
        upstream = [self.states.get(task_id) for task_id in spec.waits_for]
        if any(state in (FAILED, UPSTREAM_FAILED) for state in upstream):
            return UPSTREAM_FAILED
        if any(state == SKIPPED for state in upstream):
            return SKIPPED
        return None


def run_in_process(
    config: BenchmarkConfig,
    environment: str,
    mesh: str,
    *,
    dag_id: str,
    run_id: str,
    load: LoadProfile | None = None,
    load_profile_name: str | None = None,
    backend: Backend | None = None,
    engine: Engine | None = None,
    loads_results: bool = True,
    purpose: str = "manual",
    benchmark_date: date | None = None,
    observer: RunObserver | None = None,
    before_task: Callable[[str], None] | None = None,
) -> InProcessRun:
    """Run every task of one environment × mesh run, teardowns always.

    With ``loads_results`` the run is loaded into Postgres by its ``load_results`` task, as
    a DAG run is; without, nothing touches the database and the run's state is judged from
    its artifacts by the same rule. ``before_task`` is called with each task id before the
    task runs (tests read the local state before the teardown removes it).
    """
    shared: dict[str, Any] = {}

    def pipeline_for(spec: TaskSpec) -> Pipeline:
        task = TaskRun(
            dag_id=dag_id,
            run_id=run_id,
            task_id=spec.task_id,
            benchmark_date=benchmark_date or datetime.now(UTC).date(),
            purpose=purpose,
            origin="cli",
            task_states=lambda: walk.airflow_view(),
        )
        return Pipeline(
            config,
            environment,
            mesh,
            task,
            shared.get("backend", backend),
            load=load,
            load_profile_name=load_profile_name,
            engine=engine,
            loads_results=loads_results,
            observer=observer,
        )

    first = pipeline_for(TaskSpec("create_clusters", "create_clusters"))
    shared["backend"] = first.backend
    first.backend.owned_by_this_process = True
    walk = _Walk(task_graph(first.ctx.load.iterations))
    loaded: dict[str, Any] | None = None
    interrupted: BaseException | None = None
    hook_error: Exception | None = None
    for spec in walk.specs.values():
        if not loads_results and spec.step == "load_results":
            continue
        if interrupted is not None and not spec.teardown:
            walk.states[spec.task_id] = SKIPPED
            continue
        blocked = walk.blocked(spec)
        if blocked is not None:
            walk.states[spec.task_id] = blocked
            continue
        if before_task is not None:
            try:
                before_task(spec.task_id)
            except Exception as exc:  # raised once the teardowns have run
                hook_error = hook_error or exc
        walk.states[spec.task_id] = "running"
        try:
            result = _run_task(pipeline_for(spec), spec)
        except StepSkipped:
            walk.states[spec.task_id] = SKIPPED
        except Exception as exc:
            walk.states[spec.task_id] = FAILED
            log.error("%s failed: %s", spec.task_id, exc)
        except BaseException as exc:  # Ctrl-C: stop measuring, tear down what stands
            walk.states[spec.task_id] = FAILED
            interrupted = exc
        else:
            walk.states[spec.task_id] = SUCCESS
            if spec.step == "load_results":
                loaded = result
    if first.backend.holds_machine:
        # Released by delete_clusters already, unless a hook or Ctrl-C cut in.
        lease.release(first.lease_owner)
    last = pipeline_for(TaskSpec("load_results", "load_results"))
    folders = AttemptFolders(last)
    records = collect_records(last)
    tolerance = last.ctx.load.duration_tolerance
    positive = sum(
        1
        for record in records
        if record.phase == PHASE_MEASURED and negative_reason(record, tolerance) is None
    )
    failures = folders.all_failures()
    teardowns = {task_id for task_id, spec in walk.specs.items() if spec.teardown}
    if loads_results:
        state = SUCCESS if walk.states.get("load_results") == SUCCESS else FAILED
    else:
        state = run_state(positive, last.ctx.load.min_positive, stopped=interrupted is not None)
    try:
        info = last.backend.run_info(last.ctx)
    except Exception as exc:  # the report must not hide the run's results
        info = {"run_info_error": str(exc) or type(exc).__name__}
    run = InProcessRun(
        ctx=last.ctx,
        task_states=dict(walk.states),
        measurements=records,
        failures={t: r for t, r in failures.items() if t not in teardowns},
        teardown_problems=[f"{t}: {r}" for t, r in failures.items() if t in teardowns],
        state=state,
        positive_measured=positive,
        artifacts=str(last.run_dir),
        loaded=loaded,
        info=info,
    )
    if interrupted is not None:
        raise interrupted
    if hook_error is not None:
        raise hook_error
    return run


def _run_task(pipeline: Pipeline, spec: TaskSpec) -> dict[str, Any]:
    """One task; waits its turn while another run holds the machine, as Airflow does."""
    while True:
        try:
            return pipeline.run(spec.step, spec.iteration)
        except StepRescheduled as exc:
            log.warning("%s; trying again in %s s", exc, RESCHEDULE_SECONDS)
            time.sleep(RESCHEDULE_SECONDS)

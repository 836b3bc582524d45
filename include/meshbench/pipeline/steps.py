"""One function per DAG task, independent of Airflow's objects so it can be tested alone.

Each step runs a ``Backend`` method, writes what it produced to the artifact store under
the DAG run's folder and records a failure (task and reason) there before re-raising, so
``load_results`` can turn a failed iteration into negative rows even though the failed
task returned nothing. A retried step finds what an earlier try wrote (deterministic
paths) and adopts it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy import Engine

from meshbench.backend import (
    PHASE_MEASURED,
    PHASE_PAIRED_BASELINE,
    PHASE_WARMUP,
    Backend,
    RunContext,
    StepFailed,
)
from meshbench.benchlock import exclusive_benchmark
from meshbench.config import BenchmarkConfig, LoadProfile, parse_duration
from meshbench.names import iteration_group, iteration_task_id
from meshbench.pipeline import lease
from meshbench.pipeline.artifacts import ArtifactStore, now_iso
from meshbench.pipeline.graph import TEARDOWN_STEPS
from meshbench.pipeline.params import TriggerParamsInvalid, check_trigger
from meshbench.registry import get_backend
from meshbench.results.loader import (
    MeasurementRecord,
)

log = logging.getLogger(__name__)

# Steps that find out first that the results database is not migrated: before anything is
# measured, and before loading.
SCHEMA_CHECKED_STEPS = ("create_clusters", "load_results")
# Fault injection for operators checking that teardown and negative rows work: a task id
# (for example ``iteration_01.install_mesh``) that fails on purpose.
INJECT_FAILURE_ENV_VAR = "MESHBENCH_INJECT_FAILURE"
MAX_REASON_LENGTH = 2000


class StepSkipped(Exception):
    """The step has nothing to do (an unplanned iteration, a pair that was never made)."""


class TooFewPositives(Exception):
    """The run recorded fewer positive measured runs than ``min_positive``."""


class RunStoppedFromOutside(Exception):
    """Airflow ended tasks of the run that the pipeline did not end: the run was marked
    failed by hand (running tasks fail, pending ones are skipped) or a worker was lost."""


class StepRescheduled(Exception):
    """The step must wait (another local run holds the machine); try again later."""


class AirflowTask(NamedTuple):
    """A task of the DAG run as Airflow holds it: its state and its place in the DAG."""

    state: str | None
    upstream: frozenset[str] = frozenset()
    teardown: bool = False


@dataclass(frozen=True)
class TaskRun:
    """What a running task knows about itself, taken from the Airflow context."""

    dag_id: str
    run_id: str
    task_id: str
    benchmark_date: date
    attempt: int = 1
    try_number: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    purpose: str = "manual"  # scheduled, backfill, manual or test (see results.models)
    # What made the run: "airflow" for DAG runs, "cli" for `meshbench local run`.
    origin: str = "airflow"
    # What Airflow holds for the run's tasks (None outside Airflow).
    task_states: Callable[[], dict[str, AirflowTask]] | None = field(default=None, compare=False)


def step_record(ctx: RunContext) -> dict[str, Any]:
    """The load step a run was made at, as its artifact and its measurement row keep it."""
    load = ctx.load
    return {
        "index": load.step_index,
        "key": load.step_key(),
        "connections": load.connections,
        "target_qps": load.qps or None,
        "fixed_rate": load.fixed_rate,
    }


def effective_load(base: LoadProfile, params: dict[str, Any]) -> LoadProfile:
    """The load profile with the trigger form's overrides applied and validated."""
    updates: dict[str, Any] = {}
    for name in ("iterations", "connections", "qps", "runs_per_iteration"):
        if params.get(name) is not None:
            updates[name] = int(params[name])
    if params.get("duration"):
        try:
            updates["duration"] = parse_duration(params["duration"])
        except ValueError as exc:
            raise TriggerParamsInvalid(
                f"trigger parameter duration {params['duration']!r} {exc}"
            ) from None
    merged = base.model_dump() | updates
    if base.steps and ("connections" in updates or "qps" in updates):
        # Connections or a rate asked for in the trigger form make the ladder one step.
        first = base.steps[0]
        merged["steps"] = [
            {
                "connections": updates.get("connections", first.connections),
                "qps": updates.get("qps", first.target_qps) or "max",
            }
        ]
    steps = len(merged["steps"]) if merged.get("steps") else 1
    planned = merged["iterations"] * merged["runs_per_iteration"] * steps
    # Fewer iterations asked for in the trigger form lower the bar with them.
    merged["min_positive"] = min(merged["min_positive"], planned)
    try:
        return LoadProfile.model_validate(merged)
    except ValidationError as exc:
        named = "; ".join(
            f"trigger parameter {'.'.join(map(str, error['loc']))} "
            f"{updates.get(error['loc'][0], '')!r}: {error['msg']}"
            for error in exc.errors()
        )
        raise TriggerParamsInvalid(named) from None


def build_context(
    config: BenchmarkConfig,
    environment: str,
    mesh: str,
    task: TaskRun,
    load: LoadProfile | None = None,
) -> RunContext:
    """The run's context; ``load`` replaces the configured profile and the trigger form."""
    if load is None:
        load = effective_load(config.load_profile_for(environment), task.params)
    version = task.params.get("mesh_version") or config.mesh_version(environment, mesh)
    return RunContext(
        config=config,
        environment=environment,
        mesh=mesh,
        dag_id=task.dag_id,
        run_id=task.run_id,
        load=load,
        mesh_version=version,
        labels={
            "environment": environment,
            "mesh": mesh,
            "dag_id": task.dag_id,
            "dag_run_id": task.run_id,
            "attempt": str(task.attempt),
        },
    )


def reason_of(exc: BaseException) -> str:
    text_ = str(exc) or type(exc).__name__
    if not isinstance(exc, StepFailed):
        text_ = f"{type(exc).__name__}: {text_}"
    return text_[:MAX_REASON_LENGTH]


def task_record(run_dir, kind: str, task_id: str):
    """Where a task's record of ``kind`` (steps, failures, skipped, stopped) is kept."""
    return run_dir / kind / f"{task_id}.json"


@dataclass(frozen=True)
class RunObserver:
    """Called around each load-generator run of a run driven in this process: progress
    output, and tests that inject faults while the load runs."""

    before_load_run: Callable[[int, str, int], None] | None = None
    after_load_run: Callable[[MeasurementRecord], None] | None = None


class Pipeline:
    """The steps of one environment × mesh DAG run.

    ``load`` (named ``load_profile_name``) replaces the configured load profile; ``engine``
    is the results database (the default one when None); ``loads_results`` False makes a
    run that never touches the database (``meshbench local run`` without ``--load``).
    """

    def __init__(
        self,
        config: BenchmarkConfig,
        environment: str,
        mesh: str,
        task: TaskRun,
        backend: Backend | None = None,
        *,
        load: LoadProfile | None = None,
        load_profile_name: str | None = None,
        engine: Engine | None = None,
        loads_results: bool = True,
        observer: RunObserver | None = None,
    ) -> None:
        self.config = config
        self.environment = environment
        self.mesh = mesh
        self.task = task
        self.ctx = build_context(config, environment, mesh, task, load)
        self.load_profile_name = load_profile_name or config.load_profile_name_for(environment)
        self.backend = backend or get_backend(config, environment, mesh)
        self.engine = engine
        self.loads_results = loads_results
        self.observer = observer or RunObserver()
        self.store = ArtifactStore(config)
        self.run_dir = self.store.run_dir(task.dag_id, task.run_id, task.attempt)

    # -------------------------------------------------------------- bookkeeping

    def _step_file(self, task_id: str):
        return task_record(self.run_dir, "steps", task_id)

    def _failure_file(self, task_id: str):
        return task_record(self.run_dir, "failures", task_id)

    def _skip_file(self, task_id: str):
        return task_record(self.run_dir, "skipped", task_id)

    def _artifact(self, iteration: int, phase: str, run_index: int, step: int = 1):
        # One-step profiles keep the names earlier tries (and releases) wrote.
        name = (
            f"{phase}-s{step:02d}-{run_index:02d}"
            if self.ctx.load.steps
            else f"{phase}-{run_index:02d}"
        )
        return self.run_dir / iteration_group(iteration) / f"{name}.json"

    def _started(self, task_id: str) -> bool:
        return (self.run_dir / "started" / task_id).exists()

    def _mark_started(self, task_id: str) -> None:
        marker = self.run_dir / "started" / task_id
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def run(self, step: str, iteration: int | None = None) -> dict[str, Any]:
        """Run one step; on failure record the reason in the store, then re-raise."""
        task_id = self.task.task_id
        started_at = now_iso()
        try:
            self._guard(step, iteration)
            if step == "create_clusters":
                # Runs triggered past the API server's check (the CLI) are checked here.
                check_trigger(self.config, self.task.dag_id, self.task.params)
            if step in SCHEMA_CHECKED_STEPS and self.loads_results:
                from meshbench.results import migrate

                migrate.require_current(self.results_engine())
            self._hold_machine(step)
            self._mark_started(task_id)
            injected = os.environ.get(INJECT_FAILURE_ENV_VAR, "")
            # "TASK_ID" fails every try; "TASK_ID@N" only in attempt N of the DAG run.
            if injected in (task_id, f"{task_id}@{self.task.attempt}"):
                raise StepFailed(f"failure injected at {task_id} (${INJECT_FAILURE_ENV_VAR})")
            result = getattr(self, f"_{step}")(iteration) or {}
        except StepSkipped as exc:
            # Recorded so that a skip of Airflow's own (a run marked failed) stands out.
            self.store.write_json(
                self._skip_file(task_id), {"task_id": task_id, "reason": str(exc), "at": now_iso()}
            )
            raise
        except (StepRescheduled, TooFewPositives, RunStoppedFromOutside):
            raise
        except Exception as exc:
            self.store.write_json(
                self._failure_file(task_id),
                {
                    "task_id": task_id,
                    "reason": reason_of(exc),
                    "try_number": self.task.try_number,
                    "at": now_iso(),
                },
            )
            log.error("%s failed: %s", task_id, reason_of(exc))
            raise
        finally:
            if step in ("delete_clusters", "load_results") and self._holds_machine():
                lease.release(self.lease_owner)
        self.store.write_json(
            self._step_file(task_id),
            {
                "task_id": task_id,
                "started_at": started_at,
                "finished_at": now_iso(),
                "try_number": self.task.try_number,
                "result": result,
            },
        )
        return result

    # ------------------------------------------------------------ machine lease

    @property
    def lease_owner(self) -> str:
        return f"{self.task.dag_id}:{self.task.run_id}:{self.task.attempt}"

    def _holds_machine(self) -> bool:
        return self.backend.holds_machine

    def _lease_stale_after(self) -> float:
        load = self.ctx.load
        return max(900.0, 3 * max(load.duration, load.effective_warmup_duration) + 600.0)

    def _hold_machine(self, step: str) -> None:
        """Local runs take the machine at create_clusters and renew it at every step."""
        if not self._holds_machine():
            return
        if step != "create_clusters":
            teardown = step in TEARDOWN_STEPS
            if lease.renew(self.lease_owner, quiet=teardown) or teardown:
                return
            holder = lease.current()
            if holder is not None:
                # A paused (or stalled) run lost the machine; another run reaped what it left.
                raise StepFailed(
                    f"this run no longer holds the machine: {holder.owner} took it over after "
                    "this run went silent (paused, or its tasks stopped); what this run had "
                    "started was reaped, so its remaining steps cannot measure"
                )
            return
        taken, holder = lease.acquire(
            self.lease_owner,
            self.ctx.resource_prefix,
            self._lease_stale_after(),
            single_process=self.backend.owned_by_this_process,
        )
        if not taken:
            raise StepRescheduled(
                f"another local run holds this machine: {holder.owner} "
                f"(renewed {holder.age():.0f} s ago)"
            )
        # A killed run's lease goes stale only after a while; what it left is removed as
        # soon as its owning process is gone.
        self.backend.reclaim_machine(holder.prefix if holder is not None else None)

    def _guard(self, step: str, iteration: int | None) -> None:
        if iteration is not None and iteration > self.ctx.load.iterations:
            raise StepSkipped(
                f"iteration {iteration} is not planned (iterations={self.ctx.load.iterations})"
            )
        if step == "install_mesh" and not self._step_file("prepare_pair").exists():
            raise StepSkipped("the cluster pair was not prepared; see create_clusters")
        if step == "uninstall_mesh" and not self._started(
            iteration_task_id(iteration or 0, "install_mesh")
        ):
            raise StepSkipped("the mesh was never installed in this iteration")
        if step == "delete_clusters" and not self._started("create_clusters"):
            raise StepSkipped("no clusters were created")

    # ------------------------------------------------------------------- steps

    def _create_clusters(self, _: int | None) -> dict[str, Any]:
        return self.backend.create_clusters(self.ctx)

    def _prepare_pair(self, _: int | None) -> dict[str, Any]:
        return self.backend.prepare_pair(self.ctx)

    def _install_mesh(self, iteration: int) -> dict[str, Any]:
        return self.backend.install_mesh(self.ctx, iteration)

    def _wait_mesh_ready(self, iteration: int) -> dict[str, Any]:
        return self.backend.wait_mesh_ready(self.ctx, iteration)

    def _deploy_workloads(self, iteration: int) -> dict[str, Any]:
        return self.backend.deploy_workloads(self.ctx, iteration)

    def _wait_workloads_ready(self, iteration: int) -> dict[str, Any]:
        return self.backend.wait_workloads_ready(self.ctx, iteration)

    def _uninstall_mesh(self, iteration: int) -> dict[str, Any]:
        self.backend.uninstall_mesh(self.ctx, iteration)
        return {}

    def _delete_clusters(self, _: int | None) -> dict[str, Any]:
        # Cloud backends report what the pair cost (cluster_minutes, estimated cost).
        return self.backend.delete_clusters(self.ctx) or {}

    def _load_one(
        self, iteration: int, phase: str, run_index: int, step: int = 1
    ) -> dict[str, Any]:
        """Run the load generator once at load step ``step`` unless an earlier try already
        kept this run."""
        path = self._artifact(iteration, phase, run_index, step)
        ctx = self.ctx.at_step(step)
        if path.exists():
            log.info("adopting %s from an earlier try", path)
            document = self.store.read_json(path)
        else:
            began = time.monotonic()
            if self.observer.before_load_run is not None:
                self.observer.before_load_run(iteration, phase, run_index)
            with exclusive_benchmark(f"{self.task.dag_id} {self.task.task_id}"):
                outcome = self.backend.run_load(ctx, iteration, phase, run_index)
            if self._holds_machine():
                lease.renew(self.lease_owner)
            document = {
                "iteration": iteration,
                "phase": phase,
                "run_index": run_index,
                "step": step_record(ctx),
                "task_id": self.task.task_id,
                "try_number": self.task.try_number,
                "written_at": now_iso(),
                "wall_seconds": round(time.monotonic() - began, 3),
                "result": outcome.raw_result,
                "failure": outcome.failure,
                "context": outcome.context,
                "resource_samples": outcome.resource_samples,
            }
            self.store.write_json(path, document)
            if self.observer.after_load_run is not None:
                self.observer.after_load_run(
                    MeasurementRecord(
                        iteration=iteration,
                        phase=phase,
                        run_index=run_index,
                        step=step,
                        outcome=outcome,
                        artifact_uri=str(path),
                        source=str(path),
                    )
                )
        return {
            "phase": phase,
            "step": step,
            "run_index": run_index,
            "failure": document["failure"],
            "artifact": str(path),
        }

    def _warmup(self, iteration: int) -> dict[str, Any]:
        if not self.ctx.load.warmup:
            return {"warmup": "disabled in the load profile"}
        return self._load_one(iteration, PHASE_WARMUP, 1)

    def paired_baseline_enabled(self) -> bool:
        return self.config.paired_baseline(self.environment, self.mesh)

    def _measure(self, iteration: int) -> dict[str, Any]:
        # With a paired baseline the two paths alternate (B1 M1 B2 M2 ...): on small
        # machines background activity drifts, and interleaving exposes both to the same.
        # A ladder's steps run in order on the same install, each with its own runs.
        runs = []
        for step in range(1, len(self.ctx.load.ladder()) + 1):
            for run_index in range(1, self.ctx.load.runs_per_iteration + 1):
                if self.paired_baseline_enabled():
                    runs.append(self._load_one(iteration, PHASE_PAIRED_BASELINE, run_index, step))
                runs.append(self._load_one(iteration, PHASE_MEASURED, run_index, step))
        return {"runs": runs}

    def results_engine(self) -> Engine:
        if self.engine is None:
            from meshbench.results.db import get_engine

            self.engine = get_engine()
        return self.engine

    def _load_results(self, _: int | None) -> dict[str, Any]:
        from meshbench.pipeline.collect import collect_and_load

        return collect_and_load(self, self.results_engine())

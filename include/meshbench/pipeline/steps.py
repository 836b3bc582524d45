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
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy import Engine

from meshbench.backend import (
    PHASE_MEASURED,
    PHASE_PAIRED_BASELINE,
    PHASE_WARMUP,
    Backend,
    MeasurementOutcome,
    RunContext,
    StepFailed,
)
from meshbench.benchlock import exclusive_benchmark
from meshbench.config import BenchmarkConfig, LoadProfile, parse_duration
from meshbench.names import iteration_group, iteration_task_id
from meshbench.pipeline import lease
from meshbench.pipeline.artifacts import ArtifactStore, now_iso
from meshbench.pipeline.graph import ITERATION_STEPS, TEARDOWN_STEPS
from meshbench.pipeline.params import TriggerParamsInvalid, check_trigger
from meshbench.registry import get_backend
from meshbench.results.loader import (
    MeasurementRecord,
    judge_run,
    load_run,
)
from meshbench.results.models import Run

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
    planned = merged["iterations"] * merged["runs_per_iteration"]
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


def _reason(exc: BaseException) -> str:
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

    def _artifact(self, iteration: int, phase: str, run_index: int):
        return self.run_dir / iteration_group(iteration) / f"{phase}-{run_index:02d}.json"

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
                    "reason": _reason(exc),
                    "try_number": self.task.try_number,
                    "at": now_iso(),
                },
            )
            log.error("%s failed: %s", task_id, _reason(exc))
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

    def _load_one(self, iteration: int, phase: str, run_index: int) -> dict[str, Any]:
        """Run the load generator once unless an earlier try already kept this run."""
        path = self._artifact(iteration, phase, run_index)
        if path.exists():
            log.info("adopting %s from an earlier try", path)
            document = self.store.read_json(path)
        else:
            began = time.monotonic()
            if self.observer.before_load_run is not None:
                self.observer.before_load_run(iteration, phase, run_index)
            with exclusive_benchmark(f"{self.task.dag_id} {self.task.task_id}"):
                outcome = self.backend.run_load(self.ctx, iteration, phase, run_index)
            if self._holds_machine():
                lease.renew(self.lease_owner)
            document = {
                "iteration": iteration,
                "phase": phase,
                "run_index": run_index,
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
                        outcome=outcome,
                        artifact_uri=str(path),
                        source=str(path),
                    )
                )
        return {
            "phase": phase,
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
        runs = []
        for run_index in range(1, self.ctx.load.runs_per_iteration + 1):
            if self.paired_baseline_enabled():
                runs.append(self._load_one(iteration, PHASE_PAIRED_BASELINE, run_index))
            runs.append(self._load_one(iteration, PHASE_MEASURED, run_index))
        return {"runs": runs}

    def results_engine(self) -> Engine:
        if self.engine is None:
            from meshbench.results.db import get_engine

            self.engine = get_engine()
        return self.engine

    def _load_results(self, _: int | None) -> dict[str, Any]:
        return collect_and_load(self, self.results_engine())


# ------------------------------------------------------------------- collection


class AttemptFolders:
    """The artifact folders of every attempt of one DAG run, newest first.

    Clearing any task of a finished DAG run makes a new attempt (Airflow's clear number),
    with a folder of its own. A clear of ``load_results`` alone runs nothing but the load,
    so its folder holds no results: the load must read the attempts that measured. Each
    iteration is read from the newest attempt in which one of its tasks ran, so a
    re-measured iteration replaces the older one and an untouched one is kept.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.store = pipeline.store
        task = pipeline.task
        self.folders = [
            (attempt, pipeline.store.run_dir(task.dag_id, task.run_id, attempt))
            for attempt in range(task.attempt, 0, -1)
        ]
        self.folders = [
            (attempt, folder)
            for attempt, folder in self.folders
            if attempt == task.attempt or folder.exists()
        ]

    @staticmethod
    def _names(folder, kind: str) -> set[str]:
        where = folder / kind
        if not where.exists():
            return set()
        return {path.name.removesuffix(".json") for path in where.iterdir()}

    def ran_in(self, folder, task_ids: list[str]) -> bool:
        touched = self._names(folder, "started") | self._names(folder, "failures")
        return any(task_id in touched for task_id in task_ids)

    def measuring(self) -> tuple[int, Any]:
        """The newest attempt in which anything but the load ran (else the current one)."""
        for attempt, folder in self.folders:
            touched = self._names(folder, "started") | self._names(folder, "failures")
            if touched - {"load_results"}:
                return attempt, folder
        return self.folders[0]

    def for_tasks(self, task_ids: list[str]):
        """The newest folder in which one of ``task_ids`` ran, if any did."""
        for _, folder in self.folders:
            if self.ran_in(folder, task_ids):
                return folder
        return None

    def failures(self, folder) -> dict[str, str]:
        found = {}
        for name in self._names(folder, "failures"):
            document = self.store.read_json(folder / "failures" / f"{name}.json")
            found[document["task_id"]] = document["reason"]
        return found

    def all_failures(self) -> dict[str, str]:
        """Each task's failure from the newest attempt it ran in, the load's own left out."""
        found: dict[str, str] = {}
        decided: set[str] = set()
        for _, folder in self.folders:
            ran = self._names(folder, "started") | self._names(folder, "failures")
            for task_id, reason in self.failures(folder).items():
                if task_id not in decided and task_id != "load_results":
                    found[task_id] = reason
            decided |= ran
        return found

    def recorded(self, kind: str) -> set[str]:
        """Tasks with a record of ``kind`` (see ``task_record``) in any attempt."""
        return set().union(*(self._names(folder, kind) for _, folder in self.folders))

    def step(self, task_id: str) -> dict[str, Any] | None:
        for _, folder in self.folders:
            path = folder / "steps" / f"{task_id}.json"
            if path.exists():
                return self.store.read_json(path)
        return None


def _first_failure(failures: dict[str, str], task_ids: list[str]) -> tuple[str, str] | None:
    for task_id in task_ids:
        if task_id in failures:
            return task_id, failures[task_id]
    return None


def _cluster_minutes(
    pipeline: Pipeline,
    info: dict[str, Any],
    created: dict[str, Any] | None,
    deleted: dict[str, Any] | None,
) -> float | None:
    reported = (deleted or {}).get("result") or {}
    if reported.get("cluster_minutes") is not None:
        return float(reported["cluster_minutes"])
    if "cluster_minutes" in info:
        return float(info["cluster_minutes"])
    if not pipeline.backend.counts_cluster_minutes:
        return None
    if not created:
        return None
    start = datetime.fromisoformat(created["started_at"])
    end = datetime.fromisoformat(deleted["finished_at"]) if deleted else datetime.now(UTC)
    return 2 * (end - start).total_seconds() / 60.0


def _run_order(document: dict[str, Any]) -> tuple[int, int, int]:
    """Where a kept run stood in its iteration: the warm-up, then B1 M1 B2 M2 ..."""
    phase = document["phase"]
    return (phase != PHASE_WARMUP, document["run_index"], phase == PHASE_MEASURED)


def collect_records(pipeline: Pipeline) -> list[MeasurementRecord]:
    """Every measurement of the run: kept artifacts, and negatives for runs never made.

    Read from every attempt of the DAG run (see AttemptFolders), each measured run once.
    """
    folders = AttemptFolders(pipeline)
    pair_folder = folders.for_tasks(["create_clusters", "prepare_pair"])
    pair_failure = (
        _first_failure(folders.failures(pair_folder), ["create_clusters", "prepare_pair"])
        if pair_folder is not None
        else None
    )
    load = pipeline.ctx.load
    records: list[MeasurementRecord] = []
    for iteration in range(1, load.iterations + 1):
        group_ids = [iteration_task_id(iteration, step) for step in ITERATION_STEPS]
        source = folders.for_tasks(group_ids)
        failure = pair_failure
        kept: set[tuple[str, int]] = set()
        if source is not None:
            failure = _first_failure(folders.failures(source), group_ids) or pair_failure
            folder = source / iteration_group(iteration)
            if folder.exists():
                documents = [(path, pipeline.store.read_json(path)) for path in folder.iterdir()]
                for path, document in sorted(documents, key=lambda item: _run_order(item[1])):
                    kept.add((document["phase"], document["run_index"]))
                    records.append(
                        MeasurementRecord(
                            iteration=iteration,
                            phase=document["phase"],
                            run_index=document["run_index"],
                            outcome=MeasurementOutcome(
                                raw_result=document.get("result"),
                                failure=document.get("failure"),
                                context=document.get("context") or {},
                                resource_samples=document.get("resource_samples") or [],
                            ),
                            artifact_uri=str(path),
                            source=str(path),
                        )
                    )
        for run_index in range(1, load.runs_per_iteration + 1):
            if (PHASE_MEASURED, run_index) in kept:
                continue
            failed_task, reason = failure or (
                iteration_task_id(iteration, "measure"),
                "the measured run was never made (its task did not run to this point)",
            )
            records.append(
                MeasurementRecord(
                    iteration=iteration,
                    phase=PHASE_MEASURED,
                    run_index=run_index,
                    outcome=MeasurementOutcome(raw_result=None, failure=f"{failed_task}: {reason}"),
                    failed_task=failed_task,
                )
            )
    return records


def record_stopped(config: BenchmarkConfig, task: TaskRun) -> None:
    """Mark ``task`` as killed from outside; its own failure record may follow it."""
    store = ArtifactStore(config)
    run_dir = store.run_dir(task.dag_id, task.run_id, task.attempt)
    store.write_json(
        task_record(run_dir, "stopped", task.task_id),
        {"task_id": task.task_id, "try_number": task.try_number, "at": now_iso()},
    )


def stopped_from_outside(pipeline: Pipeline, folders: AttemptFolders) -> dict[str, str]:
    """The run's tasks that Airflow failed or skipped without the pipeline doing so.

    Marking a DAG run failed fails its running task and skips the pending ones, then lets
    the teardowns (the load included) run: without this check the run would end green.
    The running task may still finish its step before Airflow kills it, or record its
    own failure as it dies (``on_kill`` marks that), so only the pipeline's own failure
    and skip records clear a task.
    """
    if pipeline.task.task_states is None:
        return {}
    tasks = pipeline.task.task_states()
    failed_by_pipeline = folders.recorded("failures") - folders.recorded("stopped")
    skipped_by_pipeline = folders.recorded("skipped")

    def skip_passed_on(task: AirflowTask) -> bool:
        # The scheduler skips a task whose upstream was skipped (fewer iterations asked
        # for): never the first skip of a run marked failed, whose upstream had ended.
        return any(tasks[name].state == "skipped" for name in task.upstream if name in tasks)

    return {
        task_id: task.state
        for task_id, task in sorted(tasks.items())
        if not task.teardown
        and (
            (task.state == "failed" and task_id not in failed_by_pipeline)
            or (
                task.state == "skipped"
                and task_id not in skipped_by_pipeline
                and not skip_passed_on(task)
            )
        )
    }


def collect_and_load(pipeline: Pipeline, engine: Engine) -> dict[str, Any]:
    """Load the run into Postgres; TooFewPositives when below ``min_positive``."""
    ctx = pipeline.ctx
    task = pipeline.task
    records = collect_records(pipeline)
    folders = AttemptFolders(pipeline)
    measuring_attempt, measuring_folder = folders.measuring()
    created = folders.step("create_clusters")
    deleted = folders.step("delete_clusters")
    try:
        info = pipeline.backend.run_info(ctx)
    except Exception as exc:
        info = {"run_info_error": _reason(exc)}
    failures = folders.all_failures()
    stopped = stopped_from_outside(pipeline, folders)
    settings = {
        "backend": info,
        "clusters": (created or {}).get("result", {}),
        "load_profile": ctx.load.model_dump(),
        "load_profile_name": pipeline.load_profile_name,
        "paired_baseline": pipeline.paired_baseline_enabled(),
        "params": task.params,
        "failures": failures,
        "teardown": (deleted or {}).get("result") or {},
        "artifacts": str(measuring_folder),
        "loaded_by_attempt": task.attempt,
        "stopped_from_outside": stopped,
    }
    run = Run(
        # The attempt that measured: a clear of load_results alone loads into the same run.
        source_key=f"{task.origin}:{task.dag_id}:{task.run_id}:{measuring_attempt}",
        environment=pipeline.environment,
        mesh=pipeline.mesh,
        mesh_version=ctx.mesh_version,
        version_profile=pipeline.config.version_profile_name_for(pipeline.environment),
        benchmark_date=task.benchmark_date,
        dag_id=task.dag_id,
        dag_run_id=task.run_id,
        load_profile=pipeline.load_profile_name,
        qps=ctx.load.qps,
        connections=ctx.load.connections,
        duration_s=ctx.load.duration,
        iterations=ctx.load.iterations,
        runs_per_iteration=ctx.load.runs_per_iteration,
        started_at=datetime.fromisoformat(created["started_at"]) if created else datetime.now(UTC),
        finished_at=datetime.now(UTC),
        settings=settings,
        state="running",
        purpose=task.purpose,
        cluster_minutes=_cluster_minutes(pipeline, info, created, deleted),
    )
    report = load_run(engine, run, records, duration_tolerance=ctx.load.duration_tolerance)
    verdict = judge_run(engine, report.run_id, ctx.load.min_positive, bool(stopped))
    measured_positive = verdict.positive_measured
    summary = {
        "run_id": report.run_id,
        "attempt": report.attempt,
        "purpose": task.purpose,
        "environment": pipeline.environment,
        "mesh": pipeline.mesh,
        "benchmark_date": task.benchmark_date.isoformat(),
        "positive_measured": measured_positive,
        "min_positive": ctx.load.min_positive,
        "negatives": report.negatives,
    }
    if stopped:
        raise RunStoppedFromOutside(
            f"the run was stopped from outside (marked failed by hand, or a worker was lost): "
            f"Airflow ended {', '.join(f'{t} ({s})' for t, s in stopped.items())} without the "
            f"pipeline; the {measured_positive} positive measured run(s) it made are loaded "
            "and the run is recorded as failed"
        )
    if verdict.state != "success":
        raise TooFewPositives(
            f"{measured_positive} positive measured run(s), fewer than min_positive "
            f"{ctx.load.min_positive}; negatives: " + "; ".join(report.negatives)[:1500]
        )
    return summary

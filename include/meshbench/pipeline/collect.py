"""What the load step reads back: every attempt's artifacts and records, the
measurements (a negative for each run never made), tasks Airflow ended without the
pipeline, and the run as it is stored in Postgres."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from meshbench.backend import PHASE_MEASURED, PHASE_WARMUP, MeasurementOutcome
from meshbench.config import BenchmarkConfig
from meshbench.names import iteration_group, iteration_task_id
from meshbench.pipeline.artifacts import ArtifactStore, now_iso
from meshbench.pipeline.graph import ITERATION_STEPS
from meshbench.pipeline.steps import (
    AirflowTask,
    RunStoppedFromOutside,
    TaskRun,
    TooFewPositives,
    reason_of,
    step_record,
    task_record,
)
from meshbench.results.loader import MeasurementRecord, judge_run, load_run
from meshbench.results.models import Run

if TYPE_CHECKING:
    from meshbench.pipeline.steps import Pipeline


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


def _step_of(document: dict[str, Any]) -> int:
    # Artifacts written before ladders existed have no step: they were step 1.
    return int((document.get("step") or {}).get("index", 1))


def _with_step(document: dict[str, Any]) -> dict[str, Any]:
    """The run's context with its load step, which the loader keys the measurement by."""
    context = dict(document.get("context") or {})
    if document.get("step"):
        context["step"] = document["step"]
    return context


def _run_order(document: dict[str, Any]) -> tuple[int, int, int, int]:
    """Where a kept run stood in its iteration: the warm-up, then per load step
    B1 M1 B2 M2 ..."""
    phase = document["phase"]
    return (
        phase != PHASE_WARMUP,
        _step_of(document),
        document["run_index"],
        phase == PHASE_MEASURED,
    )


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
        kept: set[tuple[str, int, int]] = set()
        if source is not None:
            failure = _first_failure(folders.failures(source), group_ids) or pair_failure
            folder = source / iteration_group(iteration)
            if folder.exists():
                documents = [(path, pipeline.store.read_json(path)) for path in folder.iterdir()]
                for path, document in sorted(documents, key=lambda item: _run_order(item[1])):
                    kept.add((document["phase"], _step_of(document), document["run_index"]))
                    records.append(
                        MeasurementRecord(
                            iteration=iteration,
                            phase=document["phase"],
                            run_index=document["run_index"],
                            step=_step_of(document),
                            outcome=MeasurementOutcome(
                                raw_result=document.get("result"),
                                failure=document.get("failure"),
                                context=_with_step(document),
                                resource_samples=document.get("resource_samples") or [],
                            ),
                            artifact_uri=str(path),
                            source=str(path),
                        )
                    )
        missing = [
            (step, run_index)
            for step in range(1, len(load.ladder()) + 1)
            for run_index in range(1, load.runs_per_iteration + 1)
            if (PHASE_MEASURED, step, run_index) not in kept
        ]
        for step, run_index in missing:
            failed_task, reason = failure or (
                iteration_task_id(iteration, "measure"),
                "the measured run was never made (its task did not run to this point)",
            )
            records.append(
                MeasurementRecord(
                    iteration=iteration,
                    phase=PHASE_MEASURED,
                    run_index=run_index,
                    step=step,
                    outcome=MeasurementOutcome(
                        raw_result=None,
                        failure=f"{failed_task}: {reason}",
                        context={"step": step_record(pipeline.ctx.at_step(step))},
                    ),
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
        info = {"run_info_error": reason_of(exc)}
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

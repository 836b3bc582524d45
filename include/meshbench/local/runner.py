"""A whole local benchmark in one process, in the DAG's task order: what ``meshbench local
run``, the fidelity benchmark and the end-to-end tests use. Airflow runs the same
``Backend`` methods one per task instead."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from meshbench.backend import (
    PHASE_MEASURED,
    PHASE_PAIRED_BASELINE,
    PHASE_WARMUP,
    MeasurementOutcome,
    RunContext,
)
from meshbench.benchlock import exclusive_benchmark
from meshbench.local.backend import LocalBackend
from meshbench.local.processes import ProcessRecord
from meshbench.local.reaper import reap_orphans
from meshbench.local.topology import Topology
from meshbench.results.loader import MeasurementRecord
from meshbench.results.models import Run

log = logging.getLogger(__name__)

ITERATION_STEPS = ("install_mesh", "wait_mesh_ready", "deploy_workloads", "wait_workloads_ready")


@dataclass
class LocalRun:
    ctx: RunContext
    started_at: datetime
    measurements: list[MeasurementRecord] = field(default_factory=list)
    step_results: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    teardown_problems: list[str] = field(default_factory=list)
    started_processes: list[ProcessRecord] = field(default_factory=list)
    topology: Topology | None = None
    info: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None

    @property
    def measured(self) -> list[MeasurementRecord]:
        return [record for record in self.measurements if record.phase == PHASE_MEASURED]

    def run_record(self, load_profile: str = "cli", source: str = "cli") -> Run:
        """The run as the results loader stores it."""
        ctx = self.ctx
        return Run(
            source_key=f"{source}:{ctx.dag_id}:{ctx.run_id}",
            environment="local",
            mesh=ctx.mesh,
            benchmark_date=self.started_at.astimezone(UTC).date(),
            qps=ctx.load.qps,
            connections=ctx.load.connections,
            duration_s=ctx.load.duration,
            iterations=ctx.load.iterations,
            runs_per_iteration=ctx.load.runs_per_iteration,
            started_at=self.started_at,
            finished_at=self.finished_at,
            dag_id=ctx.dag_id,
            dag_run_id=ctx.run_id,
            load_profile=load_profile,
            settings={
                "backend": self.info,
                "load_profile": ctx.load.model_dump(),
                "failures": self.failures,
                "teardown_problems": self.teardown_problems,
                "source": source,
            },
            # Judged once loaded, by the rule every run shares (``loader.judge_run``).
            state="running",
        )


def run_local(
    backend: LocalBackend,
    ctx: RunContext,
    paired_baseline: bool | None = None,
    on_measurement: Callable[[MeasurementRecord], None] | None = None,
    during_run: Callable[[LocalRun, int, str, int], None] | None = None,
) -> LocalRun:
    """Every task in order; teardown always runs. ``during_run`` is called just before each
    load-generator run (tests use it to inject faults)."""
    if paired_baseline is None:
        paired_baseline = backend.config.paired_baseline(backend.environment, backend.mesh)
    # What a killed earlier run left would run beside this one's measurements.
    reap_orphans(backend.state_root)
    backend.owned_by_this_process = True
    run = LocalRun(ctx=ctx, started_at=datetime.now(UTC))
    load = ctx.load

    def record(
        iteration: int,
        phase: str,
        run_index: int,
        outcome: MeasurementOutcome,
        failed_task: str | None = None,
    ) -> None:
        measurement = MeasurementRecord(
            iteration=iteration,
            phase=phase,
            run_index=run_index,
            outcome=outcome,
            failed_task=failed_task,
            source=f"{ctx.resource_prefix}/{iteration}/{phase}",
        )
        run.measurements.append(measurement)
        if on_measurement is not None:
            on_measurement(measurement)

    def measure(iteration: int, phase: str, run_index: int) -> None:
        if during_run is not None:
            during_run(run, iteration, phase, run_index)
        # This run holds no machine lease: the machine-wide lock keeps its load-generator
        # runs from overlapping a DAG run's (or another checkout's) on this machine.
        with exclusive_benchmark(f"{ctx.dag_id} {ctx.run_id} {phase} {iteration}.{run_index}"):
            outcome = backend.run_load(ctx, iteration, phase, run_index)
        record(iteration, phase, run_index, outcome)

    pair_failure: tuple[str, str] | None = None
    try:
        for step in ("create_clusters", "prepare_pair"):
            try:
                run.step_results[step] = getattr(backend, step)(ctx)
            except Exception as exc:
                pair_failure = (step, _reason(exc))
                run.failures[step] = pair_failure[1]
                break
        state = backend.folder(ctx).read()
        run.topology = state.topology if state else None
        for iteration in range(1, load.iterations + 1):
            failure = pair_failure
            if failure is None:
                failure = _iteration(backend, ctx, run, iteration, measure, paired_baseline)
            if failure is not None:
                task, reason = failure
                done = {m.run_index for m in run.measured if m.iteration == iteration}
                for run_index in range(1, load.runs_per_iteration + 1):
                    if run_index not in done:
                        record(
                            iteration,
                            PHASE_MEASURED,
                            run_index,
                            MeasurementOutcome(raw_result=None, failure=f"{task}: {reason}"),
                            failed_task=task,
                        )
    finally:
        state = backend.folder(ctx).read()
        if state is not None:
            run.started_processes = list(state.history)
            run.topology = state.topology
        try:
            run.info = backend.run_info(ctx)
        except Exception as exc:  # the run info must not cost the teardown
            run.info = {"run_info_error": _reason(exc)}
        try:
            backend.delete_clusters(ctx)
        except Exception as exc:
            run.teardown_problems.append(f"delete_clusters: {_reason(exc)}")
        run.finished_at = datetime.now(UTC)
    return run


def _iteration(
    backend: LocalBackend,
    ctx: RunContext,
    run: LocalRun,
    iteration: int,
    measure: Callable[[int, str, int], None],
    paired_baseline: bool,
) -> tuple[str, str] | None:
    failure: tuple[str, str] | None = None
    began = time.monotonic()
    try:
        for step in ITERATION_STEPS:
            try:
                run.step_results[f"{iteration:02d}.{step}"] = getattr(backend, step)(ctx, iteration)
            except Exception as exc:
                failure = (step, _reason(exc))
                run.failures[f"iteration {iteration} {step}"] = failure[1]
                return failure
        if ctx.load.warmup:
            measure(iteration, PHASE_WARMUP, 1)
        # Paired baseline and mesh alternate (B1 M1 B2 M2 ...), like the DAG's measure task,
        # so both see the same background activity.
        for run_index in range(1, ctx.load.runs_per_iteration + 1):
            if paired_baseline:
                measure(iteration, PHASE_PAIRED_BASELINE, run_index)
            measure(iteration, PHASE_MEASURED, run_index)
    finally:
        try:
            backend.uninstall_mesh(ctx, iteration)
        except Exception as exc:
            run.teardown_problems.append(f"iteration {iteration} uninstall_mesh: {_reason(exc)}")
        log.info("iteration %s of %s took %.1f s", iteration, ctx.mesh, time.monotonic() - began)
    return failure


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__

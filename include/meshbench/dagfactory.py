"""Builds the benchmark DAGs from the configuration.

One DAG per enabled environment × mesh, ``meshbench_<environment>_<mesh>``:

    create_clusters (setup)
      -> prepare_pair
      -> iteration_01 … iteration_NN, strictly one after the other:
           install_mesh (setup) -> wait_mesh_ready -> deploy_workloads
           -> wait_workloads_ready -> warmup -> measure -> uninstall_mesh (teardown)
      -> delete_clusters (teardown of create_clusters)
      -> load_results (teardown of create_clusters too; outlet: the results asset)

Teardowns run whatever happened before them (trigger rule ``all_done``): a half-made
install or a half-created pair is removed too, and each tolerates what is already gone.
A failed iteration does not stop the next one; ``load_results`` turns it into negative
rows and fails the DAG run exactly when fewer than ``min_positive`` positive measured runs
were recorded, or when Airflow ended tasks the pipeline did not (a run marked failed by
hand still loads what it measured, then ends failed).

Importing this module, or building DAGs with it, opens no connection, database or
subprocess: task bodies import what they need when they run.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, Param, TaskGroup, TriggerRule

from meshbench.backend import RunContext
from meshbench.config import (
    VERSIONED_MESHES,
    BenchmarkConfig,
    LoadProfile,
    format_duration,
    load_config,
)
from meshbench.names import iteration_group
from meshbench.pipeline.graph import task_graph
from meshbench.pipeline.steps import AirflowTask

log = logging.getLogger(__name__)

RESULTS_ASSET = Asset(name="meshbench_results", uri="meshbench://results/postgres")
DAG_ID_PREFIX = "meshbench"
RUN_PURPOSE_ENV_VAR = "MESHBENCH_RUN_PURPOSE"
STEP_TIMEOUT = timedelta(hours=1)
MEASURE_TIMEOUT_MARGIN = timedelta(minutes=10)


def dag_id_for(environment: str, mesh: str) -> str:
    return f"{DAG_ID_PREFIX}_{environment}_{mesh}"


# --------------------------------------------------------------- task bodies


def _task_run(context: dict[str, Any]):
    from meshbench.pipeline.steps import TaskRun

    dag_run = context["dag_run"]
    ti = context["ti"]
    moment = dag_run.logical_date or dag_run.run_after or datetime.now(UTC)
    return TaskRun(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        task_id=ti.task_id,
        benchmark_date=moment.astimezone(UTC).date() if moment.tzinfo else moment.date(),
        attempt=(getattr(dag_run, "clear_number", 0) or 0) + 1,
        try_number=ti.try_number or 1,
        params=dict(context.get("params") or {}),
        purpose=run_purpose(str(getattr(dag_run, "run_type", "") or "")),
        task_states=lambda: _task_states(context),
    )


def _task_states(context: dict[str, Any]) -> dict[str, AirflowTask]:
    """Airflow's states of the DAG run's tasks, with each task's upstream and whether it is
    a teardown (teardowns are never ended by marking the run failed)."""
    dag_run = context["dag_run"]
    states = context["ti"].get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id])
    dag = context["dag"]
    return {
        task_id: AirflowTask(
            state=None if state is None else str(state),
            upstream=frozenset(dag.task_dict[task_id].upstream_task_ids),
            teardown=dag.task_dict[task_id].is_teardown,
        )
        for task_id, state in (states.get(dag_run.run_id) or {}).items()
        if task_id in dag.task_dict
    }


def run_purpose(run_type: str) -> str:
    """What the results call the DAG run: ``$MESHBENCH_RUN_PURPOSE`` (``meshbench demo``
    sets ``test``), else from Airflow's run type; the day's result comes from scheduled
    and backfill runs, so a short manual run never replaces it."""
    override = os.environ.get(RUN_PURPOSE_ENV_VAR)
    if override:
        return override
    value = run_type.rsplit(".", 1)[-1].lower()  # an enum member or its value
    return {"scheduled": "scheduled", "backfill": "backfill", "asset_triggered": "scheduled"}.get(
        value, "manual"
    )


def run_pipeline_step(
    environment: str, mesh: str, step: str, iteration: int | None = None, **context: Any
) -> dict[str, Any]:
    """The callable of every benchmark task."""
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSkipException,
    )

    from meshbench.pipeline.lease import RESCHEDULE_SECONDS
    from meshbench.pipeline.params import TriggerParamsInvalid
    from meshbench.pipeline.steps import (
        Pipeline,
        RunStoppedFromOutside,
        StepRescheduled,
        StepSkipped,
        TooFewPositives,
    )
    from meshbench.results.migrate import SchemaNotCurrent

    try:
        # Building the pipeline applies the trigger parameters: a bad one fails here.
        pipeline = Pipeline(load_config(), environment, mesh, _task_run(context))
        result = pipeline.run(step, iteration)
    except StepSkipped as exc:
        raise AirflowSkipException(str(exc)) from None
    except StepRescheduled as exc:
        # Rescheduling frees the pool slot for the run that holds the machine.
        log.info("%s; trying again in %s s", exc, RESCHEDULE_SECONDS)
        raise AirflowRescheduleException(
            datetime.now(UTC) + timedelta(seconds=RESCHEDULE_SECONDS)
        ) from None
    except (TooFewPositives, RunStoppedFromOutside, SchemaNotCurrent, TriggerParamsInvalid) as exc:
        # Retrying cannot add positive runs, migrate the database or mend the parameters.
        raise AirflowFailException(str(exc)) from None
    if step == "load_results":
        context["outlet_events"][RESULTS_ASSET].extra = {
            "environment": environment,
            "mesh": mesh,
            "benchmark_date": result["benchmark_date"],
            "run_id": result["run_id"],
        }
    return result


class BenchmarkStepOperator(PythonOperator):
    """A benchmark task that records it was killed from outside (a run marked failed, a
    worker shutting down), so that the load can tell such a failure from the step's own."""

    def execute(self, context: Any) -> Any:
        self._meshbench_context = context
        return super().execute(context)

    def on_kill(self) -> None:
        context = getattr(self, "_meshbench_context", None)
        if context is None:
            return
        try:
            from meshbench.pipeline.collect import record_stopped

            record_stopped(load_config(), _task_run(context))
        except Exception as exc:  # the kill must go on
            log.warning("could not record that %s was stopped: %s", self.task_id, exc)


# ------------------------------------------------------------------ documents


def _plan_markdown(config: BenchmarkConfig, environment: str, mesh: str) -> str:
    from meshbench.registry import get_backend

    try:
        ctx = RunContext(
            config=config,
            environment=environment,
            mesh=mesh,
            dag_id=dag_id_for(environment, mesh),
            run_id="plan",
            load=config.load_profile_for(environment),
            mesh_version=config.mesh_version(environment, mesh),
        )
        return get_backend(config, environment, mesh).plan(ctx).render_markdown()
    except Exception as exc:
        log.warning("no plan for %s × %s: %s", environment, mesh, exc)
        return f"_The plan could not be rendered: {exc}_"


def _load_text(load: LoadProfile) -> str:
    if not load.steps:
        return f"{load.qps} QPS requested, {load.connections} connection(s)"
    steps = ", ".join(
        f"{step.connections} connection(s) at "
        + ("max" if step.target_qps == 0 else f"{step.target_qps} QPS")
        for step in load.steps
    )
    return f"a ladder of {len(load.steps)} step(s) ({steps})"


def _doc_md(config: BenchmarkConfig, environment: str, mesh: str) -> str:
    load = config.load_profile_for(environment)
    env = config.environment(environment)
    version = config.mesh_version(environment, mesh)
    paired = config.paired_baseline(environment, mesh)
    lines = [
        f"# `{environment}` × `{mesh}`" + (f" {version}" if version else ""),
        "",
        f"Benchmarks the `{mesh}` mesh between the two clusters of the `{environment}` "
        f"environment and loads every result into the results database.",
        "",
        f"- Load profile `{config.load_profile_name_for(environment)}`: {_load_text(load)}, "
        f"{format_duration(load.duration)} per run, {load.runs_per_iteration} measured "
        f"run(s) per iteration{' and step' if load.steps else ''}, {load.iterations} "
        f"iteration(s), warm-up {'on' if load.warmup else 'off'}.",
        f"- The run fails when fewer than {load.min_positive} measured runs are positive; a "
        "failed iteration becomes negative rows with the failing task and reason.",
        "- Paired baseline: "
        + (
            "on: each measured run follows a no-mesh run between the same clusters."
            if paired
            else "off."
        ),
        f"- Pool `{env.pool.name}` ({env.pool.slots} slot(s)); benchmarks sharing machines "
        "never overlap.",
        "- Trigger parameters can shorten a run (iterations up to the planned number, "
        "duration, connections, QPS"
        + (", mesh version" if mesh in VERSIONED_MESHES else "")
        + ").",
        "",
        _plan_markdown(config, environment, mesh),
    ]
    return "\n".join(lines)


def trigger_params(config: BenchmarkConfig, environment: str, mesh: str) -> dict[str, Param]:
    load = config.load_profile_for(environment)
    params = {
        "iterations": Param(
            load.iterations,
            type="integer",
            minimum=1,
            maximum=load.iterations,
            description="Iterations to run (the DAG has this many iteration groups).",
        ),
        "runs_per_iteration": Param(
            load.runs_per_iteration,
            type="integer",
            minimum=1,
            maximum=100,
            description="Measured runs per iteration.",
        ),
        "duration": Param(
            format_duration(load.duration),
            type="string",
            # At least one non-zero digit: "0s" is refused by the form itself.
            pattern=r"^(?=.*[1-9])(\d+(\.\d+)?(ms|s|m|h))+$",
            description="Length of each measured run, more than zero, e.g. 60s or 1m30s.",
        ),
        "connections": Param(load.connections, type="integer", minimum=1, maximum=1024),
        "qps": Param(
            load.qps,
            type="integer",
            minimum=0,
            description="Requested QPS; 0 asks for as fast as possible.",
        ),
    }
    if load.steps:
        # Left empty, the ladder runs as configured; either one makes it a single step.
        params["connections"] = Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=1024,
            description="Empty runs the ladder; a number runs one step with this many connections.",
        )
        params["qps"] = Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Empty runs the ladder; a number runs one step at this rate "
            "(0: as fast as possible).",
        )
    if mesh in VERSIONED_MESHES:
        params["mesh_version"] = Param(
            config.mesh_version(environment, mesh),
            type="string",
            pattern=r"^v?\d+\.\d+\.\d+$",
            description="Mesh release to install.",
        )
    return params


# ---------------------------------------------------------------------- DAGs


def _measure_timeout(config: BenchmarkConfig, environment: str, mesh: str) -> timedelta:
    load = config.load_profile_for(environment)
    paths = 2 if config.paired_baseline(environment, mesh) else 1
    # Each run may also wait out its cost windows (Kubernetes: the idle window and fresh
    # kubelet counters before and after); an upper bound is all a timeout needs.
    cost = config.kubernetes.resource_cost
    per_run = load.duration * 1.5 + cost.idle_seconds + 2 * cost.fresh_stats_timeout
    seconds = len(load.ladder()) * load.runs_per_iteration * paths * per_run
    return timedelta(seconds=seconds) + MEASURE_TIMEOUT_MARGIN


def build_benchmark_dag(config: BenchmarkConfig, environment: str, mesh: str) -> DAG:
    env = config.environment(environment)
    load = config.load_profile_for(environment)
    default_args: dict[str, Any] = {
        "owner": config.defaults.owner,
        "retries": config.defaults.retries,
        "retry_delay": timedelta(seconds=config.defaults.retry_delay),
        "pool": env.pool.name,
        "execution_timeout": STEP_TIMEOUT,
    }
    queue = getattr(env, "queue", None)
    if queue:
        # The local environment's processes live on one machine: one worker serves it.
        default_args["queue"] = queue

    def step(task_id: str, name: str, iteration: int | None = None, **kwargs: Any):
        return BenchmarkStepOperator(
            task_id=task_id,
            python_callable=run_pipeline_step,
            op_kwargs={
                "environment": environment,
                "mesh": mesh,
                "step": name,
                "iteration": iteration,
            },
            **kwargs,
        )

    with DAG(
        dag_id=dag_id_for(environment, mesh),
        description=f"Benchmark {mesh} in the {environment} environment",
        doc_md=_doc_md(config, environment, mesh),
        schedule=config.schedule_for(environment),
        start_date=datetime(2023, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=env.paused_on_creation,
        tags=["meshbench", "benchmark", f"env:{environment}", f"mesh:{mesh}"],
        default_args=default_args,
        params=trigger_params(config, environment, mesh),
        render_template_as_native_obj=False,
    ) as dag:
        operators: dict[str, Any] = {}
        groups: dict[int, TaskGroup] = {}
        for spec in task_graph(load.iterations):
            extra: dict[str, Any] = {}
            if spec.iteration is not None:
                if spec.iteration not in groups:
                    groups[spec.iteration] = TaskGroup(group_id=iteration_group(spec.iteration))
                    groups[
                        spec.iteration
                    ].doc_md = f"Iteration {spec.iteration}: install, prove ready, measure, remove."
                extra["task_group"] = groups[spec.iteration]
            if spec.step in ("measure", "warmup"):
                extra["execution_timeout"] = _measure_timeout(config, environment, mesh)
            if spec.step == "load_results":
                extra |= {"outlets": [RESULTS_ASSET], "retries": 1}
            name = spec.step if spec.iteration is not None else spec.task_id
            operator = step(name, spec.step, spec.iteration, **extra)
            operators[spec.task_id] = operator
            for upstream in spec.upstream:
                operators[upstream] >> operator
            if spec.setup is not None:
                # on_failure_fail_dagrun keeps Airflow from treating each `measure` as a
                # leaf (its only downstream would be an ignorable teardown), and lets
                # marking the run failed skip pending tasks while teardowns still run: the
                # run's state is decided by load_results alone, by the min_positive rule.
                operator.as_teardown(setups=operators[spec.setup], on_failure_fail_dagrun=True)
            if spec.runs_after_failures:
                operator.trigger_rule = TriggerRule.ALL_DONE
    return dag


def build_benchmark_dags(config: BenchmarkConfig | None = None) -> dict[str, DAG]:
    config = config or load_config()
    return {
        dag_id_for(environment, mesh): build_benchmark_dag(config, environment, mesh)
        for environment, mesh in config.matrix
    }

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import text

from meshbench.config import LoadProfile
from meshbench.dagfactory import build_benchmark_dag
from meshbench.pipeline.collect import record_stopped
from meshbench.pipeline.graph import ITERATION_STEPS
from meshbench.pipeline.steps import (
    INJECT_FAILURE_ENV_VAR,
    AirflowTask,
    Pipeline,
    RunStoppedFromOutside,
    StepSkipped,
    TaskRun,
    TooFewPositives,
    effective_load,
    iteration_task_id,
)
from tests.pipeline.replay_backend import ReplayBackend

pytestmark = pytest.mark.postgres


def task_run(task_id: str, **fields) -> TaskRun:
    """A task of the test DAG run ``manual__1`` of meshbench_local_envoy-mtls."""
    return TaskRun(
        dag_id="meshbench_local_envoy-mtls",
        run_id="manual__1",
        task_id=task_id,
        benchmark_date=date(2026, 1, 2),
        **fields,
    )


def dag_shape(config) -> dict[str, tuple[frozenset[str], bool]]:
    """Each task of the local envoy-mtls DAG: its upstream and whether it is a teardown."""
    dag = build_benchmark_dag(config, "local", "envoy-mtls")
    return {
        task_id: (frozenset(task.upstream_task_ids), task.is_teardown)
        for task_id, task in dag.task_dict.items()
    }


def airflow_states(config, outcomes: dict[str, str]) -> dict[str, AirflowTask]:
    """What Airflow would report for the run's tasks, placed in the real DAG."""
    shape = dag_shape(config)
    return {t: AirflowTask(s, *shape[t]) for t, s in outcomes.items()}


def drive(
    config,
    backend,
    engine,
    monkeypatch,
    run_id="manual__1",
    attempt=1,
    purpose="manual",
    params=None,
):
    """Run the steps in DAG order, the way Airflow's trigger rules would."""
    monkeypatch.setattr("meshbench.results.db.get_engine", lambda: engine)
    outcomes = {}

    def step(task_id, name, iteration=None):
        task = TaskRun(
            dag_id="meshbench_local_envoy-mtls",
            run_id=run_id,
            task_id=task_id,
            benchmark_date=date(2026, 1, 2),
            attempt=attempt,
            purpose=purpose,
            params=params or {},
            # The load checks Airflow's states: the pipeline's own skips must not count.
            task_states=lambda: airflow_states(config, outcomes),
        )
        return Pipeline(config, "local", "envoy-mtls", task, backend=backend).run(name, iteration)

    def attempt_step(task_id, name, iteration=None, upstream="success"):
        # All-success tasks: the scheduler passes a skip on and fails below a failure.
        if upstream == "skipped":
            outcomes[task_id] = "skipped"
            return outcomes[task_id]
        if upstream != "success":
            outcomes[task_id] = "upstream_failed"
            return outcomes[task_id]
        try:
            step(task_id, name, iteration)
            outcomes[task_id] = "success"
        except StepSkipped:
            outcomes[task_id] = "skipped"
        except TooFewPositives:
            outcomes[task_id] = "failed"
            raise
        except Exception:
            outcomes[task_id] = "failed"
        return outcomes[task_id]

    created = attempt_step("create_clusters", "create_clusters")
    attempt_step("prepare_pair", "prepare_pair", upstream=created)
    for iteration in (1, 2):
        state = "success"
        for name in ITERATION_STEPS[:-1]:
            state = attempt_step(iteration_task_id(iteration, name), name, iteration, state)
        attempt_step(iteration_task_id(iteration, "uninstall_mesh"), "uninstall_mesh", iteration)
    attempt_step("delete_clusters", "delete_clusters")
    try:
        attempt_step("load_results", "load_results")
    except TooFewPositives as exc:
        return outcomes, exc
    return outcomes, None


def measurements(engine):
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT iteration, phase, run_index, positive, failed_task, reason "
                "FROM measurement ORDER BY iteration, phase, run_index"
            )
        ).all()


def test_full_run_keeps_every_result_and_interleaves_paired_baseline(
    config, clean_results, monkeypatch
):
    backend = ReplayBackend(config)
    outcomes, failure = drive(config, backend, clean_results, monkeypatch)
    assert failure is None and outcomes["load_results"] == "success"
    rows = measurements(clean_results)
    measured = [r for r in rows if r.phase == "measured"]
    assert len(measured) == 4 and all(r.positive for r in measured)
    assert {r.phase for r in rows} == {"warmup", "measured", "paired-baseline"}
    loads = [c for c in backend.calls if c.startswith("run_load:1:")]
    assert loads == [
        "run_load:1:warmup:1",
        "run_load:1:paired-baseline:1",
        "run_load:1:measured:1",
        "run_load:1:paired-baseline:2",
        "run_load:1:measured:2",
    ]
    with clean_results.connect() as connection:
        state, attempt = connection.execute(text("SELECT state, attempt FROM run")).one()
    assert (state, attempt) == ("success", 1)


def test_failed_install_makes_its_iteration_negative_and_the_next_runs(
    config, clean_results, monkeypatch
):
    monkeypatch.setenv(INJECT_FAILURE_ENV_VAR, "iteration_01.install_mesh")
    backend = ReplayBackend(config)
    config2 = config.model_copy(
        update={
            "load_profiles": {
                **config.load_profiles,
                "study": config.load_profiles["study"].model_copy(update={"min_positive": 2}),
            }
        }
    )
    outcomes, failure = drive(config2, backend, clean_results, monkeypatch)
    assert failure is None
    assert outcomes["iteration_01.install_mesh"] == "failed"
    # The pipeline's own failure (and the skips it made) do not count as a stop.
    assert outcomes["load_results"] == "success"
    assert outcomes["iteration_01.uninstall_mesh"] == "success"  # teardown ran
    assert "uninstall_mesh:1" in backend.calls and "delete_clusters" in backend.calls
    rows = [r for r in measurements(clean_results) if r.phase == "measured"]
    first = [r for r in rows if r.iteration == 1]
    assert [r.positive for r in first] == [False, False]
    assert all(r.failed_task == "iteration_01.install_mesh" for r in first)
    assert all("failure injected at iteration_01.install_mesh" in r.reason for r in first)
    assert all(r.positive for r in rows if r.iteration == 2)


def test_too_few_positives_fails_the_run_but_keeps_the_rows(config, clean_results, monkeypatch):
    backend = ReplayBackend(config, bad_runs={(1, 1), (1, 2)})
    _, failure = drive(config, backend, clean_results, monkeypatch)
    assert isinstance(failure, TooFewPositives)
    assert "2 positive measured run(s), fewer than min_positive 3" in str(failure)
    rows = [r for r in measurements(clean_results) if r.phase == "measured"]
    assert [r.positive for r in rows] == [False, False, True, True]
    assert "non-2xx return codes: 503×3" in rows[0].reason
    with clean_results.connect() as connection:
        assert connection.execute(text("SELECT state FROM run")).scalar_one() == "failed"


def test_failed_create_skips_iterations_and_records_why(config, clean_results, monkeypatch):
    backend = ReplayBackend(config, fail={"create_clusters": "quota exceeded"})
    outcomes, failure = drive(config, backend, clean_results, monkeypatch)
    assert isinstance(failure, TooFewPositives)
    assert outcomes["iteration_01.install_mesh"] == "skipped"
    assert outcomes["iteration_01.uninstall_mesh"] == "skipped"
    assert "delete_clusters" in backend.calls  # teardown of a half-made pair still runs
    rows = measurements(clean_results)
    assert len(rows) == 4
    assert all(r.failed_task == "create_clusters" and "quota exceeded" in r.reason for r in rows)


def test_a_run_marked_failed_by_hand_loads_what_it_measured_and_fails(
    config, clean_results, monkeypatch
) -> None:
    """Marking a DAG run failed during iteration 2 skips its pending tasks (no record of the
    pipeline's) and lets the teardowns run: the load keeps iteration 1 and fails the run."""
    monkeypatch.setattr("meshbench.results.db.get_engine", lambda: clean_results)
    backend = ReplayBackend(config)
    states: dict[str, str] = {}

    def step(task_id, name, iteration=None):
        task = task_run(task_id, task_states=lambda: airflow_states(config, states))
        Pipeline(config, "local", "envoy-mtls", task, backend=backend).run(name, iteration)
        states[task_id] = "success"

    step("create_clusters", "create_clusters")
    step("prepare_pair", "prepare_pair")
    for name in ITERATION_STEPS:
        step(iteration_task_id(1, name), name, 1)
    # Airflow killed the measure at its very end (on_kill records it): a failure from outside.
    measure_1 = iteration_task_id(1, "measure")
    record_stopped(config, task_run(measure_1))
    states[measure_1] = "failed"
    # Airflow failed the warm-up after the pipeline had finished it: from outside as well.
    warmup_1 = iteration_task_id(1, "warmup")
    states[warmup_1] = "failed"
    # Marked failed by hand: Airflow skips iteration 2's pending tasks, teardowns still run.
    for name in ITERATION_STEPS[:-1]:
        states[iteration_task_id(2, name)] = "skipped"
    with pytest.raises(StepSkipped):  # the mesh was never installed in iteration 2
        step(iteration_task_id(2, "uninstall_mesh"), "uninstall_mesh", 2)
    states[iteration_task_id(2, "uninstall_mesh")] = "skipped"
    step("delete_clusters", "delete_clusters")
    with pytest.raises(RunStoppedFromOutside, match=r"iteration_02.install_mesh \(skipped\)"):
        step("load_results", "load_results")
    rows = [r for r in measurements(clean_results) if r.phase == "measured"]
    assert [(r.iteration, r.positive) for r in rows] == [
        (1, True),
        (1, True),
        (2, False),
        (2, False),
    ]
    with clean_results.connect() as connection:
        state, stopped = connection.execute(
            text("SELECT state, settings->'stopped_from_outside' FROM run")
        ).one()
    assert state == "failed"
    # The first of the skipped tasks names the stop; the scheduler passed it on to the rest.
    assert stopped[iteration_task_id(2, "install_mesh")] == "skipped"
    assert iteration_task_id(2, "measure") not in stopped
    assert stopped[measure_1] == "failed" and stopped[warmup_1] == "failed"
    assert iteration_task_id(1, "install_mesh") not in stopped


def test_fewer_iterations_asked_for_is_not_a_stop_from_outside(
    config, clean_results, monkeypatch
) -> None:
    """The pipeline skips the unplanned iteration's first step and the scheduler passes the
    skip on to the rest of it, with no record of the pipeline's: the run still succeeds."""
    outcomes, failure = drive(
        config, ReplayBackend(config), clean_results, monkeypatch, params={"iterations": 1}
    )
    assert failure is None and outcomes["load_results"] == "success", outcomes
    passed_on = [iteration_task_id(2, name) for name in ITERATION_STEPS[1:-1]]
    assert {outcomes[t] for t in passed_on} == {"skipped"}
    with clean_results.connect() as connection:
        state, stopped = connection.execute(
            text("SELECT state, settings->'stopped_from_outside' FROM run")
        ).one()
    assert (state, stopped) == ("success", {})


def test_retried_measure_adopts_runs_already_kept(config, clean_results, monkeypatch, tmp_path):
    backend = ReplayBackend(config)
    drive(config, backend, clean_results, monkeypatch)
    again = ReplayBackend(config)
    task = TaskRun(
        dag_id="meshbench_local_envoy-mtls",
        run_id="manual__1",
        task_id="iteration_01.measure",
        benchmark_date=date(2026, 1, 2),
        try_number=2,
    )
    Pipeline(config, "local", "envoy-mtls", task, backend=again).run("measure", 1)
    assert not [c for c in again.calls if c.startswith("run_load")]


def test_rerun_of_the_same_date_is_a_new_attempt(config, clean_results, monkeypatch):
    drive(config, ReplayBackend(config), clean_results, monkeypatch, attempt=1)
    drive(config, ReplayBackend(config), clean_results, monkeypatch, attempt=2)
    drive(config, ReplayBackend(config), clean_results, monkeypatch, attempt=2)  # reload
    with clean_results.connect() as connection:
        runs = connection.execute(
            text("SELECT attempt, is_latest_attempt FROM v_run ORDER BY attempt")
        ).all()
        measured = connection.execute(
            text("SELECT count(*) FROM measurement WHERE phase = 'measured'")
        ).scalar_one()
    assert [tuple(r) for r in runs] == [(1, False), (2, True)]
    assert measured == 8


def test_unplanned_iterations_are_skipped(config, tmp_path) -> None:
    task = TaskRun(
        dag_id="d",
        run_id="r",
        task_id="iteration_02.install_mesh",
        benchmark_date=date(2026, 1, 2),
        params={"iterations": 1},
    )
    pipeline = Pipeline(config, "local", "envoy-mtls", task, backend=ReplayBackend(config))
    with pytest.raises(StepSkipped, match="iteration 2 is not planned"):
        pipeline.run("install_mesh", 2)


def test_trigger_parameters_override_the_profile() -> None:
    base = LoadProfile()
    load = effective_load(base, {"iterations": 1, "duration": "10s", "connections": 4})
    assert (load.iterations, load.duration, load.connections) == (1, 10.0, 4)
    assert load.min_positive == 3  # lowered with the iterations asked for
    with pytest.raises(ValueError, match="connections"):
        effective_load(base, {"connections": 0})


def test_cluster_minutes_reported_by_delete_are_recorded(config, clean_results, monkeypatch):
    class CostlyBackend(ReplayBackend):
        def delete_clusters(self, ctx):
            self._step("delete_clusters")
            return {"cluster_minutes": 42.5, "estimated_cost_usd": 1.25}

    drive(config, CostlyBackend(config), clean_results, monkeypatch)
    with clean_results.connect() as connection:
        minutes, teardown = connection.execute(
            text("SELECT cluster_minutes, settings->'teardown' FROM run")
        ).one()
    assert minutes == 42.5
    assert teardown == {"cluster_minutes": 42.5, "estimated_cost_usd": 1.25}


def test_an_unmigrated_results_database_fails_create_clusters_before_anything_runs(
    config, fresh_database, monkeypatch
) -> None:
    from sqlalchemy import create_engine

    from meshbench.results.migrate import SchemaNotCurrent

    unmigrated = create_engine(fresh_database())
    monkeypatch.setattr("meshbench.results.db.get_engine", lambda: unmigrated)
    backend = ReplayBackend(config)
    task = TaskRun(
        dag_id="meshbench_local_envoy-mtls",
        run_id="manual__unmigrated",
        task_id="create_clusters",
        benchmark_date=date(2026, 1, 2),
    )
    try:
        with pytest.raises(SchemaNotCurrent, match="run `meshbench db upgrade`"):
            Pipeline(config, "local", "envoy-mtls", task, backend=backend).run("create_clusters")
    finally:
        unmigrated.dispose()
    assert backend.calls == []


def _load_alone(config, engine, monkeypatch, attempt: int):
    monkeypatch.setattr("meshbench.results.db.get_engine", lambda: engine)
    task = TaskRun(
        dag_id="meshbench_local_envoy-mtls",
        run_id="manual__1",
        task_id="load_results",
        benchmark_date=date(2026, 1, 2),
        attempt=attempt,
    )
    return Pipeline(config, "local", "envoy-mtls", task, backend=ReplayBackend(config)).run(
        "load_results"
    )


def test_a_cleared_load_results_loads_the_measuring_attempt_once(
    config, clean_results, monkeypatch
) -> None:
    # Try 1 of the load fails (as against an unmigrated database); clearing it makes a new
    # attempt of the DAG run whose folder holds nothing measured.
    monkeypatch.setenv(INJECT_FAILURE_ENV_VAR, "load_results")
    outcomes, _ = drive(config, ReplayBackend(config), clean_results, monkeypatch)
    assert outcomes["load_results"] == "failed"
    with clean_results.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM run")).scalar_one() == 0
    monkeypatch.delenv(INJECT_FAILURE_ENV_VAR)

    summary = _load_alone(config, clean_results, monkeypatch, attempt=2)
    assert summary["positive_measured"] == 4 and summary["negatives"] == []
    _load_alone(config, clean_results, monkeypatch, attempt=3)  # cleared once more
    with clean_results.connect() as connection:
        runs = connection.execute(text("SELECT source_key, attempt, state FROM run")).all()
        rows = connection.execute(
            text("SELECT positive, count(*) FROM measurement WHERE phase = 'measured' GROUP BY 1")
        ).all()
    assert [tuple(r) for r in runs] == [
        ("airflow:meshbench_local_envoy-mtls:manual__1:1", 1, "success")
    ]
    assert [tuple(r) for r in rows] == [(True, 4)]


def test_a_re_measured_iteration_replaces_only_itself(config, clean_results, monkeypatch) -> None:
    monkeypatch.setenv(INJECT_FAILURE_ENV_VAR, "iteration_02.install_mesh")
    lenient = config.model_copy(
        update={
            "load_profiles": {
                **config.load_profiles,
                "study": config.load_profiles["study"].model_copy(update={"min_positive": 2}),
            }
        }
    )
    drive(lenient, ReplayBackend(config), clean_results, monkeypatch)
    monkeypatch.delenv(INJECT_FAILURE_ENV_VAR)
    # Attempt 2: iteration 2 cleared and re-run (with its setups), then the load.
    monkeypatch.setattr("meshbench.results.db.get_engine", lambda: clean_results)
    again = ReplayBackend(config)

    def run(task_id, name, iteration=None):
        task = task_run(task_id, attempt=2)
        Pipeline(lenient, "local", "envoy-mtls", task, backend=again).run(name, iteration)

    run("create_clusters", "create_clusters")
    run("prepare_pair", "prepare_pair")
    for name in ITERATION_STEPS:
        run(iteration_task_id(2, name), name, 2)
    run("delete_clusters", "delete_clusters")
    run("load_results", "load_results")
    assert [c for c in again.calls if c.startswith("run_load:1:")] == []
    with clean_results.connect() as connection:
        latest = connection.execute(
            text(
                "SELECT m.iteration, m.positive, count(*) FROM measurement m "
                "JOIN v_run r ON r.id = m.run_id WHERE r.is_latest_attempt "
                "AND m.phase = 'measured' GROUP BY 1, 2 ORDER BY 1"
            )
        ).all()
    assert [tuple(r) for r in latest] == [(1, True, 2), (2, True, 2)]


def test_a_manual_run_of_a_scheduled_date_is_kept_but_does_not_replace_it(
    config, clean_results, monkeypatch
) -> None:
    from meshbench.analysis.aggregate import aggregate

    drive(config, ReplayBackend(config), clean_results, monkeypatch, "scheduled__1", 1, "scheduled")
    short = config.model_copy(
        update={
            "load_profiles": {
                **config.load_profiles,
                "study": config.load_profiles["study"].model_copy(
                    update={"duration": 5.0, "min_positive": 1}
                ),
            }
        }
    )
    drive(short, ReplayBackend(short), clean_results, monkeypatch, "manual__2", 1, "manual")
    aggregate(clean_results)
    with clean_results.connect() as connection:
        runs = connection.execute(
            text(
                "SELECT dag_run_id, attempt, purpose, by_hand, is_latest_attempt FROM v_run "
                "ORDER BY attempt"
            )
        ).all()
        compared = connection.execute(
            text("SELECT load_profile_key, n_positive FROM v_comparison")
        ).all()
    assert [tuple(r) for r in runs] == [
        ("scheduled__1", 1, "scheduled", False, True),
        ("manual__2", 2, "manual", True, False),
    ]
    assert [tuple(r) for r in compared] == [("q6000-c1-d60s", 4)]

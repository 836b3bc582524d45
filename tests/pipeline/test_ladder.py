"""Load ladders in the pipeline: every step runs in each iteration, each with its own runs,
paired baselines and artifacts, and the step travels with every result."""

from __future__ import annotations

from datetime import date

import pytest

from meshbench.config import LoadProfile, LoadStep
from meshbench.pipeline.collect import collect_records
from meshbench.pipeline.steps import Pipeline, TaskRun, effective_load, iteration_task_id
from tests.pipeline.replay_backend import ReplayBackend

pytestmark = pytest.mark.postgres

LADDER = [
    {"connections": 1, "qps": "max"},
    {"connections": 4, "qps": 2000},
]


class StepRecordingBackend(ReplayBackend):
    """Keeps the load each run was asked for."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.loads: list[tuple[str, int, int, bool, str | None]] = []

    def run_load(self, ctx, iteration, phase, run_index):
        load = ctx.load
        self.loads.append(
            (phase, load.connections, load.qps, load.fixed_rate, ctx.labels.get("step"))
        )
        return super().run_load(ctx, iteration, phase, run_index)


@pytest.fixture
def ladder_config(config):
    load = LoadProfile(
        steps=LADDER, duration="5s", iterations=1, runs_per_iteration=2, min_positive=4
    )
    return config.model_copy(update={"load_profiles": {**config.load_profiles, "study": load}})


def _pipeline(config, backend, task_id: str) -> Pipeline:
    task = TaskRun(
        dag_id="meshbench_local_envoy-mtls",
        run_id="manual__ladder",
        task_id=task_id,
        benchmark_date=date(2026, 1, 2),
    )
    return Pipeline(config, "local", "envoy-mtls", task, backend=backend)


def test_measure_runs_every_step_with_its_own_runs_and_paired_baselines(ladder_config):
    backend = StepRecordingBackend(ladder_config)
    for step in ("warmup", "measure"):
        _pipeline(ladder_config, backend, iteration_task_id(1, step)).run(step, 1)
    assert backend.loads == [
        ("warmup", 1, 0, False, "c1-max"),
        *[("paired-baseline", 1, 0, False, "c1-max"), ("measured", 1, 0, False, "c1-max")] * 2,
        *[("paired-baseline", 4, 2000, True, "c4-q2000"), ("measured", 4, 2000, True, "c4-q2000")]
        * 2,
    ]
    records = collect_records(_pipeline(ladder_config, backend, "load_results"))
    measured = [(r.step, r.run_index) for r in records if r.phase == "measured"]
    assert measured == [(1, 1), (1, 2), (2, 1), (2, 2)]
    step_two = next(r for r in records if r.step == 2)
    assert step_two.outcome.context["step"] == {
        "index": 2,
        "key": "c4-q2000",
        "connections": 4,
        "target_qps": 2000,
        "fixed_rate": True,
    }


def test_a_step_never_run_becomes_its_own_negatives(ladder_config):
    backend = StepRecordingBackend(ladder_config)
    records = collect_records(_pipeline(ladder_config, backend, "load_results"))
    assert [(r.step, r.run_index, r.outcome.raw_result) for r in records] == [
        (1, 1, None),
        (1, 2, None),
        (2, 1, None),
        (2, 2, None),
    ]
    assert records[2].outcome.context["step"]["key"] == "c4-q2000"


def test_a_one_step_profile_keeps_its_artifact_names(config):
    backend = ReplayBackend(config)
    pipeline = _pipeline(config, backend, iteration_task_id(1, "measure"))
    pipeline.run("measure", 1)
    names = sorted(p.name for p in (pipeline.run_dir / "iteration_01").iterdir())
    assert names == [
        "measured-01.json",
        "measured-02.json",
        "paired-baseline-01.json",
        "paired-baseline-02.json",
    ]


def test_trigger_connections_make_the_ladder_one_step(ladder_config):
    base = ladder_config.load_profiles["study"]
    load = effective_load(base, {"connections": 8})
    assert [step.key for step in load.ladder()] == ["c8-max"]
    assert load.min_positive == 2  # lowered to the runs one step makes
    paced = effective_load(base, {"qps": 500})
    assert paced.at_step(1).fixed_rate and paced.at_step(1).connections == 1
    assert effective_load(base, {"iterations": 1}).ladder() == base.ladder()


def test_ladder_steps_are_validated():
    with pytest.raises(ValueError, match="repeated: c4-max"):
        LoadProfile(steps=[{"connections": 4, "qps": "max"}] * 2, min_positive=1)
    with pytest.raises(ValueError, match="below one request per second"):
        LoadStep(connections=16, qps=8)
    with pytest.raises(ValueError, match=r"× 2 steps"):
        LoadProfile(steps=LADDER, iterations=1, runs_per_iteration=1, min_positive=3)
    study = LoadProfile()
    assert study.at_step(1) is study and study.step_key() == "c1-q6000"
    with pytest.raises(ValueError, match="load step 3: the ladder has 2 steps"):
        LoadProfile(steps=LADDER, min_positive=1).at_step(3)

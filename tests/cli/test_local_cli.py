"""`meshbench local run --profile`: a load profile from benchmarks.yaml, sized by the
command's options as the trigger form sizes a DAG run, and a ladder's every step in the
result table."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbench.backend import PHASE_MEASURED, MeasurementOutcome
from meshbench.cli import build_parser, main
from meshbench.cli.local import cli_load, result_table
from meshbench.config import LoadProfile, load_config
from meshbench.pipeline.steps import effective_load
from meshbench.results.loader import MeasurementRecord
from tests.local.conftest import needs_netns


def load_for(*options: str) -> LoadProfile:
    args = build_parser().parse_args(["local", "run", "--mesh", "baseline", *options])
    return cli_load(load_config(), args)


def test_an_unknown_profile_is_refused_naming_it_and_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["local", "run", "--mesh", "baseline", "--profile", "no-such-profile"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no load profile named 'no-such-profile'" in err
    assert f"known: {', '.join(load_config().load_profiles)}" in err


def test_a_profile_without_options_runs_as_configured() -> None:
    demo = load_config().load_profiles["demo"]
    load = load_for("--profile", "demo")
    assert [step.key for step in load.ladder()] == [step.key for step in demo.ladder()]
    assert (load.iterations, load.runs_per_iteration, load.duration) == (
        demo.iterations,
        demo.runs_per_iteration,
        demo.duration,
    )
    assert load.effective_warmup_duration == demo.effective_warmup_duration
    assert load.min_positive == demo.min_positive


def test_options_size_a_profile_as_the_trigger_form_does() -> None:
    ladder = load_config().load_profiles["ladder"]
    load = load_for("--profile", "ladder", "--iterations", "1", "--runs", "1", "--duration", "3s")
    expected = effective_load(ladder, {"iterations": 1, "runs_per_iteration": 1})
    assert [step.key for step in load.ladder()] == [step.key for step in ladder.ladder()]
    assert load.duration == 3.0
    assert load.min_positive == expected.min_positive == len(ladder.ladder())


@pytest.mark.parametrize(
    ("options", "trigger_params"),
    [
        (("--connections", "8"), {"connections": 8}),
        (("--qps", "1000"), {"qps": 1000}),
        (("--connections", "2", "--qps", "max"), {"connections": 2, "qps": 0}),
    ],
)
def test_connections_or_a_rate_make_a_ladder_one_step_as_the_trigger_form_does(
    options: tuple[str, ...], trigger_params: dict[str, int]
) -> None:
    demo = load_config().load_profiles["demo"]
    load = load_for("--profile", "demo", *options)
    assert [step.key for step in load.ladder()] == [
        step.key for step in effective_load(demo, trigger_params).ladder()
    ]


def test_a_rate_on_a_one_step_profile_paces_that_step() -> None:
    # The study's qps is an unreachable target that wrk ignores; asking for a rate means h2load.
    load = load_for("--profile", "study", "--connections", "4", "--qps", "2000")
    assert [step.key for step in load.ladder()] == ["c4-q2000"]
    assert load.at_step(1).fixed_rate


def test_without_a_profile_the_run_stays_one_short_step() -> None:
    load = load_for()
    assert (load.iterations, load.runs_per_iteration, load.duration) == (1, 1, 10.0)
    assert load.steps is None


def test_the_table_names_each_step_and_marks_a_saturated_run() -> None:
    profile = LoadProfile.model_validate(
        {
            "steps": [{"connections": 1, "qps": "max"}, {"connections": 4, "qps": 2000}],
            "duration": 3.0,
            "runs_per_iteration": 1,
            "iterations": 1,
            "min_positive": 0,
        }
    )

    def record(step: int, requested: int | str, actual: float) -> MeasurementRecord:
        key = profile.ladder()[step - 1].key
        raw = {"RequestedQPS": requested, "ActualQPS": actual, "RetCodes": {"200": 10}}
        context = {"step": {"index": step, "key": key}, "path": "client -> nginx"}
        return MeasurementRecord(1, PHASE_MEASURED, 1, MeasurementOutcome(raw, None, context), step)

    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(
        result_table([record(1, "max", 40000.0), record(2, 2000, 1500.0)], 0.05, profile.ladder())
    )
    rows = [line for line in console.export_text().splitlines() if "client -> nginx" in line]
    assert len(rows) == 2
    assert "c1-max" in rows[0] and "saturated" not in rows[0]
    assert "c4-q2000" in rows[1] and "saturated" in rows[1]


@needs_netns
@pytest.mark.netns
@pytest.mark.slow
def test_a_ladder_profile_runs_each_step(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MESHBENCH_STATE", str(tmp_path))
    # demo's three steps (two closed-loop, one paced by h2load), one 3 s run each: about 15 s.
    code = main(
        [
            "local",
            "run",
            "--mesh",
            "baseline",
            "--profile",
            "demo",
            "--iterations",
            "1",
            "--runs",
            "1",
            "--duration",
            "3s",
            "--no-warmup",
            "--no-paired-baseline",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    keys = [step.key for step in load_config().load_profiles["demo"].ladder()]
    assert f"3 step(s) {', '.join(keys)}" in out
    rows = [line for line in out.splitlines() if "│ measured" in line]
    assert [next(key for key in keys if f" {key} " in row) for row in rows] == keys
    assert "run success: 3 positive measured run(s), at least 3 needed" in out

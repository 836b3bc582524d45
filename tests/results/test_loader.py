from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from meshbench.backend import MeasurementOutcome
from meshbench.results.fortio import ResultFormatError, judge, parse_result
from meshbench.results.loader import MeasurementRecord, load_files, load_run
from meshbench.results.models import HistogramBucket, Measurement, Run

pytestmark = pytest.mark.postgres

ISTIO_FILE = "imp/test-2023-11-16-T20-36-imp-q6000-c1-d60s-01-01-8080.json"


def seed_document(seed_results_dir: Path, name: str = ISTIO_FILE) -> dict:
    return json.loads((seed_results_dir / name).read_text())


def count(engine, model) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(model)).scalar_one()


def write_study_layout(root: Path, documents: dict[str, dict]) -> Path:
    """Write documents as <root>/lab-2026-01-02/<mesh>/test-...-<it>-<run>-8080.json."""
    folder = root / "lab-2026-01-02"
    for name, document in documents.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return folder


def test_loaded_rows_match_the_file(clean_results, seed_results_dir) -> None:
    reports = load_files(
        clean_results,
        [seed_results_dir / "imp"],
        environment="equinix-metal",
        benchmark_date=date(2023, 11, 16),
    )
    assert [r.inserted for r in reports] == [5]
    document = seed_document(seed_results_dir)
    histogram = document["DurationHistogram"]
    with Session(clean_results) as session:
        row = session.scalars(
            select(Measurement).where(Measurement.iteration == 1, Measurement.run_index == 1)
        ).one()
        run = session.scalars(select(Run)).one()
        buckets = session.scalars(
            select(HistogramBucket)
            .where(HistogramBucket.measurement_id == row.id)
            .order_by(HistogramBucket.bucket_index)
        ).all()
    assert (run.environment, run.mesh, run.mesh_version) == ("equinix-metal", "istio", "1.19.3")
    assert (run.qps, run.connections, run.duration_s, run.iterations) == (6000, 1, 60.0, 5)
    assert row.positive and row.reason is None
    assert row.actual_qps == document["ActualQPS"]
    assert row.actual_duration_s == pytest.approx(document["ActualDuration"] / 1e9)
    assert row.request_count == histogram["Count"]
    assert row.avg_ms == pytest.approx(histogram["Avg"] * 1000)
    expected = {p["Percentile"]: p["Value"] * 1000 for p in histogram["Percentiles"]}
    assert row.p50_ms == pytest.approx(expected[50])
    assert row.p999_ms == pytest.approx(expected[99.9])
    assert row.ret_codes == {"200": histogram["Count"]}
    assert row.raw == document
    assert len(buckets) == len(histogram["Data"])
    assert sum(b.count for b in buckets) == histogram["Count"]
    assert buckets[-1].cumulative_percent == pytest.approx(100)


def test_loading_twice_changes_nothing(clean_results, seed_results_dir) -> None:
    load_files(clean_results, [seed_results_dir])
    before = (
        count(clean_results, Run),
        count(clean_results, Measurement),
        count(clean_results, HistogramBucket),
    )
    reports = load_files(clean_results, [seed_results_dir])
    after = (
        count(clean_results, Run),
        count(clean_results, Measurement),
        count(clean_results, HistogramBucket),
    )
    assert before == after == (3, 15, after[2])
    assert all(r.inserted == 0 and r.already_loaded == 5 for r in reports)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["ErrorsDurationHistogram"].update(Count=7), "7 request(s) failed"),
        (lambda d: d["RetCodes"].update({"503": 12}), "non-2xx return codes: 503×12"),
        (lambda d: d.update(ActualDuration=41_000_000_000), "is 31.7% off the requested 60 s"),
        (
            lambda d: d["DurationHistogram"].update(Count=0, Data=[], Percentiles=[]),
            "no successful requests",
        ),
        (lambda d: d.update(error="connection refused"), "load generator reported error"),
    ],
    ids=["errors", "503", "short", "no-requests", "error-key"],
)
def test_negative_results_keep_raw_and_reason(
    clean_results, seed_results_dir, tmp_path, change, reason
) -> None:
    good = seed_document(seed_results_dir)
    bad = copy.deepcopy(good)
    change(bad)
    run = Run(
        source_key="test:negative",
        environment="lab",
        mesh="istio",
        mesh_version="1.19.3",
        benchmark_date=date(2026, 1, 2),
        qps=6000,
        connections=1,
        duration_s=60,
        iterations=1,
        runs_per_iteration=2,
        started_at=datetime.now(UTC),
    )
    report = load_run(
        clean_results,
        run,
        [
            MeasurementRecord(1, "measured", 1, MeasurementOutcome(raw_result=good)),
            MeasurementRecord(1, "measured", 2, MeasurementOutcome(raw_result=bad)),
        ],
    )
    assert (report.positive, report.negative) == (1, 1)
    with Session(clean_results) as session:
        negative = session.scalars(select(Measurement).where(Measurement.run_index == 2)).one()
        means = session.execute(
            text("SELECT count(*), avg(avg_ms) FROM v_positive_measurement")
        ).one()
    assert not negative.positive
    assert reason in negative.reason
    assert negative.raw == bad
    assert means[0] == 1
    assert means[1] == pytest.approx(good["DurationHistogram"]["Avg"] * 1000)


def test_failed_step_without_result_is_negative(clean_results) -> None:
    run = Run(
        source_key="test:failed-step",
        environment="local",
        mesh="envoy-mtls",
        benchmark_date=date(2026, 1, 2),
        qps=6000,
        connections=1,
        duration_s=5,
        iterations=2,
        runs_per_iteration=1,
        started_at=datetime.now(UTC),
    )
    load_run(
        clean_results,
        run,
        [
            MeasurementRecord(
                1,
                "measured",
                1,
                MeasurementOutcome(raw_result=None, failure="envoy did not start"),
                failed_task="iteration_01.install_mesh",
            )
        ],
    )
    with Session(clean_results) as session:
        row = session.scalars(select(Measurement)).one()
    assert (row.positive, row.reason, row.failed_task) == (
        False,
        "envoy did not start",
        "iteration_01.install_mesh",
    )


def test_rerun_of_a_date_adds_an_attempt(clean_results) -> None:
    common = dict(
        environment="local",
        mesh="baseline",
        benchmark_date=date(2026, 1, 2),
        qps=6000,
        connections=1,
        duration_s=5,
        iterations=1,
        runs_per_iteration=1,
        started_at=datetime.now(UTC),
    )
    first = load_run(clean_results, Run(source_key="dag:a:try1", **common))
    again = load_run(clean_results, Run(source_key="dag:a:try1", **common))
    second = load_run(clean_results, Run(source_key="dag:a:try2", **common))
    assert (first.attempt, again.attempt, second.attempt) == (1, 1, 2)
    assert not again.created_run
    with clean_results.connect() as connection:
        latest = (
            connection.execute(text("SELECT source_key FROM v_run WHERE is_latest_attempt"))
            .scalars()
            .all()
        )
    assert latest == ["dag:a:try2"]


def _drop(path: str):
    def change(document: dict) -> None:
        *parents, last = path.split(".")
        target = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return change


def _set(path: str, value):
    def change(document: dict) -> None:
        *parents, last = path.split(".")
        target = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value

    return change


MALFORMED = [
    ("truncated", "truncate", "not valid JSON at line 1"),
    ("empty file", "empty", "not valid JSON"),
    ("array", "array", "a Fortio result is a JSON object, got list"),
    ("no histogram", _drop("DurationHistogram"), "field DurationHistogram is missing"),
    (
        "no error histogram",
        _drop("ErrorsDurationHistogram"),
        "field ErrorsDurationHistogram is missing",
    ),
    ("no actual qps", _drop("ActualQPS"), "field ActualQPS is missing"),
    ("no actual duration", _drop("ActualDuration"), "field ActualDuration is missing"),
    ("no start time", _drop("StartTime"), "field StartTime is missing"),
    ("no ret codes", _drop("RetCodes"), "field RetCodes is missing"),
    ("no count", _drop("DurationHistogram.Count"), "field DurationHistogram.Count is missing"),
    ("qps as text", _set("ActualQPS", "fast"), "field ActualQPS: Input should be a valid number"),
    (
        "duration float",
        _set("ActualDuration", 1.5),
        "field ActualDuration: Input should be a valid integer",
    ),
    (
        "requested qps number",
        _set("RequestedQPS", 6000),
        "field RequestedQPS: must be a string, as Fortio writes it (got 6000)",
    ),
    (
        "requested duration bad",
        _set("RequestedDuration", "soon"),
        "field RequestedDuration: must be a duration",
    ),
    (
        "negative count",
        _set("DurationHistogram.Count", -3),
        "field DurationHistogram.Count: Input should be greater than or equal to 0 (got -3)",
    ),
    (
        "negative qps",
        _set("ActualQPS", -1.0),
        "field ActualQPS: Input should be greater than or equal to 0",
    ),
    (
        "negative bucket count",
        _set("DurationHistogram.Data.0.Count", -1),
        "field DurationHistogram.Data.0.Count: Input should be greater than or equal to 0 (got -1)",
    ),
    (
        "percent over 100",
        _set("DurationHistogram.Data.1.Percent", 140),
        "field DurationHistogram.Data.1.Percent: Input should be less than or equal to 100.0001",
    ),
    (
        "negative ret code count",
        _set("RetCodes", {"200": -4}),
        "field RetCodes: count for return code 200 is negative",
    ),
    (
        "ret code not a number",
        _set("RetCodes", {"OK": 5}),
        "field RetCodes: return code 'OK' is not a number",
    ),
    (
        "no p99.9",
        _set("DurationHistogram.Percentiles", [{"Percentile": 50, "Value": 0.1}]),
        "field DurationHistogram.Percentiles lacks percentile(s) 75, 90, 99, 99.9",
    ),
    ("fractional count", _set("DurationHistogram.Count", 10.5), "field DurationHistogram.Count"),
    (
        "negative avg",
        _set("DurationHistogram.Avg", -0.1),
        "field DurationHistogram.Avg: Input should be greater than or equal to 0",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [(c, e) for _, c, e in MALFORMED],
    ids=[name for name, _, _ in MALFORMED],
)
def test_malformed_file_names_file_and_field_and_writes_nothing(
    clean_results, seed_results_dir, tmp_path, change, expected
) -> None:
    good = seed_document(seed_results_dir)
    if change == "truncate":
        bad: object = json.dumps(good)[:500]
    elif change == "empty":
        bad = ""
    elif change == "array":
        bad = [good]
    else:
        bad = copy.deepcopy(good)
        change(bad)
    # The bad file sits beside good ones: the load must be all or nothing.
    folder = write_study_layout(
        tmp_path,
        {
            "istio/test-x-01-01-8080.json": good,
            "istio/test-x-02-01-8080.json": bad if isinstance(bad, str) else json.dumps(bad),
        },
    )
    bad_path = folder / "istio/test-x-02-01-8080.json"
    with pytest.raises(ResultFormatError) as caught:
        load_files(clean_results, [folder])
    message = str(caught.value)
    assert f"{bad_path}: " in message, message
    assert expected in message, message
    assert "test-x-01-01" not in message
    assert count(clean_results, Run) == 0
    assert count(clean_results, Measurement) == 0


def test_seed_results_are_positive_by_the_rules(seed_results_dir) -> None:
    for path in sorted(seed_results_dir.rglob("*.json")):
        verdict = judge(parse_result(json.loads(path.read_text()), str(path)))
        assert verdict.positive, (path, verdict.reasons)


def test_unknown_layout_asks_for_metadata(clean_results, seed_results_dir, tmp_path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(seed_document(seed_results_dir)))
    with pytest.raises(ResultFormatError, match="pass --environment and --date"):
        load_files(clean_results, [path])


def test_duration_rule_has_an_absolute_floor_for_short_runs(seed_results_dir) -> None:
    document = seed_document(seed_results_dir)
    document["RequestedDuration"] = "2s"
    document["ActualDuration"] = 2_100_000_000  # a 100 ms timer tick over a 2 s run
    assert judge(parse_result(document, "short")).positive
    document["ActualDuration"] = 1_500_000_000  # a quarter cut short
    verdict = judge(parse_result(document, "short"))
    assert not verdict.positive and "25.0% off the requested 2 s" in verdict.reason

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sqlalchemy import text

from meshbench.analysis.aggregate import (
    aggregate,
    describe,
    find_outliers,
    store_summary,
    summarize,
)
from meshbench.analysis.report import comparison_frame, means_label
from meshbench.results.loader import load_files

# The study's Equinix Metal table (ms; QPS), which its published result files reproduce.
STUDY_TABLE = {
    "istio": (1864.44, 0.53, 0.57, 0.68, 0.95),
    "kuma": (4538.77, 0.22, 0.25, 0.29, 2.55),
    "nsm": (5148.70, 0.19, 0.24, 0.29, 1.04),
}


@pytest.mark.postgres
def test_seed_results_reproduce_the_study_table(clean_results, seed_results_dir) -> None:
    load_files(clean_results, [seed_results_dir])
    summary = aggregate(clean_results, "equinix-metal", date(2023, 11, 16))
    frame = comparison_frame(summary).set_index("mesh")
    for mesh, expected in STUDY_TABLE.items():
        row = frame.loc[mesh]
        measured = (row["QPS"], row["avg"], row["p90"], row["p99"], row["p99.9"])
        assert tuple(round(v, 2) for v in measured) == expected, mesh
        assert (row["n"], row["negative"], row["flagged"], row["excluded"]) == (5, 0, 0, 0)
        assert row["QPS ci95 low"] < row["QPS"] < row["QPS ci95 high"]
    with clean_results.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT mesh, round(qps::numeric, 2), round(p999_ms::numeric, 2), n_positive "
                "FROM v_comparison ORDER BY mesh"
            )
        ).all()
    assert [(m, float(q), float(p), n) for m, q, p, n in stored] == [
        ("istio", 1864.44, 0.95, 5),
        ("kuma", 4538.77, 2.55, 5),
        ("nsm", 5148.70, 1.04, 5),
    ]


@pytest.mark.postgres
def test_aggregating_twice_updates_in_place(clean_results, seed_results_dir) -> None:
    load_files(clean_results, [seed_results_dir])
    aggregate(clean_results)
    aggregate(clean_results)
    with clean_results.connect() as connection:
        rows = connection.execute(text("SELECT count(*) FROM daily_summary")).scalar_one()
    assert rows == 3 * 6


def test_describe_matches_textbook_values() -> None:
    stats = describe([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert stats.n == 8 and stats.mean == 5.0 and stats.median == 4.5
    assert stats.stddev == pytest.approx(2.13809, rel=1e-5)
    half = 2.364624 * 2.13809 / math.sqrt(8)  # t(0.975, 7)
    assert (stats.ci_low, stats.ci_high) == pytest.approx((5 - half, 5 + half), rel=1e-5)
    assert describe([3.0]).stddev is None
    assert describe([]).n == 0


def test_outlier_check_flags_only_the_deviant_run() -> None:
    rng = np.random.default_rng(7)
    values = pd.Series(np.r_[rng.normal(1.0, 0.01, 9), 1.6])
    flagged = find_outliers(values)
    assert flagged.tolist() == [False] * 9 + [True]
    assert not find_outliers(pd.Series(rng.normal(1.0, 0.01, 10))).any()
    assert not find_outliers(pd.Series([1.0, 9.0, 1.0])).any()  # too few runs to judge


def _frame(rows: list[tuple[str, str, float, bool]]) -> pd.DataFrame:
    records = []
    for index, (mesh, phase, avg, positive) in enumerate(rows):
        records.append(
            {
                "measurement_id": index,
                "run_id": 1,
                "environment": "local",
                "mesh": mesh,
                "mesh_version_key": "",
                "benchmark_date": date(2026, 1, 2),
                "load_profile_key": "q6000-c1-d5s",
                "phase": phase,
                "iteration": 1,
                "run_index": index + 1,
                "positive": positive,
                "actual_qps": 1000.0 / avg,
                "avg_ms": avg,
                "p50_ms": avg,
                "p90_ms": avg,
                "p99_ms": avg,
                "p999_ms": avg,
            }
        )
    return pd.DataFrame(records)


def test_negatives_are_counted_not_averaged_and_overhead_uses_paired_baseline() -> None:
    frame = _frame(
        [
            ("envoy-mtls", "paired-baseline", 0.10, True),
            ("envoy-mtls", "paired-baseline", 0.12, True),
            ("envoy-mtls", "measured", 0.40, True),
            ("envoy-mtls", "measured", 0.44, True),
            ("envoy-mtls", "measured", 9.00, False),
        ]
    )
    rows = summarize(frame).rows.set_index("metric")
    assert rows.loc["avg_ms", "n_positive"] == 2
    assert rows.loc["avg_ms", "n_negative"] == 1
    assert rows.loc["avg_ms", "mean"] == pytest.approx(0.42)
    assert rows.loc["avg_ms", "baseline_mean"] == pytest.approx(0.11)
    assert rows.loc["avg_ms", "overhead"] == pytest.approx(0.31)
    qps = rows.loc["qps"]
    assert qps["overhead"] == pytest.approx(qps["mean"] / qps["baseline_mean"])


def _five_runs_one_apart() -> pd.DataFrame:
    # Four runs that agree closely and one 60 % slower: the deviation check flags the last.
    return _frame([("istio", "measured", avg, True) for avg in (1.00, 1.01, 0.99, 1.00, 1.60)])


def test_flagged_runs_stay_in_the_means_by_default_and_are_listed_with_their_reason() -> None:
    summary = summarize(_five_runs_one_apart())
    avg = summary.rows.set_index("metric").loc["avg_ms"]
    assert avg["n_positive"] == 5 and avg["n_excluded"] == 0
    assert avg["mean"] == pytest.approx(np.mean([1.00, 1.01, 0.99, 1.00, 1.60]))
    assert not avg["flagged_excluded"] and not summary.flagged_excluded
    assert [run["run_index"] for run in avg["flagged_runs"]] == [5]
    assert avg["flagged_runs"][0]["reason"] == (
        "avg_ms 1.600 ms deviates from the median 1.000 ms by more than a modified z-score of 3.5"
    )
    assert summary.flagged["run_index"].tolist() == [5]
    frame = comparison_frame(summary).iloc[0]
    assert (frame["n"], frame["flagged"], frame["excluded"]) == (5, 1, 0)


def test_excluding_flagged_runs_is_a_setting_recorded_in_every_row() -> None:
    summary = summarize(_five_runs_one_apart(), exclude_flagged=True)
    rows = summary.rows.set_index("metric")
    assert rows["flagged_excluded"].all() and summary.flagged_excluded
    assert (rows["n_positive"] == 4).all() and (rows["n_excluded"] == 1).all()
    assert rows.loc["avg_ms", "mean"] == pytest.approx(1.0)
    assert means_label(summary).startswith("mean of positive runs EXCLUDING runs flagged")
    assert means_label(summarize(_five_runs_one_apart())) == "mean of every positive run"


@pytest.mark.postgres
def test_daily_summary_keeps_the_flagged_runs_and_the_setting(clean_results) -> None:
    frame = _five_runs_one_apart()
    store_summary(clean_results, summarize(frame, exclude_flagged=True))
    with clean_results.connect() as connection:
        rows = connection.execute(
            text("SELECT metric, flagged_excluded, flagged_runs, n_excluded FROM daily_summary")
        ).all()
    assert len(rows) == 6
    for metric, excluded, flagged, n_excluded in rows:
        assert excluded and n_excluded == 1, metric
        assert [(run["run_index"], run["value_ms"]) for run in flagged] == [(5, 1.6)]


def _saturation_frame(runs: list[tuple[str, float, float, bool]]) -> pd.DataFrame:
    """(phase, QPS, avg ms, saturated) runs of one step with a 2000 QPS target."""
    frame = _frame([("istio", phase, avg, True) for phase, _qps, avg, _saturated in runs])
    frame["actual_qps"] = [qps for _phase, qps, _avg, _saturated in runs]
    frame["saturated"] = [saturated for *_rest, saturated in runs]
    frame["step_key"] = "c4-q2000"
    return frame


def test_saturated_runs_are_counted_apart_from_the_runs_that_reached_the_target() -> None:
    frame = _saturation_frame(
        [
            ("paired-baseline", 2000.0, 0.10, False),
            ("paired-baseline", 1500.0, 0.90, True),
            ("measured", 1990.0, 0.40, False),
            ("measured", 1950.0, 0.44, False),
            ("measured", 1500.0, 5.00, True),
        ]
    )
    rows = summarize(frame).rows.set_index("metric")
    avg = rows.loc["avg_ms"]
    assert (avg["n_positive"], avg["n_saturated"], avg["saturated"]) == (2, 1, False)
    assert avg["mean"] == pytest.approx(0.42)
    assert avg["baseline_mean"] == pytest.approx(0.10)  # the unsaturated baseline only
    assert rows.loc["qps", "mean"] == pytest.approx(1970.0)
    assert avg["step_key"] == "c4-q2000"


def test_a_step_whose_every_run_is_saturated_is_averaged_and_marked() -> None:
    frame = _saturation_frame([("measured", 1500.0, 5.00, True), ("measured", 1400.0, 6.00, True)])
    avg = summarize(frame).rows.set_index("metric").loc["avg_ms"]
    assert (avg["n_positive"], avg["n_saturated"], avg["saturated"]) == (2, 2, True)
    assert avg["mean"] == pytest.approx(5.5)


@pytest.mark.postgres
def test_each_step_aggregates_on_its_own_with_its_cpu_per_1000(clean_results) -> None:
    from tests.results.ladder_data import DAY, load_ladder

    load_ladder(clean_results)
    summary = aggregate(clean_results, "local", DAY)
    rows = summary.rows.set_index(["load_profile_key", "metric"])
    assert set(summary.rows["load_profile_key"]) == {"q2000-c4-d60s", "q0-c16-d60s"}
    fixed = rows.loc["q2000-c4-d60s"]
    p99 = fixed.loc["p99_ms"]
    assert (p99["step_key"], p99["n_positive"], p99["n_saturated"], p99["saturated"]) == (
        "c4-q2000",
        2,
        1,
        False,
    )
    assert (p99["mean"], p99["baseline_mean"], p99["overhead"]) == pytest.approx((1.1, 0.32, 0.78))
    mesh, path = fixed.loc["cpu_mesh_per_1k"], fixed.loc["cpu_path_per_1k"]
    assert (mesh["n_positive"], mesh["mean"], mesh["baseline_mean"]) == pytest.approx((2, 225, 0))
    assert mesh["overhead"] == pytest.approx(225.0)  # measured minus the paired baseline
    assert (path["mean"], path["baseline_mean"], path["overhead"]) == pytest.approx((650, 250, 400))
    half = stats.t.ppf(0.975, 1) * stats.tstd([200.0, 250.0]) / math.sqrt(2)
    assert (mesh["ci_low"], mesh["ci_high"]) == pytest.approx((225 - half, 225 + half))
    closed_loop = rows.loc["q0-c16-d60s"]
    assert "cpu_mesh_per_1k" not in closed_loop.index  # no cost recorded at that step
    assert closed_loop.loc["qps", "mean"] == pytest.approx(6100.0)
    assert closed_loop.loc["qps", "step_key"] == "c16-max"
    with clean_results.connect() as connection:
        compared = connection.execute(
            text(
                "SELECT load_profile_key, step_key, n_positive, n_saturated, saturated, "
                "cpu_mesh_per_1k, cpu_path_added_vs_baseline FROM v_comparison ORDER BY 1"
            )
        ).all()
    assert [tuple(row) for row in compared] == [
        ("q0-c16-d60s", "c16-max", 2, 0, False, None, None),
        ("q2000-c4-d60s", "c4-q2000", 2, 1, False, pytest.approx(225), pytest.approx(400)),
    ]


@pytest.mark.postgres
def test_the_study_profile_keeps_its_key_and_is_marked_saturated(
    clean_results, seed_results_dir
) -> None:
    load_files(clean_results, [seed_results_dir])
    summary = aggregate(clean_results, "equinix-metal", date(2023, 11, 16))
    assert set(summary.rows["load_profile_key"]) == {"q6000-c1-d60s"}
    assert set(summary.rows["step_key"]) == {"c1-q6000"}
    # No study run reached its 6000 QPS target: all are saturated, so all are averaged.
    assert summary.rows["saturated"].all() and (summary.rows["n_saturated"] == 5).all()

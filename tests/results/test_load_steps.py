"""Load steps, saturation and component costs through the loader, and the ladder and cost
views as the reader role reads them."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest
from scipy import stats
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from meshbench.backend import MeasurementOutcome
from meshbench.local import resources
from meshbench.results import models
from meshbench.results.db import READER_ROLE
from meshbench.results.loader import (
    SATURATION_THRESHOLD,
    MeasurementRecord,
    cost_rows,
    is_saturated,
    load_run,
)
from meshbench.results.models import ComponentCost, Measurement, MeasurementCost, Run
from tests.results.ladder_data import DAY, fortio, load_ladder, step_context

pytestmark = pytest.mark.postgres


def reader_rows(engine, statement: str, **params):
    with engine.connect() as connection:
        connection.execute(text(f"SET ROLE {READER_ROLE}"))
        return connection.execute(text(statement), params).mappings().all()


def a_run(key: str, qps: int = 2000, connections: int = 4) -> Run:
    return Run(
        source_key=key,
        environment="lab",
        mesh="istio",
        benchmark_date=date(2026, 1, 2),
        qps=qps,
        connections=connections,
        duration_s=60,
        iterations=1,
        runs_per_iteration=2,
        started_at=datetime.now(UTC),
    )


def test_the_roles_are_those_the_local_accounting_names() -> None:
    assert set(models.PATH_ROLES) == set(resources.ROLES)
    assert set(models.MESH_ROLES) == set(resources.MESH_ROLES)
    assert SATURATION_THRESHOLD == 0.95


def test_saturation_is_a_target_missed_by_more_than_five_percent() -> None:
    assert is_saturated(1500.0, 2000.0)
    assert not is_saturated(1950.0, 2000.0)
    assert not is_saturated(1900.0, 2000.0)  # exactly 95 %: reached
    assert not is_saturated(1500.0, None)  # as fast as possible: nothing to miss
    assert not is_saturated(None, 2000.0)  # no result


def test_a_run_short_of_its_target_is_saturated_and_stays_positive(clean_results) -> None:
    records = [
        MeasurementRecord(
            1,
            "measured",
            index,
            MeasurementOutcome(
                raw_result=fortio(qps, 0.4, 1.0, 2000, 4), context={"step": step_context(1)}
            ),
        )
        for index, qps in ((1, 1500.0), (2, 1950.0))
    ]
    report = load_run(clean_results, a_run("test:saturated", qps=6000, connections=1), records)
    assert (report.positive, report.negative) == (2, 0)
    with Session(clean_results) as session:
        rows = session.scalars(select(Measurement).order_by(Measurement.run_index)).all()
    assert [(r.actual_qps, r.saturated, r.positive) for r in rows] == [
        (1500.0, True, True),
        (1950.0, False, True),
    ]
    # The step comes from the context, not from the run's own profile (q6000 c1).
    assert {(r.step_index, r.step_key, r.step_connections, r.step_target_qps) for r in rows} == {
        (1, "c4-q2000", 4, 2000.0)
    }


def test_without_a_recorded_step_the_run_profile_is_its_one_step(clean_results) -> None:
    for key, qps, expected in (
        ("test:fixed", 2000, ("c4-q2000", 2000.0, True)),
        ("test:max", 0, ("c4-max", None, False)),
    ):
        load_run(
            clean_results,
            a_run(key, qps=qps),
            [
                MeasurementRecord(
                    1, "measured", 1, MeasurementOutcome(fortio(1500.0, 0.4, 1, qps or None, 4))
                )
            ],
        )
        with Session(clean_results) as session:
            row = session.scalars(select(Measurement).join(Run).where(Run.source_key == key)).one()
        assert (row.step_index, row.step_key, row.step_target_qps, row.saturated) == (
            1,
            *expected,
        )
        assert row.step_connections == 4


def test_steps_keep_their_own_runs_and_reloading_changes_nothing(clean_results) -> None:
    first = load_ladder(clean_results)
    again = load_ladder(clean_results)
    assert (first.inserted, first.positive) == (7, 7)
    assert (again.inserted, again.already_loaded) == (0, 7)
    with clean_results.connect() as connection:
        counts = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM measurement), (SELECT count(*) FROM component_cost),"
                " (SELECT count(*) FROM measurement_cost)"
            )
        ).one()
        steps = connection.execute(
            text(
                "SELECT step_index, step_key, count(*) FROM measurement "
                "WHERE iteration = 1 AND phase = 'measured' AND run_index = 1 "
                "GROUP BY step_index, step_key ORDER BY step_index"
            )
        ).all()
    # Measured runs: load generator, nginx, two sidecars and the unattributed part; baselines:
    # load generator, nginx and the unattributed part.
    assert tuple(counts) == (7, 2 * 5 + 2 * 3, 4)
    assert [tuple(s) for s in steps] == [(1, "c4-q2000", 1), (2, "c16-max", 1)]


def test_known_process_times_give_known_cpu_per_1000_requests(clean_results) -> None:
    load_ladder(clean_results)
    with Session(clean_results) as session:
        measured = session.scalars(
            select(Measurement).where(
                Measurement.iteration == 1,
                Measurement.phase == "measured",
                Measurement.step_index == 1,
            )
        ).one()
        parts = {
            cost.component: cost
            for cost in session.scalars(
                select(ComponentCost).where(ComponentCost.measurement_id == measured.id)
            )
        }
        totals = session.get(MeasurementCost, measured.id)
    # 20 000 requests: the client sidecar's 3 s are 150 CPU-ms per 1000 requests.
    sidecar = parts["client-sidecar"]
    assert (sidecar.role, sidecar.source, sidecar.cluster) == ("client proxy", "proc", None)
    assert (sidecar.cpu_user_s, sidecar.cpu_system_s, sidecar.cpu_s) == pytest.approx((2, 1, 3))
    assert sidecar.cpu_ms_per_1000_requests == pytest.approx(150.0)
    assert sidecar.peak_memory_bytes == 30 << 20
    assert parts["load generator"].cpu_ms_per_1000_requests == pytest.approx(100.0)
    unattributed = parts["unattributed"]
    assert (unattributed.role, unattributed.source) == ("unattributed", "node")
    assert unattributed.cpu_user_s is None and unattributed.cpu_s == pytest.approx(4.0)
    assert unattributed.cpu_ms_per_1000_requests == pytest.approx(200.0)
    assert (totals.requests, totals.busy_cpu_s, totals.user_cpu_s) == (20_000, 12.0, 12.0)
    assert totals.attributed_share == pytest.approx(8 / 12, abs=1e-4)

    (per_run,) = reader_rows(
        clean_results, "SELECT * FROM v_measurement_cost WHERE measurement_id = :m", m=measured.id
    )
    assert per_run["mesh_cpu_s"] == pytest.approx(4.0)
    assert per_run["mesh_cpu_ms_per_1000_requests"] == pytest.approx(200.0)
    assert per_run["path_cpu_ms_per_1000_requests"] == pytest.approx(600.0)
    assert (per_run["attributed_cpu_s"], per_run["unattributed_cpu_s"]) == pytest.approx((8, 4))
    assert per_run["mesh_peak_memory_bytes"] == 50 << 20


def test_v_cost_gives_cpu_per_1000_by_role_with_the_mesh_and_the_path(clean_results) -> None:
    load_ladder(clean_results)
    rows = reader_rows(
        clean_results,
        "SELECT * FROM v_cost WHERE step_key = 'c4-q2000' AND NOT saturated ORDER BY phase, role",
    )
    measured = {row["role"]: row for row in rows if row["phase"] == "measured"}
    baseline = {row["role"]: row for row in rows if row["phase"] == "paired-baseline"}
    assert set(measured) == {
        "client proxy",
        "server proxy",
        "load generator",
        "server app",
        "unattributed",
        "mesh",
        "path",
    }
    expected = {
        "client proxy": 175.0,
        "server proxy": 50.0,
        "load generator": 100.0,
        "server app": 100.0,
        "unattributed": 225.0,
        "mesh": 225.0,
        "path": 650.0,
    }
    assert {role: row["cpu_ms_per_1000_requests"] for role, row in measured.items()} == (
        pytest.approx(expected)
    )
    assert {role for role, row in measured.items() if row["is_total"]} == {"mesh", "path"}
    mesh = measured["mesh"]
    assert mesh["n_runs"] == 2 and mesh["n_components"] == 2
    values = [200.0, 250.0]
    half = stats.t.ppf(0.975, 1) * stats.tstd(values) / math.sqrt(2)
    assert mesh["cpu_ms_per_1000_stddev"] == pytest.approx(stats.tstd(values))
    assert (mesh["cpu_ms_per_1000_ci_low"], mesh["cpu_ms_per_1000_ci_high"]) == pytest.approx(
        (225 - half, 225 + half), rel=1e-4
    )
    assert mesh["vcpu_per_1000_rps"] == pytest.approx(0.225)
    # The mesh's memory is its components' peaks summed per run: 50 and 56 MiB.
    assert (mesh["peak_memory_max_mb"], mesh["peak_memory_mean_mb"]) == pytest.approx((56, 53))
    proxy = measured["client proxy"]
    assert (proxy["peak_memory_max_mb"], proxy["peak_memory_mean_mb"]) == pytest.approx((34, 32))
    assert measured["path"]["peak_memory_max_mb"] is None
    # The paired baseline's path: nginx and wrk 4 s, the machine busy 5 s; no mesh.
    assert baseline["path"]["cpu_ms_per_1000_requests"] == pytest.approx(250.0)
    assert baseline["mesh"]["cpu_ms_per_1000_requests"] == pytest.approx(0.0)


def test_a_confidence_interval_of_five_runs_uses_student_t(clean_results) -> None:
    values = [100.0, 110.0, 120.0, 90.0, 105.0]
    records = []
    for index, ms in enumerate(values, start=1):
        seconds = ms * 20_000 / 1_000_000
        cost = {
            "requests": 20_000,
            "components": [
                {
                    "name": "tunnel",
                    "role": "tunnel",
                    "cpu_user_seconds": seconds,
                    "cpu_system_seconds": 0.0,
                    "cpu_seconds": seconds,
                    "peak_memory_bytes": None,
                }
            ],
            "machine": {"busy_seconds": 2 * seconds},
            "unattributed_cpu_seconds": seconds,
        }
        records.append(
            MeasurementRecord(
                index,
                "measured",
                1,
                MeasurementOutcome(fortio(1990.0, 0.4, 1.0, 2000, 4), context={"resources": cost}),
            )
        )
    load_run(clean_results, a_run("test:ci"), records)
    (mesh,) = reader_rows(clean_results, "SELECT * FROM v_cost WHERE role = 'mesh'")
    half = stats.t.ppf(0.975, 4) * stats.tstd(values) / math.sqrt(5)
    assert mesh["cpu_ms_per_1000_requests"] == pytest.approx(105.0)
    assert (mesh["cpu_ms_per_1000_ci_low"], mesh["cpu_ms_per_1000_ci_high"]) == pytest.approx(
        (105 - half, 105 + half), rel=1e-4
    )


def test_v_ladder_keeps_saturated_runs_apart_and_adds_over_the_paired_baseline(
    clean_results,
) -> None:
    load_ladder(clean_results)
    rows = reader_rows(
        clean_results,
        "SELECT * FROM v_ladder WHERE benchmark_date = :day ORDER BY step_index, saturated",
        day=DAY,
    )
    assert [(r["step_key"], r["saturated"], r["n_runs"]) for r in rows] == [
        ("c4-q2000", False, 2),
        ("c4-q2000", True, 1),
        ("c16-max", False, 2),
    ]
    reached, saturated, closed_loop = rows
    assert (reached["n_step_runs"], reached["n_step_saturated"]) == (3, 1)
    assert (reached["step_connections"], reached["step_target_qps"]) == (4, 2000.0)
    assert reached["achieved_qps"] == pytest.approx(1992.5)
    assert reached["achieved_share"] == pytest.approx(1992.5 / 2000)
    assert (reached["p50_ms"], reached["p99_ms"]) == pytest.approx((0.42, 1.10))
    assert (reached["n_baseline"], reached["baseline_saturated"]) == (2, False)
    assert (reached["baseline_p50_ms"], reached["baseline_p99_ms"]) == pytest.approx((0.11, 0.32))
    assert (reached["p50_added_ms"], reached["p99_added_ms"]) == pytest.approx((0.31, 0.78))
    assert reached["mesh_cpu_ms_per_1000_requests"] == pytest.approx(225.0)
    assert reached["path_cpu_ms_per_1000_requests"] == pytest.approx(650.0)
    assert saturated["p99_ms"] == pytest.approx(5.0)
    assert saturated["p99_added_ms"] == pytest.approx(5.0 - 0.32)
    assert closed_loop["step_target_qps"] is None and closed_loop["achieved_share"] is None
    assert closed_loop["achieved_qps"] == pytest.approx(6100.0)
    assert closed_loop["n_baseline"] is None and closed_loop["p99_added_ms"] is None


def test_a_malformed_cost_record_is_left_out_and_the_run_kept(clean_results, caplog) -> None:
    bad = {"requests": 100, "components": [{"name": "x", "role": "sidecar", "cpu_seconds": 1}]}
    report = load_run(
        clean_results,
        a_run("test:bad-cost"),
        [
            MeasurementRecord(
                1,
                "measured",
                1,
                MeasurementOutcome(fortio(1990.0, 0.4, 1.0, 2000, 4), context={"resources": bad}),
            )
        ],
    )
    assert report.positive == 1
    assert "cost record not stored" in caplog.text
    with clean_results.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM component_cost")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM measurement_cost")).scalar() == 0


def test_a_kubernetes_cost_record_names_its_source_and_cluster() -> None:
    record = {
        "requests": 1000,
        "source": "metrics-server",
        "components": [
            {
                "name": "istio-proxy",
                "role": "client proxy",
                "cluster": "client",
                "cpu_user_seconds": None,
                "cpu_system_seconds": None,
                "cpu_seconds": 0.5,
                "peak_memory_bytes": 1 << 26,
            },
            {
                "name": "istio-proxy",
                "role": "server proxy",
                "cluster": "server",
                "cpu_user_seconds": None,
                "cpu_system_seconds": None,
                "cpu_seconds": 0.25,
                "peak_memory_bytes": None,
            },
        ],
        "machine": {"busy_seconds": 2.0},
        "unattributed_cpu_seconds": 0.5,
    }
    totals, rows = cost_rows(record)
    assert totals["busy_cpu_s"] == 2.0 and totals["softirq_cpu_s"] is None
    assert [
        (r["cluster"], r["role"], r["source"], r["cpu_ms_per_1000_requests"]) for r in rows
    ] == [
        ("client", "client proxy", "metrics-server", 500.0),
        ("server", "server proxy", "metrics-server", 250.0),
        (None, "unattributed", "node", 500.0),
    ]


def test_step_and_context_must_agree() -> None:
    with pytest.raises(ValueError, match="step 2 disagrees"):
        MeasurementRecord(
            1, "measured", 1, MeasurementOutcome(None, context={"step": step_context(1)}), step=2
        )

"""Every SQL example of docs/analysts.md runs as the reader role on the study's data."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from meshbench.analysis.aggregate import aggregate
from meshbench.results.db import READER_ROLE
from meshbench.results.loader import load_files

pytestmark = pytest.mark.postgres

GUIDE = Path(__file__).parents[2] / "docs" / "analysts.md"
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)
# The study's Equinix Metal table: QPS, avg, p90, p99, p99.9 (ms).
STUDY_TABLE = {
    "istio": (1864.44, 0.53, 0.57, 0.68, 0.95),
    "kuma": (4538.77, 0.22, 0.25, 0.29, 2.55),
    "nsm": (5148.70, 0.19, 0.24, 0.29, 1.04),
}
STUDY_LABELS = {"Istio": "istio", "Kuma": "kuma", "NSM vl3": "nsm"}


def sql_examples() -> list[str]:
    statements = []
    for block in SQL_BLOCK.findall(GUIDE.read_text()):
        statements += [part.strip() for part in block.split(";") if part.strip()]
    return statements


def run_as_reader(engine, statement: str):
    with engine.connect() as connection:
        connection.execute(text(f"SET ROLE {READER_ROLE}"))
        return connection.execute(text(statement)).mappings().all()


@pytest.fixture
def study_database(clean_results, seed_results_dir):
    load_files(clean_results, [seed_results_dir])
    aggregate(clean_results, "equinix-metal", date(2023, 11, 16), store=True)
    return clean_results


def test_the_guide_has_sql_examples() -> None:
    assert len(sql_examples()) >= 8


def test_every_example_runs_as_the_reader(study_database) -> None:
    for statement in sql_examples():
        run_as_reader(study_database, statement)  # raises on any error


def test_the_study_table_queries_reproduce_the_study(study_database) -> None:
    (from_summaries,) = [s for s in sql_examples() if "-- study table: equinix-metal" in s]
    rows = run_as_reader(study_database, from_summaries)
    measured = {
        STUDY_LABELS[row["mesh"]]: tuple(
            float(row[c]) for c in ("QPS", "avg", "p90", "p99", "p99.9")
        )
        for row in rows
    }
    assert measured == STUDY_TABLE
    assert [row["mesh"] for row in rows] == ["Istio", "Kuma", "NSM vl3"]

    (from_runs,) = [s for s in sql_examples() if "-- study table from runs" in s]
    rows = run_as_reader(study_database, from_runs)
    assert {
        row["mesh"]: tuple(float(row[c]) for c in ("QPS", "avg", "p90", "p99", "p99.9"))
        for row in rows
    } == STUDY_TABLE
    assert {row["n"] for row in rows} == {5}


def tagged(tag: str) -> str:
    (statement,) = [s for s in sql_examples() if f"-- {tag}" in s]
    return statement


@pytest.fixture
def ladder_database(study_database):
    from tests.results.ladder_data import DAY, ENVIRONMENT, load_ladder

    load_ladder(study_database)
    aggregate(study_database, ENVIRONMENT, DAY, store=True)
    return study_database


def test_the_ladder_and_cost_queries_give_the_ladder_s_numbers(ladder_database) -> None:
    # tests/results/ladder_data.py: envoy-mtls at c4-q2000 (two runs reach the target, one
    # is saturated) and c16-max, with known process and machine times.
    rows = run_as_reader(ladder_database, tagged("ladder: latency against achieved rate"))
    assert [
        (r["step_key"], r["saturated"], r["n_runs"], float(r["achieved_qps"]), float(r["p99_ms"]))
        for r in rows
    ] == [
        ("c4-q2000", False, 2, 1992.5, 1.1),
        ("c16-max", False, 2, 6100.0, 3.2),
        ("c4-q2000", True, 1, 1500.0, 5.0),
    ]
    assert rows[0]["n_step_saturated"] == 1

    (added,) = run_as_reader(ladder_database, tagged("ladder: added p99 at a fixed rate"))
    assert (added["mesh"], added["n_runs"], added["n_baseline"]) == ("envoy-mtls", 2, 2)
    assert (float(added["p99_added_ms"]), float(added["p50_added_ms"])) == (0.78, 0.31)

    rows = run_as_reader(ladder_database, tagged("cost: mesh CPU per 1000 requests by role"))
    assert [(r["role"], float(r["cpu_ms_per_1000"])) for r in rows] == [
        ("client proxy", 175.0),
        ("server proxy", 50.0),
        ("mesh", 225.0),
        ("path", 650.0),
    ]
    assert float(rows[2]["vcpu_per_1000_rps"]) == 0.225
    assert float(rows[2]["peak_memory_max_mb"]) == 56.0

    (cost,) = run_as_reader(ladder_database, tagged("cost: CPU added over the paired baseline"))
    assert (cost["step_key"], float(cost["path_cpu_ms_per_1000"])) == ("c4-q2000", 650.0)
    assert float(cost["path_cpu_ms_added"]) == 400.0

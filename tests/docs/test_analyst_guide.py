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

"""A results database for the page: the study's Equinix results and a synthetic history."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine

from meshbench.analysis.aggregate import aggregate
from meshbench.analysis.regression import detect_dates
from meshbench.config import RegressionSettings
from meshbench.results import migrate
from meshbench.results.loader import load_files
from meshbench.testing.histories import day_of, insert_history, synthetic_days

SYNTHETIC = "synthetic"
HISTORY_DAYS = 30
VERSION_CHANGE_DAY = 22  # Istio 1.19.3 -> 1.20.0, and p99 10 % higher from that day on


@dataclass(frozen=True)
class PageDatabase:
    url: str


@pytest.fixture(scope="module")
def page_database(fresh_database, request) -> Iterator[PageDatabase]:
    """A migrated database holding what the page shows, aggregated and checked for changes.

    ``equinix-metal``: the study's 15 published Fortio results (2023-11-16). ``synthetic``:
    30 days of generated Istio and Kuma runs (labelled synthetic in every row), with a
    mesh-version change that brings a 10 % step, and a few negative runs.
    """
    url = fresh_database("meshbench_page")
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        load_files(engine, [request.config.rootpath / "tests/data/seed-results"])
        istio = synthetic_days(
            21,
            days=HISTORY_DAYS,
            step_after_day=VERSION_CHANGE_DAY - 1,
            step=0.10,
            versions={1: "1.19.3", VERSION_CHANGE_DAY: "1.20.0"},
        )
        kuma = synthetic_days(22, days=HISTORY_DAYS, level=0.29, versions={1: "2.4.3"})
        negative = {
            day_of(27): "fortio: connection refused after 12 s (the mesh was still starting)",
            day_of(29): "duration 55.1 s is 8.2 % off the requested 60 s",
        }
        insert_history(engine, istio, environment=SYNTHETIC, mesh="istio", negative=negative)
        insert_history(engine, kuma, environment=SYNTHETIC, mesh="kuma")
        aggregate(engine)
        detect_dates(
            engine,
            RegressionSettings(),
            SYNTHETIC,
            [day_of(n) for n in range(1, HISTORY_DAYS + 1)],
        )
    finally:
        engine.dispose()
    yield PageDatabase(url=url)

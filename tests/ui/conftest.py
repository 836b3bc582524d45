"""A results database for the page: the study's Equinix results, a synthetic history and a
local load ladder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from meshbench.analysis.aggregate import aggregate
from meshbench.analysis.regression import detect_dates
from meshbench.backend import MeasurementOutcome
from meshbench.config import RegressionSettings
from meshbench.results import migrate
from meshbench.results.loader import MeasurementRecord, load_files, load_run
from meshbench.testing.histories import day_of, insert_history, synthetic_days
from tests.results import ladder_data

SYNTHETIC = "synthetic"
HISTORY_DAYS = 30
VERSION_CHANGE_DAY = 22  # Istio 1.19.3 -> 1.20.0, and p99 10 % higher from that day on
LADDER_ENVIRONMENT = ladder_data.ENVIRONMENT
LADDER_DAY = ladder_data.DAY
# The no-mesh run beside tests/results/ladder_data.py's envoy-mtls ladder, on its steps:
# (step, iteration) -> (actual QPS, p50 ms, p99 ms); step 1 carries the paired baselines'
# cost records (nginx only).
BASELINE_LADDER_RUNS = {
    (1, 1): (2000.0, 0.08, 0.28),
    (1, 2): (2000.0, 0.10, 0.31),
    (2, 1): (30000.0, 0.50, 1.50),
    (2, 2): (32000.0, 0.52, 1.60),
}


@dataclass(frozen=True)
class PageDatabase:
    url: str


def _baseline_ladder_records() -> list[MeasurementRecord]:
    records = []
    for (step, iteration), (qps, p50, p99) in BASELINE_LADDER_RUNS.items():
        _key, connections, target = ladder_data.STEPS[step]
        context: dict[str, Any] = {
            "step": ladder_data.step_context(step),
            "load_generator": "wrk 4.2.0",
        }
        if step == 1:
            context["resources"] = ladder_data.COSTS[iteration][1]
        raw = ladder_data.fortio(qps, p50, p99, target, connections)
        records.append(
            MeasurementRecord(
                iteration=iteration,
                phase="measured",
                run_index=1,
                step=step,
                outcome=MeasurementOutcome(raw_result=raw, context=context),
            )
        )
    return records


def load_local_ladder(engine: Engine) -> None:
    """The envoy-mtls ladder of tests/results/ladder_data.py and a no-mesh run beside it."""
    ladder_data.load_ladder(engine)
    baseline = ladder_data.ladder_run("test:ladder-baseline")
    baseline.mesh = "baseline"
    baseline.iterations = 2
    load_run(engine, baseline, _baseline_ladder_records())


@pytest.fixture(scope="module")
def page_database(fresh_database, request) -> Iterator[PageDatabase]:
    """A migrated database holding what the page shows, aggregated and checked for changes.

    ``equinix-metal``: the study's 15 published Fortio results (2023-11-16). ``synthetic``:
    30 days of generated Istio and Kuma runs (labelled synthetic in every row), with a
    mesh-version change that brings a 10 % step, and a few negative runs. ``local``: on
    2026-03-01 an envoy-mtls ladder of two steps (one run saturated) and a no-mesh run on
    the same steps (see ``load_local_ladder``).
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
        load_local_ladder(engine)
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

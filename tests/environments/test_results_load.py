"""A run_load outcome from the Fortio path goes through the real loader into Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from meshbench.backend import PHASE_MEASURED
from meshbench.results.loader import MeasurementRecord, load_run
from meshbench.results.models import HistogramBucket, Measurement, ResourceSample, Run

from .conftest import SEED, World
from .test_existing_baseline_run import prepare_iteration

pytestmark = pytest.mark.postgres


def test_loaded_rows_match_the_study_file_fortio_served(world: World, clean_results):
    prepare_iteration(world)
    outcome = world.backend.run_load(world.ctx, 1, PHASE_MEASURED, 1)
    assert outcome.failure is None, outcome.failure
    # The fake served the study's file for this run id; find it by its histogram.
    files = sorted((SEED / "imp").glob("*.json"))
    served = next(
        json.loads(f.read_text())
        for f in files
        if json.loads(f.read_text())["DurationHistogram"] == outcome.raw_result["DurationHistogram"]
    )
    ctx, load = world.ctx, world.ctx.load
    run = Run(
        source_key=f"{ctx.dag_id}/{ctx.run_id}",
        environment=ctx.environment,
        mesh=ctx.mesh,
        benchmark_date=datetime(2026, 11, 26, tzinfo=UTC).date(),
        qps=load.qps,
        connections=load.connections,
        duration_s=load.duration,
        iterations=load.iterations,
        runs_per_iteration=load.runs_per_iteration,
        started_at=datetime.now(UTC),
        dag_id=ctx.dag_id,
        dag_run_id=ctx.run_id,
        settings=world.backend.run_info(ctx),
    )
    report = load_run(clean_results, run, [MeasurementRecord(1, PHASE_MEASURED, 1, outcome)])
    assert report.inserted == 1 and report.positive == 1, report.negatives

    histogram = served["DurationHistogram"]
    percentiles = {p["Percentile"]: p["Value"] for p in histogram["Percentiles"]}
    with Session(clean_results) as session:
        row = session.execute(select(Measurement)).scalars().one()
        buckets = session.execute(select(HistogramBucket)).scalars().all()
        samples = session.execute(select(ResourceSample)).scalars().all()
    assert row.positive and row.reason is None
    assert row.request_count == histogram["Count"]
    assert row.actual_qps == pytest.approx(served["ActualQPS"])
    assert row.avg_ms == pytest.approx(histogram["Avg"] * 1000)
    assert row.p50_ms == pytest.approx(percentiles[50] * 1000)
    assert row.p99_ms == pytest.approx(percentiles[99] * 1000)
    assert row.p999_ms == pytest.approx(percentiles[99.9] * 1000)
    assert row.socket_count == served["SocketCount"]
    assert len(buckets) == len(histogram["Data"])
    assert sum(bucket.count for bucket in buckets) == histogram["Count"]
    assert len(samples) == len(outcome.resource_samples) > 0
    nginx = next(sample for sample in samples if sample.container == "nginx")
    assert nginx.cpu_limit_millicores == 2000 and nginx.cluster == "server"

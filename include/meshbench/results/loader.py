"""Fortio-shaped results -> rows, in one transaction per load.

Two entry points:

- ``load_run`` for the pipeline: a run and its measurement outcomes. A malformed or failed
  result becomes a negative measurement with its reason; the raw result is kept.
- ``load_files`` for ``meshbench load``: result files laid out as
  ``<environment>-<YYYY-MM-DD>/<mesh>/<file>.json`` (the study's layout). A malformed file is
  an error naming the file and field, and nothing of that load is written.

Loading the same thing twice changes nothing: runs are keyed by ``source_key`` and
measurements by (run, iteration, phase, run index).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from meshbench.backend import PHASE_MEASURED, PHASES, MeasurementOutcome
from meshbench.results.fortio import (
    DEFAULT_DURATION_TOLERANCE,
    FortioResult,
    ResultFormatError,
    decode_result,
    judge,
    parse_result,
    reported_error,
)
from meshbench.results.models import HistogramBucket, Measurement, ResourceSample, Run

log = logging.getLogger(__name__)

# The study's folder names for its meshes, with the versions it measured.
STUDY_MESH_ALIASES: dict[str, tuple[str, str | None]] = {
    "imp": ("istio", "1.19.3"),
    "kmz": ("kuma", "2.4.3"),
    "nsmvl3": ("nsm", "1.11.1"),
}
_FOLDER = re.compile(r"^(?P<environment>[a-z0-9][a-z0-9-]*?)-(?P<date>\d{4}-\d{2}-\d{2})$")
_FILE = re.compile(r"-(?P<iteration>\d{2,})-(?P<run>\d{2,})-(?P<port>\d+)\.json$")


@dataclass(frozen=True)
class MeasurementRecord:
    iteration: int
    phase: str
    run_index: int
    outcome: MeasurementOutcome
    # The load step (1-based) of the profile's ladder; a one-step profile has step 1.
    step: int = 1
    failed_task: str | None = None
    artifact_uri: str | None = None
    source: str = "result"

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase {self.phase!r} is not one of {', '.join(PHASES)}")
        if self.iteration < 1 or self.run_index < 1:
            raise ValueError("iteration and run_index start at 1")


@dataclass
class LoadReport:
    run_id: int
    attempt: int
    created_run: bool
    inserted: int = 0
    already_loaded: int = 0
    positive: int = 0
    negative: int = 0
    negatives: list[str] = field(default_factory=list)


def _lock_key(run: Run) -> str:
    return f"meshbench:{run.environment}:{run.mesh}:{run.benchmark_date.isoformat()}"


def _column_values(run: Run) -> dict[str, Any]:
    """The columns a transient ``Run`` sets; the rest take the model's defaults."""
    unset = {"id", "attempt"}
    return {
        column.key: getattr(run, column.key)
        for column in Run.__table__.columns
        if column.key not in unset and getattr(run, column.key) is not None
    }


def _upsert_run(connection: Connection, run: Run) -> tuple[int, int, bool]:
    existing = connection.execute(
        select(Run.id, Run.attempt).where(Run.source_key == run.source_key)
    ).first()
    if existing is not None:
        changes: dict[str, Any] = {}
        if run.state not in (None, "running"):
            changes["state"] = run.state
        if run.finished_at is not None:
            changes["finished_at"] = run.finished_at
        if run.cluster_minutes is not None:
            changes["cluster_minutes"] = run.cluster_minutes
        if run.settings:
            changes["settings"] = run.settings
        if changes:
            connection.execute(update(Run).where(Run.id == existing.id).values(**changes))
        return existing.id, existing.attempt, False
    # Serialise attempt numbering for one environment × mesh × date.
    connection.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": _lock_key(run)}
    )
    latest = connection.execute(
        select(func.max(Run.attempt)).where(
            Run.environment == run.environment,
            Run.mesh == run.mesh,
            Run.benchmark_date == run.benchmark_date,
        )
    ).scalar()
    attempt = (latest or 0) + 1
    run_id = connection.execute(
        insert(Run).values(**_column_values(run), attempt=attempt).returning(Run.id)
    ).scalar_one()
    return run_id, attempt, True


def _evaluate(record: MeasurementRecord, tolerance: float) -> tuple[FortioResult | None, list[str]]:
    """The parsed result (if usable) and every reason the measurement is negative."""
    reasons: list[str] = []
    if record.outcome.failure:
        reasons.append(record.outcome.failure)
    raw = record.outcome.raw_result
    if raw is None:
        if not reasons:
            reasons.append("no result was produced")
        return None, reasons
    reported = reported_error(raw)
    if reported:
        reasons.append(reported)
        return None, reasons
    try:
        result = parse_result(raw, record.source)
    except ResultFormatError as exc:
        reasons.append(f"malformed result: {exc}")
        return None, reasons
    reasons.extend(judge(result, tolerance).reasons)
    return result, reasons


def negative_reason(record: MeasurementRecord, tolerance: float) -> str | None:
    """Why the measurement is negative, or None when it is positive (as it would load)."""
    return "; ".join(_evaluate(record, tolerance)[1]) or None


def _measurement_values(result: FortioResult | None) -> dict[str, Any]:
    if result is None:
        return {}
    histogram = result.DurationHistogram
    has_requests = histogram.Count > 0
    values: dict[str, Any] = {
        "started_at": result.StartTime,
        "requested_qps": result.requested_qps,
        "requested_duration_s": result.requested_duration_s,
        "actual_qps": result.ActualQPS,
        "actual_duration_s": result.actual_duration_s,
        "connections": result.NumConnections,
        "request_count": histogram.Count,
        "error_count": result.ErrorsDurationHistogram.Count,
        "socket_count": result.SocketCount,
        "ret_codes": result.RetCodes,
    }
    if has_requests:
        values |= {
            "avg_ms": histogram.Avg * 1000.0,
            "stddev_ms": histogram.StdDev * 1000.0,
            "min_ms": histogram.Min * 1000.0,
            "max_ms": histogram.Max * 1000.0,
            "p50_ms": result.percentile_ms(50),
            "p75_ms": result.percentile_ms(75),
            "p90_ms": result.percentile_ms(90),
            "p99_ms": result.percentile_ms(99),
            "p999_ms": result.percentile_ms(99.9),
            "p9999_ms": result.percentile_ms(99.99),
        }
    return values


def _insert_measurement(
    connection: Connection, run_id: int, record: MeasurementRecord, tolerance: float
) -> tuple[bool, bool, str | None]:
    """Insert one measurement; returns (inserted, positive, reason)."""
    result, reasons = _evaluate(record, tolerance)
    reason = "; ".join(reasons) if reasons else None
    outcome = record.outcome
    generator = (outcome.context or {}).get("load_generator")
    statement = (
        pg_insert(Measurement)
        .values(
            run_id=run_id,
            iteration=record.iteration,
            phase=record.phase,
            run_index=record.run_index,
            positive=reason is None,
            reason=reason,
            failed_task=record.failed_task,
            raw=outcome.raw_result,
            artifact_uri=record.artifact_uri,
            context=outcome.context or {},
            load_generator=str(generator) if generator else None,
            **_measurement_values(result),
        )
        .on_conflict_do_nothing(index_elements=["run_id", "iteration", "phase", "run_index"])
        .returning(Measurement.id)
    )
    measurement_id = connection.execute(statement).scalar()
    if measurement_id is None:
        return False, reason is None, reason
    if result is not None and result.DurationHistogram.Data:
        connection.execute(
            insert(HistogramBucket),
            [
                {
                    "measurement_id": measurement_id,
                    "bucket_index": index,
                    "start_ms": bucket.Start * 1000.0,
                    "end_ms": bucket.End * 1000.0,
                    "count": bucket.Count,
                    "cumulative_percent": bucket.Percent,
                }
                for index, bucket in enumerate(result.DurationHistogram.Data)
            ],
        )
    if outcome.resource_samples:
        connection.execute(
            insert(ResourceSample),
            [{"measurement_id": measurement_id, **sample} for sample in outcome.resource_samples],
        )
    return True, reason is None, reason


def load_run(
    engine: Engine,
    run: Run,
    measurements: Sequence[MeasurementRecord] = (),
    duration_tolerance: float = DEFAULT_DURATION_TOLERANCE,
) -> LoadReport:
    """Store a run and its measurements in one transaction; re-loading is a no-op."""
    with engine.begin() as connection:
        return _load_run(connection, run, measurements, duration_tolerance)


def _load_run(
    connection: Connection,
    run: Run,
    measurements: Sequence[MeasurementRecord],
    duration_tolerance: float,
) -> LoadReport:
    run_id, attempt, created = _upsert_run(connection, run)
    report = LoadReport(run_id=run_id, attempt=attempt, created_run=created)
    for record in measurements:
        inserted, positive, reason = _insert_measurement(
            connection, run_id, record, duration_tolerance
        )
        if not inserted:
            report.already_loaded += 1
            continue
        report.inserted += 1
        if positive:
            report.positive += 1
        else:
            report.negative += 1
            report.negatives.append(
                f"iteration {record.iteration} {record.phase} run {record.run_index}: {reason}"
            )
    return report


# ---------------------------------------------------------------------------- files


@dataclass(frozen=True)
class ResultFile:
    path: Path
    environment: str
    benchmark_date: date
    mesh: str
    mesh_version: str | None
    iteration: int
    run_index: int
    document: dict[str, Any]
    result: FortioResult


def iter_result_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files.extend(sorted(path.rglob("*.json")))
        elif path.is_file():
            files.append(path)
        else:
            raise ResultFormatError(f"{path}: no such file or folder")
    if not files:
        raise ResultFormatError("no result files (*.json) found in " + ", ".join(map(str, paths)))
    return files


def describe_file(
    path: Path,
    environment: str | None = None,
    benchmark_date: date | None = None,
    mesh: str | None = None,
) -> ResultFile:
    """Parse one file and tell its environment, date, mesh, iteration and run from its path."""
    source = str(path)
    try:
        text_content = path.read_bytes()
    except OSError as exc:
        raise ResultFormatError(f"{source}: cannot read: {exc.strerror}") from None
    document = decode_result(text_content, source)
    error = reported_error(document)
    if error:
        raise ResultFormatError(f"{source}: not a completed run: {error}")
    result = parse_result(document, source)

    mesh_folder = path.parent.name
    folder = _FOLDER.match(path.parent.parent.name)
    if environment is None or benchmark_date is None:
        if folder is None:
            raise ResultFormatError(
                f"{source}: cannot tell environment and date from the folder "
                f"{path.parent.parent.name!r} (expected <environment>-<YYYY-MM-DD>); "
                f"pass --environment and --date"
            )
        environment = environment or folder["environment"]
        benchmark_date = benchmark_date or date.fromisoformat(folder["date"])
    mesh_name, mesh_version = STUDY_MESH_ALIASES.get(mesh_folder, (mesh_folder, None))
    if mesh is not None:
        mesh_name, mesh_version = mesh, None
    position = _FILE.search(path.name)
    if position is None:
        raise ResultFormatError(
            f"{source}: cannot tell iteration and run from the file name (expected it to end "
            f"in -<iteration>-<run>-<port>.json)"
        )
    return ResultFile(
        path=path,
        environment=environment,
        benchmark_date=benchmark_date,
        mesh=mesh_name,
        mesh_version=mesh_version,
        iteration=int(position["iteration"]),
        run_index=int(position["run"]),
        document=document,
        result=result,
    )


def load_files(
    engine: Engine,
    paths: Iterable[str | Path],
    environment: str | None = None,
    benchmark_date: date | None = None,
    mesh: str | None = None,
    duration_tolerance: float = DEFAULT_DURATION_TOLERANCE,
) -> list[LoadReport]:
    """Load result files in one transaction; any malformed file aborts the whole load."""
    files = iter_result_files(paths)
    described: list[ResultFile] = []
    problems: list[str] = []
    for path in files:
        try:
            described.append(describe_file(path, environment, benchmark_date, mesh))
        except ResultFormatError as exc:
            problems.append(str(exc))
    if problems:
        raise ResultFormatError("\n".join(problems))

    groups: dict[tuple[str, date, str, str | None], list[ResultFile]] = defaultdict(list)
    for item in described:
        groups[(item.environment, item.benchmark_date, item.mesh, item.mesh_version)].append(item)

    reports = []
    with engine.begin() as connection:
        for (env, day, mesh_name, version), items in sorted(groups.items(), key=str):
            first = min(items, key=lambda item: item.result.StartTime)
            last = max(items, key=lambda item: item.result.StartTime)
            run = Run(
                source_key=f"import:{env}-{day.isoformat()}/{mesh_name}",
                environment=env,
                mesh=mesh_name,
                mesh_version=version,
                benchmark_date=day,
                qps=int(first.result.requested_qps or 0),
                connections=first.result.NumConnections or 1,
                duration_s=first.result.requested_duration_s or first.result.actual_duration_s,
                iterations=max(item.iteration for item in items),
                runs_per_iteration=max(item.run_index for item in items),
                started_at=first.result.StartTime,
                finished_at=last.result.StartTime
                + timedelta(seconds=last.result.actual_duration_s),
                state="imported",
                purpose="imported",
                settings={"imported_from": str(first.path.parent)},
            )
            records = [
                MeasurementRecord(
                    iteration=item.iteration,
                    phase=PHASE_MEASURED,
                    run_index=item.run_index,
                    outcome=MeasurementOutcome(
                        raw_result=item.document,
                        context={"load_generator": f"fortio {item.result.Version or ''}".strip()},
                    ),
                    artifact_uri=item.path.resolve().as_uri(),
                    source=str(item.path),
                )
                for item in sorted(items, key=lambda item: (item.iteration, item.run_index))
            ]
            reports.append(_load_run(connection, run, records, duration_tolerance))
    return reports


def positive_measured_count(engine: Engine, run_id: int) -> int:
    """How many measured (not warm-up, not paired-baseline) runs of the run are positive."""
    with engine.connect() as connection:
        return connection.execute(
            select(func.count())
            .select_from(Measurement)
            .where(
                Measurement.run_id == run_id,
                Measurement.phase == PHASE_MEASURED,
                Measurement.positive,
            )
        ).scalar_one()


class RunVerdict(NamedTuple):
    positive_measured: int
    state: str  # success or failed


def run_state(positive_measured: int, min_positive: int, stopped: bool = False) -> str:
    """``success`` when at least ``min_positive`` measured runs are positive and nothing
    stopped the run from outside, else ``failed``: the one rule for every kind of run."""
    return "success" if positive_measured >= min_positive and not stopped else "failed"


def judge_run(engine: Engine, run_id: int, min_positive: int, stopped: bool = False) -> RunVerdict:
    """Record the run's state (``run_state``), whichever way the run was made: a DAG run, a
    backfill, ``meshbench local run --load``."""
    positive = positive_measured_count(engine, run_id)
    state = run_state(positive, min_positive, stopped)
    with engine.begin() as connection:
        connection.execute(update(Run).where(Run.id == run_id).values(state=state))
    return RunVerdict(positive, state)

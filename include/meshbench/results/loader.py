"""Fortio-shaped results -> rows, in one transaction per load.

Two entry points:

- ``load_run`` for the pipeline: a run and its measurement outcomes. A malformed or failed
  result becomes a negative measurement with its reason; the raw result is kept.
- ``load_files`` for ``meshbench load``: result files laid out as
  ``<environment>-<YYYY-MM-DD>/<mesh>/<file>.json`` (the study's layout). A malformed file is
  an error naming the file and field, and nothing of that load is written.

Loading the same thing twice changes nothing: runs are keyed by ``source_key`` and
measurements by (run, iteration, load step, phase, run index).

Each measurement records its load step (``MeasurementRecord.step`` and the step the pipeline
writes into ``context["step"]``; without one, the run's own profile is its one step) and
whether it was saturated: the load generator paced at a target rate and the run achieved
less than ``SATURATION_THRESHOLD`` of it. Saturation does not make a run negative: a saturated
run is kept and shown, positive or negative on its own merits, and the aggregation never averages
it with unsaturated runs of its step.

What each component cost (``context["resources"]``, the shape of
``meshbench.local.resources.account``, which Kubernetes runs produce too) becomes
``component_cost`` rows, one per component plus the unattributed part, and the run's
totals a ``measurement_cost`` row.
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
from meshbench.results.models import (
    COST_SOURCES,
    PATH_ROLES,
    UNATTRIBUTED_ROLE,
    ComponentCost,
    HistogramBucket,
    Measurement,
    MeasurementCost,
    ResourceSample,
    Run,
)

log = logging.getLogger(__name__)

# The study's folder names for its meshes, with the versions it measured.
STUDY_MESH_ALIASES: dict[str, tuple[str, str | None]] = {
    "imp": ("istio", "1.19.3"),
    "kmz": ("kuma", "2.4.3"),
    "nsmvl3": ("nsm", "1.11.1"),
}
_FOLDER = re.compile(r"^(?P<environment>[a-z0-9][a-z0-9-]*?)-(?P<date>\d{4}-\d{2}-\d{2})$")
_FILE = re.compile(r"-(?P<iteration>\d{2,})-(?P<run>\d{2,})-(?P<port>\d+)\.json$")
# A run with a target rate that achieved less than this share of it is saturated: the path
# (or the load generator) could not keep up, so its latency is queueing at capacity rather
# than latency at that rate. The 5 % margin leaves a rate-controlled generator room for its
# own small shortfall (start-up, the last requests of the run) on a target it did reach.
SATURATION_THRESHOLD = 0.95
# Where a component's CPU figures come from when the cost record does not say.
DEFAULT_COST_SOURCE = "proc"
MACHINE_COST_SOURCE = "node"


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
        if self.iteration < 1 or self.run_index < 1 or self.step < 1:
            raise ValueError("iteration, run_index and step start at 1")
        described = (self.outcome.context or {}).get("step") or {}
        if described.get("index") is not None and int(described["index"]) != self.step:
            raise ValueError(
                f"step {self.step} disagrees with the step its context records "
                f"({described['index']})"
            )


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


def step_key(connections: int, target_qps: float | None) -> str:
    """A step's name as ``LoadStep.key`` spells it: ``c4-max``, ``c16-q2000``."""
    if not target_qps:
        return f"c{int(connections)}-max"
    rate = int(target_qps) if float(target_qps).is_integer() else target_qps
    return f"c{int(connections)}-q{rate}"


def step_values(record: MeasurementRecord, run: Run) -> dict[str, Any]:
    """The measurement's load step: from ``context["step"]`` as the pipeline records it,
    else the run's own profile as its one step (older artifacts, imported results)."""
    described = (record.outcome.context or {}).get("step") or {}
    connections = described.get("connections") or run.connections
    # A recorded target of None (or a profile rate of 0) is as fast as possible.
    target = described.get("target_qps", run.qps)
    target = float(target) if target else None
    return {
        "step_index": record.step,
        "step_key": described.get("key") or step_key(connections, target),
        "step_connections": int(connections),
        "step_target_qps": target,
    }


def is_saturated(actual_qps: float | None, target_qps: float | None) -> bool:
    """The run was paced at ``target_qps`` and achieved less than ``SATURATION_THRESHOLD``
    of it."""
    if target_qps is None or actual_qps is None:
        return False
    return actual_qps < SATURATION_THRESHOLD * target_qps


def _number(value: Any, what: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{what} is {value!r}, not a non-negative number")
    return float(value)


def cost_rows(resources: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``measurement_cost`` totals and ``component_cost`` rows of a run's cost record
    (the shape of ``meshbench.local.resources.account``); ValueError if it is malformed.

    Optional keys beyond that shape: ``source`` on the record or a component (``proc``,
    ``metrics-server``; default ``proc``) and ``cluster`` on a component.
    """
    requests = resources.get("requests")
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 0:
        raise ValueError(f"requests is {requests!r}, not a count")

    def per_1000(seconds: float) -> float | None:
        return seconds * 1_000_000 / requests if requests > 0 else None

    default_source = resources.get("source") or DEFAULT_COST_SOURCE
    merged: dict[tuple[str | None, str, str], dict[str, Any]] = {}
    for component in resources.get("components") or []:
        name, role = component.get("name"), component.get("role")
        if not name or role not in PATH_ROLES:
            raise ValueError(f"component {name!r} has no known role ({role!r})")
        what = f"component {name!r}"
        user = _number(component.get("cpu_user_seconds"), f"{what} cpu_user_seconds", True)
        system = _number(component.get("cpu_system_seconds"), f"{what} cpu_system_seconds", True)
        if (user is None) != (system is None):
            raise ValueError(f"{what} has only one of user and system CPU time")
        cpu = component.get("cpu_seconds")
        cpu = (user or 0.0) + (system or 0.0) if cpu is None else _number(cpu, f"{what} cpu")
        memory = _number(component.get("peak_memory_bytes"), f"{what} peak memory", True)
        source = component.get("source") or default_source
        if source not in COST_SOURCES:
            raise ValueError(f"{what} has an unknown source {source!r}")
        key = (component.get("cluster"), role, str(name))
        row = merged.get(key)
        if row is None:
            merged[key] = {
                "cluster": key[0],
                "role": role,
                "component": key[2],
                "source": source,
                "cpu_user_s": user,
                "cpu_system_s": system,
                "cpu_s": cpu,
                "peak_memory_bytes": int(memory) if memory is not None else None,
            }
            continue
        # The same name twice in one role and cluster: one component of several processes.
        log.warning("cost record lists %s twice; its times are added", what)
        row["cpu_s"] += cpu
        if row["cpu_user_s"] is not None and user is not None:
            row["cpu_user_s"] += user
            row["cpu_system_s"] += system
        else:
            row["cpu_user_s"] = row["cpu_system_s"] = None
        if memory is not None:
            row["peak_memory_bytes"] = max(row["peak_memory_bytes"] or 0, int(memory))
    rows = list(merged.values())
    unattributed = resources.get("unattributed_cpu_seconds")
    if unattributed is not None:
        rows.append(
            {
                "cluster": None,
                "role": UNATTRIBUTED_ROLE,
                "component": UNATTRIBUTED_ROLE,
                "source": MACHINE_COST_SOURCE,
                "cpu_user_s": None,
                "cpu_system_s": None,
                "cpu_s": _number(unattributed, "unattributed_cpu_seconds"),
                "peak_memory_bytes": None,
            }
        )
    for row in rows:
        row["cpu_ms_per_1000_requests"] = per_1000(row["cpu_s"])
    machine = resources.get("machine") or {}
    share = _number(resources.get("attributed_share"), "attributed_share", True)
    totals = {
        "requests": requests,
        "busy_cpu_s": _number(machine.get("busy_seconds"), "machine busy_seconds", True),
        **{
            f"{part}_cpu_s": _number(machine.get(part), f"machine {part}", True)
            for part in ("user", "nice", "system", "irq", "softirq", "steal")
        },
        "attributed_share": min(share, 1.0) if share is not None else None,
    }
    return totals, rows


def _insert_costs(connection: Connection, measurement_id: int, record: MeasurementRecord) -> None:
    resources = (record.outcome.context or {}).get("resources")
    if not resources:
        return
    try:
        totals, rows = cost_rows(resources)
    except (ValueError, TypeError, AttributeError) as exc:
        # The measurement counts without its cost; the record stays in its context.
        log.warning(
            "iteration %s %s run %s: cost record not stored: %s",
            record.iteration,
            record.phase,
            record.run_index,
            exc,
        )
        return
    connection.execute(insert(MeasurementCost).values(measurement_id=measurement_id, **totals))
    if rows:
        connection.execute(
            insert(ComponentCost), [{"measurement_id": measurement_id, **row} for row in rows]
        )


MEASUREMENT_KEY = ["run_id", "iteration", "step_index", "phase", "run_index"]


def _insert_measurement(
    connection: Connection, run: Run, run_id: int, record: MeasurementRecord, tolerance: float
) -> tuple[bool, bool, str | None]:
    """Insert one measurement; returns (inserted, positive, reason)."""
    result, reasons = _evaluate(record, tolerance)
    reason = "; ".join(reasons) if reasons else None
    outcome = record.outcome
    generator = (outcome.context or {}).get("load_generator")
    values = _measurement_values(result)
    step = step_values(record, run)
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
            # The rate the load generator paced at: a closed-loop run (wrk, Fortio's max)
            # has none, whatever target the profile names, and cannot fall short of it.
            saturated=is_saturated(values.get("actual_qps"), values.get("requested_qps")),
            **step,
            **values,
        )
        .on_conflict_do_nothing(index_elements=MEASUREMENT_KEY)
        .returning(Measurement.id)
    )
    measurement_id = connection.execute(statement).scalar()
    if measurement_id is None:
        return False, reason is None, reason
    _insert_costs(connection, measurement_id, record)
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
            connection, run, run_id, record, duration_tolerance
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
                f"iteration {record.iteration} {record.phase}"
                + (f" step {record.step}" if record.step > 1 else "")
                + f" run {record.run_index}: {reason}"
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

"""One load-generator run of a local benchmark, and its step as the plan shows it.

A step with a target rate (``fixed_rate`` and ``qps`` > 0) is paced by h2load, one process
per connection (``loadgen/h2load.py``); every other step runs wrk back to back, as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from meshbench.backend import (
    PHASE_PAIRED_BASELINE,
    PHASE_WARMUP,
    PHASES,
    MeasurementOutcome,
    RunContext,
    Step,
    StepFailed,
)
from meshbench.config import LoadProfile
from meshbench.loadgen import h2load as h2load_loadgen
from meshbench.loadgen import wrk as wrk_loadgen
from meshbench.local import binaries, counters, machine, netns, resources
from meshbench.local.counters import FirstHop, Reading
from meshbench.local.meshes.base import DIRECT, WORKLOAD, LocalDataPlane
from meshbench.local.processes import ProcessRecord
from meshbench.local.topology import Topology

if TYPE_CHECKING:
    from meshbench.local.backend import LocalBackend

EMULATION = "data-plane emulation on one machine; not Istio, Kuma or NSM"


class _GeneratorRun(Protocol):
    """What both load generators' runs give the accounting around them."""

    @property
    def cpu_user_seconds(self) -> float: ...

    @property
    def cpu_system_seconds(self) -> float: ...

    @property
    def cpu_seconds(self) -> float: ...


Run = TypeVar("Run", bound=_GeneratorRun)


def is_fixed_rate(load: LoadProfile) -> bool:
    """A step paced at its target rate (h2load); any other runs back to back (wrk)."""
    return load.fixed_rate and load.qps > 0


def step_name(load: LoadProfile) -> str:
    """The load step as errors name it: its index and key, ``2 (c4-q1000)``."""
    return f"{load.step_index} ({load.step_key()})"


def _fixed_rate_step(
    plane: LocalDataPlane, ctx: RunContext, topology: Topology, phase: str
) -> Step:
    load = ctx.load
    if phase == PHASE_PAIRED_BASELINE:
        return Step(
            "measure",
            "process",
            f"paired baseline: h2load at {load.qps} rps on the direct path right before each "
            "mesh run",
            h2load_loadgen.describe_command(
                load.connections, load.qps, load.duration, topology.direct_url, step_name(load)
            ),
            "client",
        )
    warmup = phase == PHASE_WARMUP
    duration = load.effective_warmup_duration if warmup else load.duration
    return Step(
        "measure",
        "process",
        f"warm-up: h2load at {load.qps} rps on the measured path, its result discarded"
        if warmup
        else f"h2load at a fixed rate of {load.qps} rps over {load.connections} connection(s)",
        h2load_loadgen.describe_command(
            load.connections, load.qps, duration, plane.url(topology), step_name(load)
        ),
        "client",
    )


def measure_step(plane: LocalDataPlane, ctx: RunContext, topology: Topology, phase: str) -> Step:
    """What one load-generator run of ``phase`` is, as planned and as recorded."""
    if is_fixed_rate(ctx.load):
        return _fixed_rate_step(plane, ctx, topology, phase)
    if phase == PHASE_PAIRED_BASELINE:
        return Step(
            "measure",
            "process",
            "paired baseline: wrk on the direct path right before each mesh run",
            f"wrk ... {topology.direct_url}",
            "client",
        )
    warmup = phase == PHASE_WARMUP
    duration = ctx.load.effective_warmup_duration if warmup else ctx.load.duration
    return Step(
        "measure",
        "process",
        "warm-up: wrk on the measured path, its result discarded" if warmup else "wrk back to back",
        f"wrk --connections {ctx.load.connections} --duration "
        f"{duration:g}s --script wrk_report.lua {plane.url(topology)}",
        "client",
    )


def measure(
    backend: LocalBackend,
    ctx: RunContext,
    iteration: int,
    phase: str,
    run_index: int,
    context: dict[str, Any],
) -> MeasurementOutcome:
    """One load-generator run of ``phase`` (wrk, or h2load for a fixed-rate step), with the
    first hop's counters and the CPU time around it; ``context`` is filled in as it goes, so
    a failure still says what was tried."""
    if phase not in PHASES:
        raise StepFailed(f"unknown phase {phase!r}")
    state = backend.state(ctx)
    topology = state.topology
    backend.executed_steps.append(measure_step(backend.plane, ctx, topology, phase))
    plane = DIRECT if phase == PHASE_PAIRED_BASELINE else backend.plane
    records = []
    for name in [WORKLOAD, *plane.components]:
        record = state.processes.get(name)
        if record is None:
            raise StepFailed(f"{backend.describe(name)} is not deployed (its task did not run)")
        records.append(record)
    duration = ctx.load.effective_warmup_duration if phase == "warmup" else ctx.load.duration
    client_cpus = topology.cpus.get("client")
    labels = " ".join(
        [f"{key}={value}" for key, value in sorted(ctx.labels.items())]
        + [f"iteration={iteration}", f"phase={phase}", f"run={run_index}"]
    )

    def spawn_in(spawn: Callable[[], Any]) -> Any:
        return netns.call_in(topology.namespace("client"), spawn, cpus=client_cpus)

    if is_fixed_rate(ctx.load):
        return _measure_fixed_rate(
            backend, ctx, plane, topology, records, duration, labels, spawn_in, context
        )

    threads = min(ctx.load.connections, len(client_cpus) if client_cpus else os.cpu_count() or 1)
    settings = wrk_loadgen.WrkSettings(
        url=plane.url(topology),
        connections=ctx.load.connections,
        duration_seconds=wrk_loadgen.whole_seconds(duration),
        threads=threads,
        status_codes=backend.settings.status_codes,
        labels=labels,
        profile_qps=ctx.load.qps,
    )
    context.update(
        {
            **_path_context(plane, topology),
            "load_generator": f"{wrk_loadgen.LOAD_GENERATOR} "
            f"{state.versions.get('wrk', 'unknown')}",
            "load_mode": wrk_loadgen.MODE,
            "connections": settings.connections,
            "threads": settings.threads,
            "status_codes": settings.status_codes,
            "versions": state.versions,
            "emulation": EMULATION,
        }
    )
    for record in records:
        backend.require_running(record)

    hop = plane.first_hop(topology)
    run, before, after, dead = _run_accounted(
        backend,
        ctx,
        hop,
        records,
        plane,
        lambda: wrk_loadgen.run(
            binaries.find("wrk"), settings, backend.folder(ctx).path / "wrk", spawn_in=spawn_in
        ),
        lambda run: run.report.requests if run.report is not None else 0,
        context,
    )
    context["wrk_command"] = " ".join(run.command)
    context["first_hop_counters"] = hop.description

    failures = _dead_components(backend, dead)
    if run.failure:
        failures.append(run.failure)
    raw = None
    if run.report is not None:
        socket_count = hop.socket_count(before, after) if before and after else None
        raw = wrk_loadgen.to_fortio(
            run.report,
            settings,
            run.start_time,
            socket_count,
            state.versions.get("wrk", "unknown"),
        )
        if before and after:
            check = counters.check_answers(
                hop,
                hop.answers(before, after),
                requests=run.report.requests,
                status_errors=run.report.errors.get("status", 0),
                connections=settings.connections,
            )
            raw["meshbench"]["answer_check"] = check
            if not check["consistent"]:
                failures.append(
                    f"answer counts disagree: wrk counted {check['load_generator_counted']} "
                    f"but the {hop.description} counted {check['first_hop_counted']}"
                )
    return MeasurementOutcome(raw_result=raw, failure="; ".join(failures) or None, context=context)


def _path_context(plane: LocalDataPlane, topology: Topology) -> dict[str, Any]:
    return {
        "path": plane.path,
        "data_plane": plane.data_plane,
        "url": plane.url(topology),
        "network_mode": topology.network_mode,
        "cpu_placement": topology.cpu_placement,
        "cpus": topology.cpus,
    }


def _measure_fixed_rate(
    backend: LocalBackend,
    ctx: RunContext,
    plane: LocalDataPlane,
    topology: Topology,
    records: list[ProcessRecord],
    duration: float,
    labels: str,
    spawn_in: Callable[[Callable[[], Any]], Any],
    context: dict[str, Any],
) -> MeasurementOutcome:
    """One h2load run per connection at the step's target rate, accounted as wrk's is."""
    state = backend.state(ctx)
    try:
        settings = h2load_loadgen.H2loadSettings(
            url=plane.url(topology),
            connections=ctx.load.connections,
            duration_seconds=duration,
            target_qps=ctx.load.qps,
            step=step_name(ctx.load),
            labels=labels,
        )
        h2load = binaries.find("h2load")
    except (h2load_loadgen.FixedRateError, binaries.MissingBinary) as exc:
        raise StepFailed(str(exc)) from None
    # The backend records the versions of the programs every run needs; h2load is needed
    # by fixed-rate steps only.
    version = state.versions.get("h2load") or binaries.version("h2load")
    context.update(
        {
            **_path_context(plane, topology),
            "load_generator": f"{h2load_loadgen.LOAD_GENERATOR} {version}",
            "load_mode": h2load_loadgen.MODE,
            "connections": settings.connections,
            "target_qps": settings.target_qps,
            "per_connection_rps": settings.per_connection_rps,
            # One single-threaded h2load process per connection.
            "threads": settings.connections,
            "status_codes": "counted",
            "versions": {**state.versions, "h2load": version},
            "emulation": EMULATION,
        }
    )
    for record in records:
        backend.require_running(record)

    hop = plane.first_hop(topology)
    run, before, after, dead = _run_accounted(
        backend,
        ctx,
        hop,
        records,
        plane,
        lambda: h2load_loadgen.run(
            h2load, settings, backend.folder(ctx).path / "h2load", spawn_in=spawn_in
        ),
        lambda run: run.report.requests if run.report is not None else 0,
        context,
    )
    context["h2load_command"] = (
        f"{settings.connections} × " + " ".join(run.command) if run.command else ""
    )
    context["first_hop_counters"] = hop.description

    failures = _dead_components(backend, dead)
    if run.failure:
        failures.append(run.failure)
    raw = None
    report = run.report
    if report is not None:
        # h2load connects without wrk's address check before the run, so only the
        # reading's own connection is taken off the first hop's count (counters.py takes
        # wrk's off too).
        socket_count = (
            max(after.connections - before.connections - hop.own_connections_per_reading, 0)
            if before and after
            else None
        )
        raw = h2load_loadgen.to_fortio(report, settings, run.start_time, socket_count, version)
        if before and after:
            # Comparable with wrk's: a logged row is a request h2load saw answered (or
            # failed) inside its window, and the first hop counts every answer. What the
            # first hop may count beyond the log: each connection's request in flight when
            # the window closed (-m 1: one at most), and, for a connection that connected
            # before its window began, the request it sent on connecting.
            unlogged_allowance = settings.connections + sum(
                not connection.connected_in_window for connection in report.connections
            )
            check = counters.check_answers(
                hop,
                hop.answers(before, after),
                requests=report.requests,
                status_errors=report.status_errors,
                connections=unlogged_allowance,
            )
            raw["meshbench"]["answer_check"] = check
            if not check["consistent"]:
                failures.append(
                    f"answer counts disagree: h2load counted {check['load_generator_counted']} "
                    f"but the {hop.description} counted {check['first_hop_counted']}"
                )
    return MeasurementOutcome(raw_result=raw, failure="; ".join(failures) or None, context=context)


def _run_accounted(
    backend: LocalBackend,
    ctx: RunContext,
    hop: FirstHop,
    records: list[ProcessRecord],
    plane: LocalDataPlane,
    start: Callable[[], Run],
    requests_of: Callable[[Run], int],
    context: dict[str, Any],
) -> tuple[Run, Reading | None, Reading | None, list[ProcessRecord]]:
    """Run the load generator with the first hop's counters and every component's CPU time
    read around it; fills ``context["machine"]`` and ``context["resources"]``. Returns the
    run, the readings before and after (None when unreadable) and the components that died."""
    backend.folder(ctx).touch()  # a run being measured is active: the reaper spares it
    before = hop.read()
    roles = {WORKLOAD: resources.SERVER_APP, **plane.component_roles}
    times_before = [resources.component_times(record, roles[record.name]) for record in records]
    cpu_before = sum(record.cpu_seconds() for record in records)
    machine_before = machine.MachineSample.take()
    run = start()
    machine_after = machine.MachineSample.take()
    times_after = [resources.component_times(record, roles[record.name]) for record in records]
    cpu_after = sum(record.cpu_seconds() for record in records)
    dead = [record for record in records if not record.is_running()]
    after = hop.read() if before is not None and not dead else None
    context["machine"] = machine.describe_interval(
        machine_before, machine_after, run.cpu_seconds + max(cpu_after - cpu_before, 0.0)
    )
    context["resources"] = resources.account(
        times_before,
        times_after,
        machine_before.cpu,
        machine_after.cpu,
        # wrk and h2load start as forks of this process that enter the namespace and then
        # exec; Linux keeps the fork's resident pages in their peak, so no peak is reported.
        resources.LoadGeneratorCost(run.cpu_user_seconds, run.cpu_system_seconds, None),
        {record.name: resources.peak_memory_bytes(record) for record in records},
        requests_of(run),
    )
    return run, before, after, dead


def _dead_components(backend: LocalBackend, dead: list[ProcessRecord]) -> list[str]:
    failures = []
    for record in dead:
        tail = record.log_tail(300)
        failures.append(
            f"{backend.describe(record.name)} (pid {record.pid}, {record.cluster} cluster) exited "
            f"during the run" + (f"; its log ends with: {tail}" if tail else "")
        )
    return failures

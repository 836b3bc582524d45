"""One load-generator run of a local benchmark, and its step as the plan shows it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from meshbench.backend import (
    PHASE_PAIRED_BASELINE,
    PHASE_WARMUP,
    PHASES,
    MeasurementOutcome,
    RunContext,
    Step,
    StepFailed,
)
from meshbench.loadgen import wrk as wrk_loadgen
from meshbench.local import binaries, counters, machine, netns, resources
from meshbench.local.meshes.base import DIRECT, WORKLOAD, LocalDataPlane
from meshbench.local.topology import Topology

if TYPE_CHECKING:
    from meshbench.local.backend import LocalBackend


def measure_step(plane: LocalDataPlane, ctx: RunContext, topology: Topology, phase: str) -> Step:
    """What one load-generator run of ``phase`` is, as planned and as recorded."""
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
    """One wrk run of ``phase``, with the first hop's counters and the CPU time around it;
    ``context`` is filled in as it goes, so a failure still says what was tried."""
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
    threads = min(ctx.load.connections, len(client_cpus) if client_cpus else os.cpu_count() or 1)
    settings = wrk_loadgen.WrkSettings(
        url=plane.url(topology),
        connections=ctx.load.connections,
        duration_seconds=wrk_loadgen.whole_seconds(duration),
        threads=threads,
        status_codes=backend.settings.status_codes,
        labels=" ".join(
            [f"{key}={value}" for key, value in sorted(ctx.labels.items())]
            + [f"iteration={iteration}", f"phase={phase}", f"run={run_index}"]
        ),
        profile_qps=ctx.load.qps,
    )
    context.update(
        {
            "path": plane.path,
            "data_plane": plane.data_plane,
            "url": settings.url,
            "network_mode": topology.network_mode,
            "cpu_placement": topology.cpu_placement,
            "cpus": topology.cpus,
            "load_generator": f"{wrk_loadgen.LOAD_GENERATOR} "
            f"{state.versions.get('wrk', 'unknown')}",
            "load_mode": wrk_loadgen.MODE,
            "connections": settings.connections,
            "threads": settings.threads,
            "status_codes": settings.status_codes,
            "versions": state.versions,
            "emulation": "data-plane emulation on one machine; not Istio, Kuma or NSM",
        }
    )
    for record in records:
        backend.require_running(record)

    backend.folder(ctx).touch()  # a run being measured is active: the reaper spares it
    hop = plane.first_hop(topology)
    before = hop.read()
    roles = {WORKLOAD: resources.SERVER_APP, **plane.component_roles}
    times_before = [resources.component_times(record, roles[record.name]) for record in records]
    cpu_before = sum(record.cpu_seconds() for record in records)
    machine_before = machine.MachineSample.take()
    run = wrk_loadgen.run(
        binaries.find("wrk"),
        settings,
        backend.folder(ctx).path / "wrk",
        spawn_in=lambda spawn: netns.call_in(topology.namespace("client"), spawn, cpus=client_cpus),
    )
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
        # wrk starts as a fork of this process that enters the namespace and then execs;
        # Linux keeps the fork's resident pages in wrk's peak, so no peak is reported.
        resources.LoadGeneratorCost(run.cpu_user_seconds, run.cpu_system_seconds, None),
        {record.name: resources.peak_memory_bytes(record) for record in records},
        run.report.requests if run.report is not None else 0,
    )
    context["wrk_command"] = " ".join(run.command)
    context["first_hop_counters"] = hop.description

    failures = []
    for record in dead:
        tail = record.log_tail(300)
        failures.append(
            f"{backend.describe(record.name)} (pid {record.pid}, {record.cluster} cluster) exited "
            f"during the run" + (f"; its log ends with: {tail}" if tail else "")
        )
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

"""The plan of a local run: the steps of the ops the backend runs, in task order, with
nothing executed (``meshbench plan --env local``, the DAG's documentation, tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshbench.backend import PHASE_MEASURED, PHASE_PAIRED_BASELINE, PHASE_WARMUP, Plan, Step
from meshbench.local import measurement, netns
from meshbench.local.topology import NETNS_PORTS, Topology, plan_topology

if TYPE_CHECKING:
    from meshbench.backend import RunContext
    from meshbench.local.backend import LocalBackend

PLAN_ITERATION = 1


def placeholder_topology(backend: LocalBackend, ctx: RunContext) -> Topology:
    """The topology a run would get; loopback ports are only chosen when it is made."""
    settings = backend.settings
    mode = "netns" if netns.can_create_namespaces() else "loopback"
    if settings.network_mode != "auto":
        mode = settings.network_mode
    if mode == "netns":
        return plan_topology(ctx.resource_prefix, "netns", settings.subnet, settings.cpu_placement)
    return Topology(
        prefix=ctx.resource_prefix,
        network_mode="loopback",
        client_address="127.x.y.1",
        server_address="127.x.y.2",
        underlay_prefix_length=30,
        tunnel_client_address="-",
        tunnel_server_address="-",
        tunnel_prefix_length=30,
        ports=dict(NETNS_PORTS),
        cpu_placement=settings.cpu_placement,
    )


def local_plan(backend: LocalBackend, ctx: RunContext) -> Plan:
    """Every step of a local run in order, without making anything: one iteration, its
    warm-up at the first load step, then one load-generator run of each measured phase at
    every step of the profile's ladder."""
    topology = placeholder_topology(backend, ctx)
    plane = backend.plane
    warnings: list[str] = []
    if topology.network_mode != "netns":
        warnings.append(
            "not root: the clusters are two loopback addresses in this namespace "
            "(mode 'loopback', recorded with the results)"
        )
        if plane.needs_namespaces:
            warnings.append(plane.needs_namespaces)
    phases = []
    if plane.adds_path and backend.settings.paired_baseline:
        phases.append(PHASE_PAIRED_BASELINE)
    phases.append(PHASE_MEASURED)
    load_runs = [(1, PHASE_WARMUP)] if ctx.load.warmup else []
    load_runs += [
        (step, phase) for step in range(1, len(ctx.load.ladder()) + 1) for phase in phases
    ]
    ops = [
        *backend.cluster_ops(topology),
        *plane.prepare_pair_ops(backend, ctx),
        *plane.install_ops(backend, ctx, topology, PLAN_ITERATION),
        *plane.ready_ops(backend, ctx, topology, PLAN_ITERATION),
        *backend.workload_ops(ctx, topology, PLAN_ITERATION),
        *backend.workload_ready_ops(ctx, topology),
    ]
    steps: list[Step] = [op.step for op in ops]
    steps += [
        measurement.measure_step(plane, ctx.at_step(step), topology, phase)
        for step, phase in load_runs
    ]
    steps += [op.step for op in backend.uninstall_ops(ctx, PLAN_ITERATION)]
    steps += [op.step for op in backend.delete_ops(ctx)]
    return Plan(
        environment="local", mesh=backend.mesh, steps=tuple(steps), warnings=tuple(warnings)
    )

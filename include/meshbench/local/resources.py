"""What a local load-generator run cost, component by component, and what nobody was charged.

Each component's CPU time (user and system, from ``/proc/<pid>/stat`` of its live members)
and peak resident memory (``VmHWM``), tagged with its role on the path, are set beside the
machine's whole busy CPU time over the same window (``/proc/stat``), in the cost record of
``meshbench.cost``. Prometheus-based harnesses see only containers' user-space CPU; this
counts everything, the kernel's share included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshbench.cost import (  # noqa: F401  (the roles, re-exported for the local meshes)
    CLIENT_PROXY,
    CONTROL_PLANE,
    GATEWAY,
    LOAD_GENERATOR,
    MESH_ROLES,
    ROLES,
    SERVER_APP,
    SERVER_PROXY,
    TUNNEL,
    cost_record,
)
from meshbench.local.machine import CLOCK_TICKS, CpuTimes
from meshbench.local.processes import ProcessRecord, read_stat


@dataclass(frozen=True)
class ComponentTimes:
    """A component's CPU time so far, in clock ticks, summed over its live processes."""

    name: str
    role: str
    user_ticks: int
    system_ticks: int


def component_times(record: ProcessRecord, role: str) -> ComponentTimes:
    user = system = 0
    for pid in record.members():
        stat = read_stat(pid)
        if stat is not None:
            user += stat.utime_ticks
            system += stat.stime_ticks
    return ComponentTimes(record.name, role, user, system)


def peak_memory_bytes(record: ProcessRecord) -> int | None:
    """The largest peak resident set (``VmHWM``, since the process started) of its members."""
    peaks = []
    for pid in record.members():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) * 1024)
    return max(peaks) if peaks else None


@dataclass(frozen=True)
class LoadGeneratorCost:
    """The load generator's own cost, from its resource usage once it exited."""

    user_seconds: float
    system_seconds: float
    peak_memory_bytes: int | None


def account(
    before: Iterable[ComponentTimes],
    after: Iterable[ComponentTimes],
    machine_before: CpuTimes,
    machine_after: CpuTimes,
    load_generator: LoadGeneratorCost,
    peak_memory: Mapping[str, int | None],
    requests: int,
) -> dict[str, Any]:
    """The run's cost by component and role, the machine's busy time and the unattributed
    rest, each also per 1000 requests. A component that exited during the run is counted
    for what its live processes used (a negative difference counts as nothing)."""
    started = {times.name: times for times in before}
    components = [
        {
            "name": LOAD_GENERATOR,
            "role": LOAD_GENERATOR,
            "cpu_user_seconds": round(load_generator.user_seconds, 4),
            "cpu_system_seconds": round(load_generator.system_seconds, 4),
            "peak_memory_bytes": load_generator.peak_memory_bytes,
        }
    ]
    for times in after:
        first = started.get(times.name, ComponentTimes(times.name, times.role, 0, 0))
        components.append(
            {
                "name": times.name,
                "role": times.role,
                "cpu_user_seconds": max(times.user_ticks - first.user_ticks, 0) / CLOCK_TICKS,
                "cpu_system_seconds": max(times.system_ticks - first.system_ticks, 0) / CLOCK_TICKS,
                "peak_memory_bytes": peak_memory.get(times.name),
            }
        )

    def machine_seconds(field: str) -> float:
        return (getattr(machine_after, field) - getattr(machine_before, field)) / CLOCK_TICKS

    for component in components:
        component["cpu_seconds"] = component["cpu_user_seconds"] + component["cpu_system_seconds"]
    return cost_record(
        components,
        requests,
        busy_seconds=(machine_after.busy_ticks - machine_before.busy_ticks) / CLOCK_TICKS,
        machine={
            field: round(machine_seconds(field), 4)
            for field in ("user", "nice", "system", "irq", "softirq", "steal")
        },
    )

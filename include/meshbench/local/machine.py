"""The machine's load during a run: on small VMs it moves single-connection latency more
than most data planes do (machine-notes.md), so every local result records it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTimes:
    """All CPUs together, in clock ticks, by what they were doing (guest time is in user)."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def busy_ticks(self) -> int:
        return self.user + self.nice + self.system + self.irq + self.softirq + self.steal

    @property
    def idle_ticks(self) -> int:
        return self.idle + self.iowait

    @property
    def total_ticks(self) -> int:
        return self.busy_ticks + self.idle_ticks


def read_cpu_times() -> CpuTimes:
    """The first line of /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    return CpuTimes(*(int(value) for value in fields))


def read_load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass(frozen=True)
class MachineSample:
    cpu: CpuTimes
    load_average: tuple[float, float, float]

    @classmethod
    def take(cls) -> MachineSample:
        return cls(cpu=read_cpu_times(), load_average=read_load_average())


def describe_interval(
    before: MachineSample, after: MachineSample, benchmark_cpu_seconds: float | None
) -> dict[str, Any]:
    """Load and CPU idle over the interval; background CPU is what the benchmark's own
    processes (load generator and data plane) did not use."""
    total = max(after.cpu.total_ticks - before.cpu.total_ticks, 1)
    busy = after.cpu.busy_ticks - before.cpu.busy_ticks
    busy_seconds = busy / CLOCK_TICKS
    described: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "load_average_1m_before": before.load_average[0],
        "load_average_1m_after": after.load_average[0],
        "load_average_5m_after": after.load_average[1],
        "cpu_idle_fraction": round((after.cpu.idle_ticks - before.cpu.idle_ticks) / total, 4),
        "cpu_busy_seconds": round(busy_seconds, 3),
    }
    if benchmark_cpu_seconds is not None:
        described["benchmark_cpu_seconds"] = round(benchmark_cpu_seconds, 3)
        # Tick accounting is coarse (10 ms): never report negative background time.
        described["background_cpu_seconds"] = round(max(busy_seconds - benchmark_cpu_seconds, 0), 3)
    return described

"""A ladder run with known numbers, loaded through the loader: the results, analysis and
docs tests check the views, the summaries and the guide's queries against it.

One local ``envoy-mtls`` run on 2026-03-01 with two steps (its run's own profile, q6000 c1,
is neither: the steps come from each measurement's context):

- step 1 ``c4-q2000``: iterations 1 and 2 reach the target (1990 and 1995 QPS; p50 0.40 and
  0.44 ms, p99 1.00 and 1.20 ms), iteration 3 is saturated (1500 QPS, p99 5.00 ms); their
  paired baselines reach 2000 (p50 0.10 and 0.12, p99 0.30 and 0.34 ms). The two
  unsaturated measured runs and the baselines carry a cost record (``COSTS``).
- step 2 ``c16-max``: iterations 1 and 2 at 6000 and 6200 QPS (p99 3.0 and 3.4 ms).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from meshbench.backend import MeasurementOutcome
from meshbench.local import resources
from meshbench.local.machine import CLOCK_TICKS, CpuTimes
from meshbench.local.resources import ComponentTimes, LoadGeneratorCost
from meshbench.results.loader import MeasurementRecord, load_run
from meshbench.results.models import Run

SEED_FILE = (
    Path(__file__).parents[1]
    / "data/seed-results/equinix-metal-2023-11-16/imp"
    / "test-2023-11-16-T20-36-imp-q6000-c1-d60s-01-01-8080.json"
)
ENVIRONMENT = "local"
MESH = "envoy-mtls"
DAY = date(2026, 3, 1)
REQUESTS = 20_000
STEPS = {1: ("c4-q2000", 4, 2000), 2: ("c16-max", 16, None)}


def fortio(actual_qps: float, p50_ms: float, p99_ms: float, target: int | None, connections: int):
    """The seed result reshaped: its rate, connections and latency percentiles."""
    document = copy.deepcopy(json.loads(SEED_FILE.read_text()))
    p50, p99 = p50_ms / 1000, p99_ms / 1000
    histogram = document["DurationHistogram"]
    histogram.update(
        Count=REQUESTS,
        Min=p50 / 2,
        Avg=p50,
        Max=p99 * 3,
        Percentiles=[
            {"Percentile": 50, "Value": p50},
            {"Percentile": 75, "Value": p50 + (p99 - p50) / 4},
            {"Percentile": 90, "Value": p50 + (p99 - p50) / 2},
            {"Percentile": 99, "Value": p99},
            {"Percentile": 99.9, "Value": p99 * 1.5},
        ],
    )
    document.update(
        ActualQPS=actual_qps,
        RequestedQPS=str(target) if target else "max",
        NumThreads=connections,
        NumConnections=connections,
        RetCodes={"200": REQUESTS},
    )
    return document


def step_context(index: int) -> dict[str, Any]:
    key, connections, target = STEPS[index]
    return {
        "index": index,
        "key": key,
        "connections": connections,
        "target_qps": target,
        "fixed_rate": target is not None,
    }


def seconds(value: float) -> int:
    return round(value * CLOCK_TICKS)


def machine(busy: float) -> CpuTimes:
    return CpuTimes(
        user=seconds(busy), nice=0, system=0, idle=0, iowait=0, irq=0, softirq=0, steal=0
    )


def cost(components: dict[str, tuple[str, float, float, int | None]], busy: float, wrk: float):
    """``resources.account`` of known times: name -> (role, user s, system s, peak bytes)."""
    before = [ComponentTimes(name, role, 0, 0) for name, (role, *_rest) in components.items()]
    after = [
        ComponentTimes(name, role, seconds(user), seconds(system))
        for name, (role, user, system, _peak) in components.items()
    ]
    return resources.account(
        before,
        after,
        machine(0),
        machine(busy),
        LoadGeneratorCost(wrk, 0.0, None),
        {name: peak for name, (_role, _user, _system, peak) in components.items()},
        REQUESTS,
    )


MIB = 1 << 20
# Per iteration: the measured run's cost and its paired baseline's. Over 20 000 requests:
# iteration 1 mesh 4 s (200 ms per 1000), path 12 s (600); iteration 2 mesh 5 s (250),
# path 14 s (700); each baseline path 5 s (250), mesh nothing.
COSTS = {
    1: (
        cost(
            {
                "nginx": (resources.SERVER_APP, 1.5, 0.5, 8 * MIB),
                "client-sidecar": (resources.CLIENT_PROXY, 2.0, 1.0, 30 * MIB),
                "server-sidecar": (resources.SERVER_PROXY, 1.0, 0.0, 20 * MIB),
            },
            busy=12.0,
            wrk=2.0,
        ),
        cost({"nginx": (resources.SERVER_APP, 2.0, 0.0, 8 * MIB)}, busy=5.0, wrk=2.0),
    ),
    2: (
        cost(
            {
                "nginx": (resources.SERVER_APP, 1.5, 0.5, 8 * MIB),
                "client-sidecar": (resources.CLIENT_PROXY, 3.0, 1.0, 34 * MIB),
                "server-sidecar": (resources.SERVER_PROXY, 1.0, 0.0, 22 * MIB),
            },
            busy=14.0,
            wrk=2.0,
        ),
        cost({"nginx": (resources.SERVER_APP, 2.0, 0.0, 8 * MIB)}, busy=5.0, wrk=2.0),
    ),
}
# (step, iteration, phase) -> (actual QPS, p50 ms, p99 ms)
RUNS = {
    (1, 1, "paired-baseline"): (2000.0, 0.10, 0.30),
    (1, 1, "measured"): (1990.0, 0.40, 1.00),
    (1, 2, "paired-baseline"): (2000.0, 0.12, 0.34),
    (1, 2, "measured"): (1995.0, 0.44, 1.20),
    (1, 3, "measured"): (1500.0, 2.00, 5.00),
    (2, 1, "measured"): (6000.0, 1.00, 3.00),
    (2, 2, "measured"): (6200.0, 1.20, 3.40),
}


def ladder_records() -> list[MeasurementRecord]:
    records = []
    for (step, iteration, phase), (qps, p50, p99) in RUNS.items():
        _key, connections, target = STEPS[step]
        context: dict[str, Any] = {"step": step_context(step), "load_generator": "wrk 4.2.0"}
        if step == 1 and iteration in COSTS:
            measured, baseline = COSTS[iteration]
            context["resources"] = measured if phase == "measured" else baseline
        records.append(
            MeasurementRecord(
                iteration=iteration,
                phase=phase,
                run_index=1,
                step=step,
                outcome=MeasurementOutcome(
                    raw_result=fortio(qps, p50, p99, target, connections), context=context
                ),
            )
        )
    return records


def ladder_run(source_key: str = "test:ladder") -> Run:
    return Run(
        source_key=source_key,
        environment=ENVIRONMENT,
        mesh=MESH,
        benchmark_date=DAY,
        qps=6000,
        connections=1,
        duration_s=60,
        iterations=3,
        runs_per_iteration=1,
        state="success",
        purpose="scheduled",
        started_at=datetime(2026, 3, 1, 12, tzinfo=UTC),
    )


def load_ladder(engine):
    return load_run(engine, ladder_run(), ladder_records())

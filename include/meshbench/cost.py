"""What one measured run cost, in the one record every environment writes.

A run's cost record (``context["resources"]`` of its artifact) lists each component on the
path with its role, CPU seconds (user and system apart where the source splits them) and
peak memory, beside the busy CPU time of the machines the path ran on over the same window.
What the components do not account for stands as its own part, ``unattributed``: the
kernel's work that no process or container is charged for (softirq for veth, tunnel and TUN
traffic, interrupts) and whatever else ran. Local runs fill it from ``/proc``
(``meshbench.local.resources``), Kubernetes runs from the kubelet's counters
(``meshbench.kube.cost``); the results loader stores it as ``component_cost`` rows.

CPU seconds per 1000 requests is numerically the "vCPU per 1000 requests per second" of
Istio's performance page: (seconds / duration) / (requests / duration / 1000).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# The roles a component can play on the measured path.
LOAD_GENERATOR = "load generator"
SERVER_APP = "server app"
CLIENT_PROXY = "client proxy"
GATEWAY = "gateway"
SERVER_PROXY = "server proxy"
TUNNEL = "tunnel"
CONTROL_PLANE = "control plane"
# The mesh's own roles: what a mesh adds to the direct path.
MESH_ROLES = (CLIENT_PROXY, GATEWAY, SERVER_PROXY, TUNNEL, CONTROL_PLANE)
ROLES = (LOAD_GENERATOR, SERVER_APP, *MESH_ROLES)


def per_1000(seconds: float, requests: int) -> float | None:
    return round(seconds * 1000 / requests, 6) if requests > 0 else None


def cost_record(
    components: Iterable[dict[str, Any]],
    requests: int,
    *,
    busy_seconds: float | None,
    machine: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The cost record of a run from its components (each with ``name``, ``role`` and
    ``cpu_seconds``, optionally user/system seconds, peak memory, cluster and source) and
    the busy CPU seconds of the machines over the run (None when the source has no machine
    counters: then nothing is unattributed and there is no whole-path figure)."""
    listed = []
    for component in components:
        unknown = component["role"] not in ROLES
        if unknown:
            raise ValueError(f"component {component['name']!r} has no known role")
        seconds = round(component["cpu_seconds"], 4)
        listed.append(
            {
                **component,
                "cpu_seconds": seconds,
                "cpu_seconds_per_1000_requests": per_1000(seconds, requests),
            }
        )
    attributed = sum(component["cpu_seconds"] for component in listed)
    mesh = sum(c["cpu_seconds"] for c in listed if c["role"] in MESH_ROLES)
    by_role: dict[str, float] = {}
    for component in listed:
        by_role[component["role"]] = by_role.get(component["role"], 0.0) + component["cpu_seconds"]
    record: dict[str, Any] = {
        "requests": requests,
        "components": listed,
        "cpu_seconds_by_role": {role: round(seconds, 4) for role, seconds in by_role.items()},
        "machine": dict(machine or {}),
        "attributed_cpu_seconds": round(attributed, 4),
        "mesh_cpu_seconds_per_1000_requests": per_1000(mesh, requests),
    }
    if busy_seconds is None:
        return record | {
            "unattributed_cpu_seconds": None,
            "attributed_share": None,
            "path_cpu_seconds_per_1000_requests": None,
        }
    record["machine"]["busy_seconds"] = round(busy_seconds, 4)
    # Counters are coarse (ticks, refresh periods) and each source is read at its own
    # moment: the unattributed part is never reported below zero.
    return record | {
        "unattributed_cpu_seconds": round(max(busy_seconds - attributed, 0.0), 4),
        "attributed_share": (
            round(min(attributed / busy_seconds, 1.0), 4) if busy_seconds > 0 else None
        ),
        "path_cpu_seconds_per_1000_requests": per_1000(busy_seconds, requests),
    }

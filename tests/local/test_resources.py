"""The cost accounting of a local run: known process and machine times give known values."""

from __future__ import annotations

import pytest

from meshbench.local import resources
from meshbench.local.machine import CLOCK_TICKS, CpuTimes
from meshbench.local.meshes import LOCAL_MESHES, get_data_plane
from meshbench.local.resources import ComponentTimes, LoadGeneratorCost


def machine(user: int, system: int, softirq: int, idle: int = 0) -> CpuTimes:
    return CpuTimes(
        user=user, nice=0, system=system, idle=idle, iowait=0, irq=0, softirq=softirq, steal=0
    )


def seconds(value: float) -> int:
    return round(value * CLOCK_TICKS)


def test_known_process_times_give_known_costs_per_1000_requests() -> None:
    before = [
        ComponentTimes("nginx", resources.SERVER_APP, seconds(10), seconds(5)),
        ComponentTimes("client-sidecar", resources.CLIENT_PROXY, seconds(20), seconds(1)),
        ComponentTimes("gateway", resources.GATEWAY, 0, 0),
    ]
    # Over the run: nginx 1 s user + 1 s system, the sidecar 2 s + 1 s, the gateway 1 s.
    after = [
        ComponentTimes("nginx", resources.SERVER_APP, seconds(11), seconds(6)),
        ComponentTimes("client-sidecar", resources.CLIENT_PROXY, seconds(22), seconds(2)),
        ComponentTimes("gateway", resources.GATEWAY, seconds(1), 0),
    ]
    # The machine was busy 12 s: 5 s user, 4 s system, 3 s softirq.
    cost = resources.account(
        before,
        after,
        machine(seconds(100), seconds(50), seconds(10)),
        machine(seconds(105), seconds(54), seconds(13)),
        LoadGeneratorCost(user_seconds=1.5, system_seconds=0.5, peak_memory_bytes=4 << 20),
        {"nginx": 8 << 20, "client-sidecar": 30 << 20, "gateway": 25 << 20},
        requests=20_000,
    )
    by_name = {component["name"]: component for component in cost["components"]}
    assert by_name["client-sidecar"]["cpu_seconds"] == pytest.approx(3.0)
    assert by_name["client-sidecar"]["cpu_seconds_per_1000_requests"] == pytest.approx(0.15)
    assert by_name["load generator"]["cpu_seconds_per_1000_requests"] == pytest.approx(0.1)
    assert by_name["gateway"]["peak_memory_bytes"] == 25 << 20
    assert cost["cpu_seconds_by_role"] == pytest.approx(
        {"load generator": 2.0, "server app": 2.0, "client proxy": 3.0, "gateway": 1.0}
    )
    # The mesh is the sidecar and the gateway: 4 s over 20 000 requests.
    assert cost["mesh_cpu_seconds_per_1000_requests"] == pytest.approx(0.2)
    assert cost["machine"]["busy_seconds"] == pytest.approx(12.0)
    assert cost["machine"]["softirq"] == pytest.approx(3.0)
    assert cost["attributed_cpu_seconds"] == pytest.approx(8.0)
    # What no process was charged for (the kernel's softirq, say) stands as its own part.
    assert cost["unattributed_cpu_seconds"] == pytest.approx(4.0)
    assert cost["attributed_share"] == pytest.approx(8 / 12, abs=1e-4)  # kept to 4 places
    assert cost["path_cpu_seconds_per_1000_requests"] == pytest.approx(0.6)


def test_a_run_without_requests_has_no_cost_per_request() -> None:
    cost = resources.account(
        [],
        [],
        machine(0, 0, 0),
        machine(seconds(1), 0, 0),
        LoadGeneratorCost(0.1, 0.0, None),
        {},
        requests=0,
    )
    assert cost["mesh_cpu_seconds_per_1000_requests"] is None
    assert cost["components"][0]["cpu_seconds_per_1000_requests"] is None


@pytest.mark.parametrize("mesh", LOCAL_MESHES)
def test_every_component_of_a_local_data_plane_has_a_role(mesh: str) -> None:
    plane = get_data_plane(mesh)
    assert set(plane.component_roles) == set(plane.components)
    assert set(plane.component_roles.values()) <= set(resources.MESH_ROLES)

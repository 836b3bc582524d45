"""The per-mesh answer along a ladder: ceiling, added p99 at a fixed rate, CPU per 1000."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from meshbench.analysis import charts, ladder

STEPS = {
    1: ("c1-max", 1, None),
    2: ("c4-max", 4, None),
    3: ("c4-q2000", 4, 2000.0),
    4: ("c4-q8000", 4, 8000.0),
}


def run(mesh, phase, step, iteration, qps, p99, saturated=False, resources=None):
    key, connections, target = STEPS[step]
    return {
        "run_id": 1 if mesh == "baseline" else 2,
        "environment": "local",
        "mesh": mesh,
        "mesh_version_key": "",
        "iteration": iteration,
        "phase": phase,
        "run_index": 1,
        "step_index": step,
        "step_key": key,
        "step_connections": connections,
        "step_target_qps": target,
        "requested_qps": target,
        "saturated": saturated,
        "actual_qps": qps,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "request_count": 4000,
        "resources": resources,
    }


def account(mesh_seconds: float, requests: int = 4000, memory_mib: float = 40.0) -> dict:
    return {
        "requests": requests,
        "components": [
            # Two mesh components whose peaks add up to memory_mib, and one that is not.
            {"name": "sidecar", "role": "client proxy", "peak_memory_bytes": memory_mib * 2**19},
            {"name": "gateway", "role": "gateway", "peak_memory_bytes": memory_mib * 2**19},
            {"name": "gateway-2", "role": "gateway", "peak_memory_bytes": None},
            {"name": "nginx", "role": "server app", "peak_memory_bytes": 999 * 2**20},
        ],
        "cpu_seconds_by_role": {"client proxy": mesh_seconds, "load generator": 0.5},
        "unattributed_cpu_seconds": 0.25,
        "mesh_cpu_seconds_per_1000_requests": mesh_seconds * 1000 / requests,
        "path_cpu_seconds_per_1000_requests": (mesh_seconds + 0.75) * 1000 / requests,
    }


@pytest.fixture
def frame() -> pd.DataFrame:
    rows = []
    for iteration, (base_p99, mesh_p99, mesh_cpu) in enumerate(
        [(0.20, 0.50, 0.40), (0.30, 0.70, 0.60), (0.25, 0.55, 0.50)], start=1
    ):
        rows += [
            run("baseline", "measured", 1, iteration, 9000 + iteration, base_p99),
            run("baseline", "measured", 2, iteration, 20000 + iteration, base_p99),
            run("baseline", "measured", 3, iteration, 2000, base_p99),
            run("baseline", "measured", 4, iteration, 7990, base_p99),
            run("envoy-mtls", "measured", 1, iteration, 3000, mesh_p99),
            run("envoy-mtls", "measured", 2, iteration, 6000 + 10 * iteration, mesh_p99),
            run("envoy-mtls", "paired-baseline", 3, iteration, 2000, base_p99),
            run(
                "envoy-mtls",
                "measured",
                3,
                iteration,
                1990,
                mesh_p99,
                False,
                account(mesh_cpu, memory_mib=40 + 10 * iteration),
            ),
            run("envoy-mtls", "paired-baseline", 4, iteration, 7990, base_p99),
            run("envoy-mtls", "measured", 4, iteration, 5000, mesh_p99, True, account(1.0)),
        ]
    return pd.DataFrame(rows)


def test_the_comparison_rate_is_the_highest_no_mesh_saturates(frame):
    assert ladder.comparison_step(frame) == ("c4-q2000", False)
    every_step_saturated = frame.assign(saturated=frame["requested_qps"].notna())
    assert ladder.comparison_step(every_step_saturated) == ("c4-q2000", True)


def test_ceiling_added_p99_and_cpu_with_intervals(frame):
    results = {result.mesh: result for result in ladder.mesh_results(frame)}
    mesh = results["envoy-mtls"]
    assert mesh.ceiling_step == "c4-max"
    assert mesh.ceiling_qps.mean == pytest.approx(6020.0)
    differences = [0.30, 0.40, 0.30]  # measured p99 minus its paired baseline, per pair
    half = stats.t.ppf(0.975, 2) * pd.Series(differences).std() / 3**0.5
    assert mesh.added_p99_ms.mean == pytest.approx(sum(differences) / 3)
    assert (mesh.added_p99_ms.low, mesh.added_p99_ms.high) == pytest.approx(
        (sum(differences) / 3 - half, sum(differences) / 3 + half)
    )
    # 0.4, 0.6 and 0.5 CPU seconds over 4000 requests: 0.1, 0.15, 0.125 s per 1000.
    assert mesh.mesh_cpu_per_1000.mean == pytest.approx(0.125)
    assert mesh.mesh_cpu_per_1000.n == 3
    # The mesh components' peaks summed per run: 50, 60 and 70 MiB; nginx is not the mesh.
    memory_half = stats.t.ppf(0.975, 2) * 10 / 3**0.5
    assert mesh.mesh_memory_mb.mean == pytest.approx(60.0)
    assert (mesh.mesh_memory_mb.low, mesh.mesh_memory_mb.high) == pytest.approx(
        (60 - memory_half, 60 + memory_half)
    )
    baseline = results["baseline"]
    assert baseline.ceiling_step == "c4-max" and baseline.added_p99_ms.n == 0
    assert baseline.added_p99_ms.text() == "—"


def test_cpu_by_role_includes_the_unattributed_part(frame):
    by_role = ladder.cpu_by_role(frame, "c4-q2000").set_index(["mesh", "role"])["per_1000"]
    assert by_role[("envoy-mtls", "client proxy")] == pytest.approx(0.125)
    assert by_role[("envoy-mtls", "load generator")] == pytest.approx(0.125)
    assert by_role[("envoy-mtls", ladder.UNATTRIBUTED)] == pytest.approx(0.0625)
    assert ("baseline", "client proxy") not in by_role.index  # its runs have no account


def test_ladder_points_and_charts_render(frame):
    points = ladder.ladder_points(frame)
    row = points[(points["mesh"] == "envoy-mtls") & (points["step_key"] == "c4-q8000")].iloc[0]
    assert row["saturated"] and row["qps"] == pytest.approx(5000)
    png = charts.latency_throughput_chart(points, "ladder")
    assert png.startswith(b"\x89PNG")
    assert charts.cpu_per_request_chart(ladder.cpu_by_role(frame, "c4-q2000"), "cpu").startswith(
        b"\x89PNG"
    )


def test_a_partly_saturated_step_gives_two_points_never_one_average(frame):
    # Iteration 3's run at c4-q2000 missed its target: it stands apart from the other two.
    partly = frame.copy()
    late = (partly["mesh"] == "envoy-mtls") & (partly["step_index"] == 3)
    late &= (partly["iteration"] == 3) & (partly["phase"] == "measured")
    partly.loc[late, ["saturated", "actual_qps"]] = [True, 1500.0]
    points = ladder.ladder_points(partly)
    envoy = points[(points["mesh"] == "envoy-mtls") & (points["step_key"] == "c4-q2000")]
    assert sorted(zip(envoy["qps"], envoy["saturated"], strict=True)) == [
        (1500.0, True),
        (1990.0, False),
    ]

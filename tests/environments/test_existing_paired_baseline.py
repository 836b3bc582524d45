"""A mesh on existing clusters with its paired baseline, against fake clusters.

Each measured mesh run follows a run over the no-mesh path between the same two clusters:
nginx and Fortio in a namespace of their own without injection (``<prefix>-nomesh``), nginx
behind a LoadBalancer Service. The mesh's own install is covered in tests/meshes; here a
stand-in sidecar mesh (ClusterIP Service, an injection label, an in-cluster URL) is enough,
since the pairing is the backend's. The fake Fortio answers the mesh path with the study's
Istio results and the no-mesh path with its NSM results, so the two paths differ as a
mesh and a faster path do.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from meshbench.analysis.aggregate import summarize
from meshbench.analysis.report import comparison_frame
from meshbench.backend import PHASE_MEASURED, PHASE_PAIRED_BASELINE, RunContext
from meshbench.cli import main as cli_main
from meshbench.kube.cluster import Clusters
from meshbench.meshes.baseline import BaselineInstaller
from meshbench.results.fortio import parse_result
from meshbench.workloads.kubernetes import NGINX, WorkloadProfile

from .conftest import World, seed_documents

NO_MESH_URL = "http://198.18.0.80:80/"  # the fake cluster's LoadBalancer address


class SidecarMeshStandIn(BaselineInstaller):
    """Just enough of a sidecar mesh for the backend: nothing to install (as the
    baseline), an injection label on its namespace, nginx reached by its in-cluster name."""

    name = "istio"

    def workload_profile(self, ctx: RunContext) -> WorkloadProfile:
        return WorkloadProfile(
            namespace_labels={"istio-injection": "enabled"}, path="fortio -> sidecars -> nginx"
        )

    def describe_target(self, ctx: RunContext) -> str:
        return f"http://{NGINX}.{ctx.resource_prefix}:80/"

    def target_url(self, ctx: RunContext, clusters: Clusters) -> str:
        return self.describe_target(ctx)


PAIRED = {
    "installer": SidecarMeshStandIn,
    "results_by_url": {NO_MESH_URL: seed_documents("nsmvl3")},
}


def _measurement_row(ctx: RunContext, iteration: int, phase: str, index: int, outcome) -> dict:
    result = parse_result(outcome.raw_result, f"{phase} {index}")
    return {
        "measurement_id": len(phase) * 100 + index,
        "run_id": 1,
        "environment": ctx.environment,
        "mesh": ctx.mesh,
        "mesh_version_key": "",
        "benchmark_date": pd.Timestamp("2026-12-06").date(),
        "load_profile_key": "q6000-c1-d0.4s",
        "phase": phase,
        "iteration": iteration,
        "run_index": index,
        "positive": outcome.failure is None,
        "actual_qps": result.ActualQPS,
        "avg_ms": result.DurationHistogram.Avg * 1000,
        **{
            f"p{name}_ms": result.percentile_ms(percentile)
            for name, percentile in (("50", 50), ("90", 90), ("99", 99), ("999", 99.9))
        },
    }


@pytest.mark.parametrize("world", [PAIRED], indirect=True)
def test_each_mesh_run_follows_a_no_mesh_run_and_the_added_latency_is_filled(world: World):
    backend, ctx = world.backend, world.ctx
    assert backend.paired_baseline()
    mesh_ns, no_mesh_ns = ctx.resource_prefix, f"{ctx.resource_prefix}-nomesh"
    backend.create_clusters(ctx)
    backend.prepare_pair(ctx)
    backend.deploy_workloads(ctx, 1)
    # The no-mesh path has its own namespace in both clusters, without the injection label,
    # and its nginx behind a LoadBalancer Service.
    for role, api in world.apis.items():
        namespace = api.get("v1", "Namespace", no_mesh_ns)
        assert namespace is not None, role
        assert "istio-injection" not in namespace["metadata"]["labels"]
        assert api.get("v1", "Namespace", mesh_ns)["metadata"]["labels"]["istio-injection"]
    service = world.apis["server"].get("v1", "Service", NGINX, no_mesh_ns)
    assert service["spec"]["type"] == "LoadBalancer"
    assert world.apis["server"].get("v1", "Service", NGINX, mesh_ns)["spec"]["type"] == "ClusterIP"

    ready = backend.wait_workloads_ready(ctx, 1)
    assert ready["target_url"] == f"http://nginx.{mesh_ns}:80/"
    assert ready["paired_baseline_target_url"] == NO_MESH_URL

    rows = []
    started = len(world.fortio.requests)
    for index in (1, 2):  # B1 M1 B2 M2, as pipeline.steps runs them
        for phase in (PHASE_PAIRED_BASELINE, PHASE_MEASURED):
            outcome = backend.run_load(ctx, 1, phase, index)
            assert outcome.failure is None, (phase, index, outcome.failure)
            rows.append(_measurement_row(ctx, 1, phase, index, outcome))
            if phase == PHASE_PAIRED_BASELINE:
                assert outcome.context["namespace"] == no_mesh_ns
                assert outcome.context["path"] == "no-mesh"
                assert outcome.context["target_url"] == NO_MESH_URL
                assert outcome.context["like_for_like"]["crosses_load_balancer"] is True
                assert {s["namespace"] for s in outcome.resource_samples} == {no_mesh_ns}
            else:
                assert outcome.context["namespace"] == mesh_ns
                assert outcome.context["target_url"] == f"http://nginx.{mesh_ns}:80/"
                assert {s["namespace"] for s in outcome.resource_samples} == {mesh_ns}
    runs = [
        body["url"]
        for _, path, body in world.fortio.requests[started:]
        if body and body.get("async") == "on"
    ]
    assert runs == [NO_MESH_URL, f"http://nginx.{mesh_ns}:80/"] * 2

    table = comparison_frame(summarize(pd.DataFrame(rows))).iloc[0]
    baseline = [r for r in rows if r["phase"] == PHASE_PAIRED_BASELINE]
    measured = [r for r in rows if r["phase"] == PHASE_MEASURED]
    added = sum(r["avg_ms"] for r in measured) / 2 - sum(r["avg_ms"] for r in baseline) / 2
    ratio = sum(r["actual_qps"] for r in measured) / sum(r["actual_qps"] for r in baseline)
    assert table["avg added vs paired baseline"] == pytest.approx(added)
    assert table["QPS ratio vs paired baseline"] == pytest.approx(ratio)
    assert 0.2 < added < 0.5 and 0.3 < ratio < 0.45  # Istio's results against NSM's

    backend.uninstall_mesh(ctx, 1)
    for api in world.apis.values():
        assert api.get("v1", "Namespace", no_mesh_ns) is None
        assert api.get("v1", "Namespace", mesh_ns) is None


@pytest.mark.parametrize("mesh", ["istio", "kuma", "nsm"])
@pytest.mark.parametrize("environment", ["existing", "aws", "capi"])
def test_kubernetes_plans_interleave_paired_baseline_and_mesh_runs(
    environment: str, mesh: str, capsys: pytest.CaptureFixture[str]
):
    assert cli_main(["plan", "--env", environment, "--mesh", mesh]) == 0
    out = capsys.readouterr().out
    runs = re.findall(r"iteration_01\.(\S+) \[client\]: [^\n]*Fortio run of", out)
    assert runs[0] == "warmup"
    assert runs[1:] == [
        f"{phase}_{n:02d}" for n in (1, 2, 3) for phase in ("paired-baseline", "measured")
    ]
    assert "paired baseline (no mesh, same clusters) Fortio run" in out
    assert "-nomesh/nginx>:80/" in out

"""A Backend test double that replays the study's published Fortio results.

It exercises the pipeline's bookkeeping (artifacts, failures, negatives, attempts)
without clusters; the local environment's own end-to-end tests measure for real.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from meshbench.backend import Backend, MeasurementOutcome, Plan, RunContext, Step, StepFailed

SEED = Path(__file__).parents[1] / "data" / "seed-results" / "equinix-metal-2023-11-16" / "kmz"


class ReplayBackend(Backend):
    environment = "local"
    mesh = "envoy-mtls"
    holds_machine = True
    counts_cluster_minutes = False

    def __init__(
        self,
        config,
        fail: dict[str, str] | None = None,
        bad_runs: set[tuple[int, int]] = frozenset(),
    ) -> None:
        super().__init__(config)
        self.fail = fail or {}
        self.bad_runs = bad_runs
        self.calls: list[str] = []
        self.reclaimed: list[str | None] = []
        self.files = sorted(SEED.glob("*.json"))

    def _step(self, name: str) -> dict[str, Any]:
        self.calls.append(name)
        if name in self.fail:
            raise StepFailed(self.fail[name])
        return {"step": name}

    def reclaim_machine(self, silent_run_prefix: str | None) -> None:
        self.reclaimed.append(silent_run_prefix)

    def plan(self, ctx: RunContext) -> Plan:
        return Plan(ctx.environment, ctx.mesh, (Step("measure", "process", "replay"),))

    def create_clusters(self, ctx):
        return self._step("create_clusters")

    def prepare_pair(self, ctx):
        return self._step("prepare_pair")

    def install_mesh(self, ctx, iteration):
        return self._step(f"install_mesh:{iteration}")

    def wait_mesh_ready(self, ctx, iteration):
        return self._step(f"wait_mesh_ready:{iteration}")

    def deploy_workloads(self, ctx, iteration):
        return self._step(f"deploy_workloads:{iteration}")

    def wait_workloads_ready(self, ctx, iteration):
        return self._step(f"wait_workloads_ready:{iteration}")

    def run_load(self, ctx, iteration, phase, run_index):
        self.calls.append(f"run_load:{iteration}:{phase}:{run_index}")
        document = copy.deepcopy(json.loads(self.files[(iteration + run_index) % 5].read_text()))
        if (iteration, run_index) in self.bad_runs and phase == "measured":
            document["RetCodes"]["503"] = 3
        return MeasurementOutcome(raw_result=document, context={"load_generator": "replay"})

    def uninstall_mesh(self, ctx, iteration):
        self._step(f"uninstall_mesh:{iteration}")

    def delete_clusters(self, ctx):
        self._step("delete_clusters")

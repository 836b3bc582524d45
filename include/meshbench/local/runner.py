"""A whole local run in this process through the pipeline (``pipeline.inprocess``), with
what the local tests and the fidelity benchmark check afterwards: the processes the run
started and its topology, read just before the teardown removes them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from sqlalchemy import Engine

from meshbench.backend import RunContext
from meshbench.config import BenchmarkConfig
from meshbench.local.backend import LocalBackend
from meshbench.local.processes import ProcessRecord
from meshbench.local.state import RunState
from meshbench.local.topology import Topology
from meshbench.pipeline.inprocess import InProcessRun, run_in_process
from meshbench.pipeline.steps import RunObserver
from meshbench.results.loader import MeasurementRecord

# The load profile name runs made outside the DAGs are recorded under.
CLI_LOAD_PROFILE = "cli"


@dataclass
class LocalRun(InProcessRun):
    started_processes: list[ProcessRecord] = field(default_factory=list)
    topology: Topology | None = None


def run_local(
    backend: LocalBackend,
    ctx: RunContext,
    paired_baseline: bool | None = None,
    on_measurement: Callable[[MeasurementRecord], None] | None = None,
    during_run: Callable[[int, str, int], None] | None = None,
    engine: Engine | None = None,
) -> LocalRun:
    """Run ``ctx``'s load on ``backend`` (loaded into ``engine`` when given). ``during_run``
    is called just before each load-generator run (tests use it to inject faults)."""
    config = ctx.config
    if paired_baseline is not None:
        config = with_paired_baseline(config, paired_baseline)
    before_teardown: list[RunState] = []

    def before_task(task_id: str) -> None:
        state = backend.folder(ctx).read() if task_id == "delete_clusters" else None
        if state is not None:
            before_teardown.append(state)

    run = run_in_process(
        config,
        "local",
        backend.mesh,
        dag_id=ctx.dag_id,
        run_id=ctx.run_id,
        load=ctx.load,
        load_profile_name=CLI_LOAD_PROFILE,
        backend=backend,
        engine=engine,
        loads_results=engine is not None,
        observer=RunObserver(before_load_run=during_run, after_load_run=on_measurement),
        before_task=before_task,
    )
    return LocalRun(
        **{item.name: getattr(run, item.name) for item in fields(InProcessRun)},
        started_processes=[p for state in before_teardown for p in state.history],
        topology=before_teardown[-1].topology if before_teardown else None,
    )


def with_paired_baseline(config: BenchmarkConfig, enabled: bool) -> BenchmarkConfig:
    """``config`` with the local environment's paired baseline turned on or off."""
    local = config.environments.local.model_copy(update={"paired_baseline": enabled})
    environments = config.environments.model_copy(update={"local": local})
    return config.model_copy(update={"environments": environments})

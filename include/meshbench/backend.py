"""The contract between the DAG factory and what it benchmarks.

A ``Backend`` is one environment × mesh pair. The DAG calls its methods one per task, each
in its own process (possibly on another worker), so every method takes the ``RunContext``
and finds what earlier tasks created from deterministic names, never from memory. The
only exception is the local environment, whose tasks are pinned to one worker queue and
may keep state in the project's state folder.

Methods raise ``StepFailed`` (or any exception) to fail a step; the pipeline turns a failed
iteration into negative measurements carrying the failing task and reason. Nothing a
method returns may contain a secret: it travels through XCom.
"""

from __future__ import annotations

import abc
import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

from meshbench.config import BenchmarkConfig, LoadProfile

PHASE_WARMUP = "warmup"
PHASE_PAIRED_BASELINE = "paired-baseline"
PHASE_MEASURED = "measured"
PHASES = (PHASE_WARMUP, PHASE_PAIRED_BASELINE, PHASE_MEASURED)


class StepFailed(RuntimeError):
    """A step that did not succeed; the message is stored as the negative reason."""


@dataclass(frozen=True)
class Step:
    """One planned action: a command line, an API call or a manifest to apply."""

    phase: str  # e.g. "create_clusters", "install_mesh", "measure"
    kind: str  # "command", "api", "manifest", "wait", "http", "process"
    description: str
    detail: str = ""  # the command line, API call or manifest text
    cluster: str | None = None  # "client", "server" or None for both/neither

    def render(self) -> str:
        where = f" [{self.cluster}]" if self.cluster else ""
        text = f"{self.phase}{where}: {self.description}"
        if self.detail:
            indented = "\n".join(f"      {line}" for line in self.detail.splitlines())
            text += f"\n{indented}"
        return text


@dataclass(frozen=True)
class Plan:
    environment: str
    mesh: str
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    def render(self) -> str:
        lines = [f"Plan for environment {self.environment!r}, mesh {self.mesh!r}"]
        lines += [f"WARNING: {warning}" for warning in self.warnings]
        lines += [f"{number:3d}. {step.render()}" for number, step in enumerate(self.steps, 1)]
        return "\n".join(lines)

    def render_markdown(self) -> str:
        lines = [f"### Plan: `{self.environment}` × `{self.mesh}`", ""]
        lines += [f"> **Warning:** {warning}" for warning in self.warnings]
        for number, step in enumerate(self.steps, 1):
            where = f" ({step.cluster})" if step.cluster else ""
            lines.append(f"{number}. **{step.phase}**{where}: {step.description}")
            if step.detail:
                lines.append("")
                lines += ["   ```", *(f"   {line}" for line in step.detail.splitlines()), "   ```"]
        return "\n".join(lines)


def run_slug(dag_id: str, run_id: str, try_key: str = "") -> str:
    """A short, deterministic name for one DAG run's resources (retries adopt them)."""
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{try_key}".encode()).hexdigest()
    return digest[:8]


@dataclass(frozen=True)
class RunContext:
    """Everything a step needs to know about the DAG run it belongs to."""

    config: BenchmarkConfig
    environment: str
    mesh: str
    dag_id: str
    run_id: str
    load: LoadProfile
    mesh_version: str | None = None
    slug: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.slug:
            object.__setattr__(self, "slug", run_slug(self.dag_id, self.run_id))
        if not re.fullmatch(r"[a-z0-9]{4,12}", self.slug):
            raise ValueError(f"run slug {self.slug!r} must be 4-12 lower-case letters or digits")

    def at_step(self, index: int) -> RunContext:
        """The context of load step ``index``: its load alone, and the step in the labels
        every load generator attaches to its result (a one-step profile adds none)."""
        if not self.load.steps:
            return self
        load = self.load.at_step(index)
        labels = {**self.labels, "step": load.step_key()}
        return replace(self, load=load, labels=labels)

    @property
    def resource_prefix(self) -> str:
        """Prefix of every resource this run creates (namespaces, clusters, processes)."""
        return f"mb-{self.slug}"


@dataclass
class MeasurementOutcome:
    """What one load-generator run produced.

    ``raw_result`` is the Fortio-shaped result JSON (kept even when the run is negative);
    ``failure`` is set when the run could not be judged on its result alone (a component
    died, the port-forward dropped, a container hit its CPU limit). ``context`` records the
    conditions (machine load, network mode, load generator and its mode, like-for-like
    settings); ``resource_samples`` holds metrics-server samples taken during the run.
    """

    raw_result: dict[str, Any] | None
    failure: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    resource_samples: list[dict[str, Any]] = field(default_factory=list)


class Backend(abc.ABC):
    """One environment × mesh. Subclasses implement each DAG task as a method."""

    environment: str
    mesh: str
    # What the generic pipeline asks of a backend instead of naming environments:
    # its steps run as processes on this machine, so runs must take turns (the lease).
    holds_machine: bool = False
    # Its clusters exist (and may cost) from create to delete: the run records the minutes.
    counts_cluster_minutes: bool = True

    def __init__(self, config: BenchmarkConfig) -> None:
        self.config = config
        # True where one process runs the whole run (``meshbench local run``): backends
        # whose resources are processes record it as their owner, so a killed run's
        # leftovers are reaped as soon as that process is gone.
        self.owned_by_this_process = False

    def reclaim_machine(self, silent_run_prefix: str | None) -> None:
        """Called by a run that holds the machine as it takes it: remove what killed runs
        left, and what ``silent_run_prefix`` (the run it took the machine from) started.
        Only backends that hold the machine have anything to reclaim."""
        return None

    @abc.abstractmethod
    def plan(self, ctx: RunContext) -> Plan:
        """Every step in order, without running anything."""

    @abc.abstractmethod
    def create_clusters(self, ctx: RunContext) -> dict[str, Any]:
        """Create (or adopt) both clusters; returns a description without secrets."""

    def prepare_pair(self, ctx: RunContext) -> dict[str, Any]:
        """Once-per-pair set-up (shared CA, federation, metrics-server)."""
        return {}

    @abc.abstractmethod
    def install_mesh(self, ctx: RunContext, iteration: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    def wait_mesh_ready(self, ctx: RunContext, iteration: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    def deploy_workloads(self, ctx: RunContext, iteration: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    def wait_workloads_ready(self, ctx: RunContext, iteration: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    def run_load(
        self, ctx: RunContext, iteration: int, phase: str, run_index: int
    ) -> MeasurementOutcome:
        """One load-generator run; ``phase`` is warmup, paired-baseline or measured.

        Never raises for a failed measurement: returns an outcome with ``failure`` set so
        the iteration's other data is kept.
        """

    @abc.abstractmethod
    def uninstall_mesh(self, ctx: RunContext, iteration: int) -> None:
        """Teardown of install_mesh (and the workloads); tolerates what is already gone."""

    @abc.abstractmethod
    def delete_clusters(self, ctx: RunContext) -> dict[str, Any] | None:
        """Teardown of create_clusters; tolerates what is already gone.

        May return what the pair cost (``cluster_minutes``, an estimated cost), which is
        recorded with the run.
        """

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        """Settings recorded with the run: cluster spec, like-for-like settings, versions."""
        return {}

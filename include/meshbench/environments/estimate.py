"""Cost and duration estimates for a matrix of DAG runs, from the configuration alone.

Everything here is arithmetic on settings: the load profile (iterations, runs, durations),
the environment's assumed step timings (``timings``) and its list prices (``prices``). No
cloud is asked. The numbers are estimates and are always printed as such; the actual
cluster-minutes of each run are measured by ``delete_clusters``.

Model of one DAG run: create + prepare + iterations × (mesh install and readiness +
workloads + warm-up + measured runs + uninstall) + delete. The clusters are billed for the
whole run; load balancers only while a mesh is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshbench.config import (
    MESH_NAMES,
    AwsEnvironment,
    BenchmarkConfig,
    CapiEnvironment,
    RunTimings,
)

CLUSTERS_PER_RUN = 2
CAPI_MACHINES_PER_CLUSTER = 2  # one control plane, one worker
DEFAULT_MESH_INSTALL_MINUTES = 5.0
RUNS_PER_DAY = {"@daily": 1.0, "@hourly": 24.0, "@weekly": 1 / 7, "@once": 0.0}
DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class DagEstimate:
    environment: str
    mesh: str
    minutes: float
    cost_usd: float | None
    breakdown: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "mesh": self.mesh,
            "minutes": round(self.minutes, 1),
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 2),
            "breakdown": {key: round(value, 2) for key, value in self.breakdown.items()},
        }


@dataclass(frozen=True)
class MatrixEstimate:
    environment: str
    enabled: bool
    schedule: str
    pool_slots: int
    dags: tuple[DagEstimate, ...]
    basis: str

    @property
    def cost_usd(self) -> float | None:
        costs = [dag.cost_usd for dag in self.dags]
        return None if any(cost is None for cost in costs) else sum(costs)  # type: ignore[misc]

    @property
    def busy_minutes(self) -> float:
        return sum(dag.minutes for dag in self.dags)

    @property
    def wall_minutes(self) -> float:
        """If every DAG starts together: bounded by the longest DAG and by the pool."""
        if not self.dags:
            return 0.0
        return max(max(dag.minutes for dag in self.dags), self.busy_minutes / self.pool_slots)

    @property
    def runs_per_day(self) -> float | None:
        return RUNS_PER_DAY.get(self.schedule)

    @property
    def cost_per_month(self) -> float | None:
        cost, per_day = self.cost_usd, self.runs_per_day
        if cost is None or per_day is None:
            return None
        return cost * per_day * DAYS_PER_MONTH

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "enabled": self.enabled,
            "schedule": self.schedule,
            "dags": [dag.as_dict() for dag in self.dags],
            "cost_usd_per_matrix": None if self.cost_usd is None else round(self.cost_usd, 2),
            "cost_usd_per_month": (
                None if self.cost_per_month is None else round(self.cost_per_month, 2)
            ),
            "wall_minutes": round(self.wall_minutes, 1),
            "basis": self.basis,
        }


def _timings(config: BenchmarkConfig, environment: str) -> RunTimings:
    settings = config.environment(environment)
    timings = getattr(settings, "timings", None)
    if timings is not None:
        return timings
    if environment == "local":  # processes on this machine: seconds per step
        quick = 0.2
        return RunTimings(
            create_minutes=quick,
            delete_minutes=quick,
            prepare_minutes=quick,
            mesh_install_minutes={mesh: quick for mesh in MESH_NAMES},
            workload_minutes=quick,
            uninstall_minutes=quick,
            run_overhead_seconds=5.0,
        )
    # existing creates and deletes nothing; the mesh steps take as long as anywhere.
    return RunTimings(create_minutes=0.5, delete_minutes=1.0, prepare_minutes=2.0)


def dag_minutes(config: BenchmarkConfig, environment: str, mesh: str) -> dict[str, float]:
    """Minutes per part of one DAG run of ``environment`` × ``mesh``."""
    load = config.load_profile_for(environment)
    timings = _timings(config, environment)
    run = load.duration / 60 + timings.run_overhead_seconds / 60
    measured = len(load.ladder()) * load.runs_per_iteration * run
    paired = measured if config.paired_baseline(environment, mesh) else 0.0
    warmup = (load.effective_warmup_duration / 60 + timings.run_overhead_seconds / 60) * (
        1 if load.warmup else 0
    )
    mesh_setup = timings.mesh_install_minutes.get(mesh, DEFAULT_MESH_INSTALL_MINUTES)
    iteration = mesh_setup + timings.workload_minutes + warmup + measured + paired
    iteration += timings.uninstall_minutes
    return {
        "create": timings.create_minutes,
        "prepare": timings.prepare_minutes,
        "iterations": load.iterations * iteration,
        "mesh_installed": load.iterations * (iteration - timings.uninstall_minutes),
        "delete": timings.delete_minutes,
    }


def estimate_dag(config: BenchmarkConfig, environment: str, mesh: str) -> DagEstimate:
    parts = dag_minutes(config, environment, mesh)
    minutes = parts["create"] + parts["prepare"] + parts["iterations"] + parts["delete"]
    hours = minutes / 60
    settings = config.environment(environment)
    breakdown = {key: value for key, value in parts.items() if key != "mesh_installed"}
    cost: float | None = None
    if isinstance(settings, AwsEnvironment):
        prices = settings.prices
        control_planes = CLUSTERS_PER_RUN * hours * prices.cluster_hour
        nodes = CLUSTERS_PER_RUN * settings.node_count * hours * prices.node_hour
        balancers = (
            settings.load_balancers_per_mesh.get(mesh, 0)
            * parts["mesh_installed"]
            / 60
            * prices.load_balancer_hour
        )
        cost = control_planes + nodes + balancers
        breakdown.update(
            {"usd_control_planes": control_planes, "usd_nodes": nodes, "usd_lbs": balancers}
        )
    elif isinstance(settings, CapiEnvironment):
        machines = CLUSTERS_PER_RUN * CAPI_MACHINES_PER_CLUSTER * hours
        cost = machines * settings.prices.machine_hour
        breakdown["usd_machines"] = cost
    return DagEstimate(environment, mesh, minutes, cost, breakdown)


def _basis(config: BenchmarkConfig, environment: str) -> str:
    settings = config.environment(environment)
    load = config.load_profile_name_for(environment)
    if isinstance(settings, AwsEnvironment):
        prices = settings.prices
        return (
            f"load profile {load!r}; {CLUSTERS_PER_RUN} EKS clusters at "
            f"${prices.cluster_hour}/h + {settings.node_count} x {settings.instance_type} at "
            f"${prices.node_hour}/h each, load balancers at ${prices.load_balancer_hour}/h; "
            "traffic, EBS and the shared network stack not included"
        )
    if isinstance(settings, CapiEnvironment):
        return (
            f"load profile {load!r}; {CLUSTERS_PER_RUN} clusters x "
            f"{CAPI_MACHINES_PER_CLUSTER} {settings.machine_type} at "
            f"${settings.prices.machine_hour}/h; the management cluster not included"
        )
    return f"load profile {load!r}; no cloud cost (clusters are not created by meshbench)"


def estimate_environment(
    config: BenchmarkConfig, environment: str, meshes: list[str] | None = None
) -> MatrixEstimate:
    """The environment's daily matrix: one run of each of its meshes."""
    settings = config.environment(environment)
    chosen = list(meshes) if meshes is not None else list(settings.meshes)
    return MatrixEstimate(
        environment=environment,
        enabled=settings.enabled,
        schedule=config.schedule_for(environment),
        pool_slots=settings.pool.slots,
        dags=tuple(estimate_dag(config, environment, mesh) for mesh in chosen),
        basis=_basis(config, environment),
    )


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def _duration(minutes: float) -> str:
    hours, rest = divmod(round(minutes), 60)
    return f"{hours}h{rest:02d}m" if hours else f"{rest}m"


def render_estimate(estimate: MatrixEstimate) -> str:
    state = "enabled" if estimate.enabled else "disabled in the config"
    lines = [
        f"{estimate.environment} ({state}, schedule {estimate.schedule}): ESTIMATE",
        f"  {'DAG':<32} {'duration':>9} {'cost':>10}",
    ]
    for dag in estimate.dags:
        name = f"meshbench_{dag.environment}_{dag.mesh}"
        lines.append(f"  {name:<32} {_duration(dag.minutes):>9} {_money(dag.cost_usd):>10}")
    lines.append(
        f"  {'whole matrix (one run each)':<32} {_duration(estimate.busy_minutes):>9} "
        f"{_money(estimate.cost_usd):>10}"
    )
    lines.append(
        f"  wall time if started together (pool of {estimate.pool_slots}): "
        f"about {_duration(estimate.wall_minutes)}"
    )
    if estimate.cost_per_month is not None:
        lines.append(f"  per month at {estimate.schedule}: about {_money(estimate.cost_per_month)}")
    lines.append(f"  basis: {estimate.basis}")
    return "\n".join(lines)

"""The Kubernetes backend: one environment's clusters × one mesh installer.

Every Kubernetes environment (existing, aws, capi) runs the same per-iteration steps; only
where the clusters come from differs. ``KubernetesBackend`` implements the DAG's tasks
from three parts:

- a *cluster source* (``ClusterSource``): creates/adopts, prepares and deletes the two
  clusters and gives per-task ``ClusterAccess`` to them (``existing.ExistingClusters``;
  the aws and capi providers follow the same shape);
- a *mesh installer* (``meshes.base.MeshInstaller``);
- the workloads, the Fortio client and metrics-server sampling, which are the same for all.

Each task opens the clusters it needs from deterministic names (namespace
``ctx.resource_prefix`` in both clusters), so a retry or another worker finds what an
earlier task made. Returned dicts hold names and settings only, never credentials.

With a paired baseline (``paired_baseline`` of the environment), every iteration also
deploys nginx and Fortio in a namespace of their own beside the mesh's
(``<prefix>-nomesh``: no injection labels, no NSM annotations) with nginx behind a
LoadBalancer Service, the baseline mesh's path; each measured mesh run follows a run over
that path between the same two clusters (B1 M1 B2 M2 …, the order pipeline.steps runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from meshbench.backend import (
    PHASE_MEASURED,
    PHASE_PAIRED_BASELINE,
    PHASE_WARMUP,
    Backend,
    MeasurementOutcome,
    Plan,
    RunContext,
    Step,
    StepFailed,
)
from meshbench.config import (
    BenchmarkConfig,
    KubernetesSettings,
    MetricsServerSettings,
    ResourceCostSettings,
)
from meshbench.kube.access import ClusterAccess
from meshbench.kube.api import SUMMARY_PATH
from meshbench.kube.cluster import ApiFactory, Clusters, KubeCluster, default_api_factory
from meshbench.kube.cost import CostMeter
from meshbench.kube.load_balancers import LoadBalancerPolicy, policy_from
from meshbench.kube.metrics import (
    ResourceSampler,
    SampleScope,
    cpu_limit_failure,
    ensure_metrics_server,
    install_commands,
    samples_within,
)
from meshbench.kube.ops import (
    Op,
    apply_op,
    call_op,
    delete_op,
    plan_steps,
    run_ops,
    wait_op,
)
from meshbench.kube.portforward import port_forward_args
from meshbench.kube.redact import format_command
from meshbench.kube.runner import CommandRunner
from meshbench.kube.waits import Readiness, gone_state, wait_for
from meshbench.meshes.base import MeshInstaller
from meshbench.meshes.baseline import describe_load_balancer_target, load_balancer_url
from meshbench.names import ROLES
from meshbench.names import iteration_task_id as iteration_phase
from meshbench.workloads.kubernetes import (
    FORTIO,
    FORTIO_REST_PORT,
    NGINX,
    NO_MESH_PROFILE,
    WorkloadManifests,
    WorkloadProfile,
    paired_baseline_namespace,
    render_workloads,
    workload_record,
)

log = logging.getLogger(__name__)

FORTIO_TARGET = f"deployment/{FORTIO}"
# A run at least this long must see a metrics-server sample taken during it (metrics-server
# refreshes every 15 s); shorter runs may legitimately see none.
MIN_SECONDS_FOR_SAMPLES = 30.0


class ClusterSource(Protocol):
    """Where the two clusters come from (see ``existing.ExistingClusters``; the cloud
    providers' ``ClusterProvider`` has the same methods)."""

    environment: str

    def plan_warnings(self, ctx: RunContext) -> list[str]: ...
    def plan_create(self, ctx: RunContext) -> list[Step]: ...
    def plan_prepare(self, ctx: RunContext) -> list[Step]: ...
    def plan_delete(self, ctx: RunContext) -> list[Step]: ...
    def create(self, ctx: RunContext) -> dict[str, Any]: ...
    def prepare(self, ctx: RunContext) -> dict[str, Any]: ...
    def delete(self, ctx: RunContext) -> dict[str, Any]: ...
    def access(self, ctx: RunContext, role: str) -> ClusterAccess: ...
    def service_annotations(self) -> dict[str, str]: ...
    def load_balancer_source_ranges(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> list[str]: ...
    def run_info(self, ctx: RunContext) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LoadPath:
    """Where one kind of run sends its load: the mesh's path, or the paired no-mesh path."""

    name: str  # "mesh" or "no-mesh"
    namespace: str
    profile: WorkloadProfile
    describe_target: str
    target_url: Callable[[Clusters], str]
    sample_scopes: tuple[SampleScope, ...]
    # What each run's cost counts: the sampled containers and the mesh's control plane.
    cost_scopes: tuple[SampleScope, ...] = ()


class KubernetesBackend(Backend):
    def __init__(
        self,
        config: BenchmarkConfig,
        source: ClusterSource,
        installer: MeshInstaller,
        *,
        runner: CommandRunner | None = None,
        api_factory: ApiFactory = default_api_factory,
        metrics_server: MetricsServerSettings | None = None,
        resource_cost: ResourceCostSettings | None = None,
        node_selector: dict[str, str] | None = None,
        poll_interval: float = 2.0,
        probe_interval: float = 5.0,
        fortio_poll_interval: float = 2.0,
        fortio_grace: float = 60.0,
    ) -> None:
        super().__init__(config)
        self.source = source
        self.installer = installer
        self.environment = source.environment
        self.mesh = installer.name
        self.settings: KubernetesSettings = config.kubernetes
        self.runner = runner or CommandRunner(default_timeout=self.settings.timeouts.command)
        self.api_factory = api_factory
        self.metrics_server = metrics_server or self.settings.metrics_server
        self.resource_cost = resource_cost or self.settings.resource_cost
        self.node_selector = node_selector
        self.poll_interval = poll_interval
        self.probe_interval = probe_interval
        self.fortio_poll_interval = fortio_poll_interval
        self.fortio_grace = fortio_grace
        # The mesh's LoadBalancer Services (gateways, KDS, exposed DNS, ...) need the same
        # environment settings as nginx's.
        installer.use_load_balancer_policy(self.load_balancer_policy)

    # ------------------------------------------------------------------ helpers
    def namespace(self, ctx: RunContext) -> str:
        return ctx.resource_prefix

    def paired_baseline(self) -> bool:
        return self.config.paired_baseline(self.environment, self.mesh)

    def mesh_path(self, ctx: RunContext) -> LoadPath:
        namespace = self.namespace(ctx)
        profile = self.installer.workload_profile(ctx)
        sampled = (
            SampleScope("client", namespace, container_roles=profile.container_roles),
            SampleScope("server", namespace, container_roles=profile.container_roles),
            *profile.extra_sample_scopes,
        )
        return LoadPath(
            "mesh",
            namespace,
            profile,
            self.installer.describe_target(ctx),
            lambda clusters: self.installer.target_url(ctx, clusters),
            sampled,
            (*sampled, *profile.control_plane_scopes),
        )

    def no_mesh_path(self, ctx: RunContext) -> LoadPath:
        namespace = paired_baseline_namespace(self.namespace(ctx))
        return LoadPath(
            "no-mesh",
            namespace,
            NO_MESH_PROFILE,
            describe_load_balancer_target(namespace),
            lambda clusters: load_balancer_url(clusters, namespace),
            (SampleScope("client", namespace), SampleScope("server", namespace)),
            (SampleScope("client", namespace), SampleScope("server", namespace)),
        )

    def paths(self, ctx: RunContext) -> list[LoadPath]:
        """The mesh's path, then the paired no-mesh path when there is one."""
        return [self.mesh_path(ctx)] + ([self.no_mesh_path(ctx)] if self.paired_baseline() else [])

    def path_for(self, ctx: RunContext, phase: str) -> LoadPath:
        return self.no_mesh_path(ctx) if phase == PHASE_PAIRED_BASELINE else self.mesh_path(ctx)

    def clusters(self, ctx: RunContext) -> Clusters:
        return Clusters(
            {role: self.source.access(ctx, role) for role in ROLES},
            self.runner,
            self.api_factory,
            self.poll_interval,
        )

    def load_balancer_policy(
        self, ctx: RunContext, role: str, clients: Sequence[str] | None = None
    ) -> LoadBalancerPolicy:
        """What every LoadBalancer Service in cluster ``role`` gets from the environment;
        ``clients``: the clusters whose workloads use the Service (default: the other)."""
        return policy_from(self.source, ctx, role, clients)

    def manifests(self, ctx: RunContext, path: LoadPath | None = None) -> WorkloadManifests:
        path = path or self.mesh_path(ctx)
        policy = self.load_balancer_policy(ctx, "server")
        return render_workloads(
            path.namespace,
            ctx.slug,
            self.settings,
            path.profile,
            node_selector=self.node_selector,
            environment_service_annotations=policy.annotations,
            load_balancer_source_ranges=policy.source_ranges,
        )

    def _run(self, ctx: RunContext, ops: list[Op]) -> dict[str, Any]:
        with self.clusters(ctx) as clusters:
            return run_ops(ops, clusters)

    # ------------------------------------------------------------------ ops per task
    def prepare_ops(self, ctx: RunContext) -> list[Op]:
        settings = self.metrics_server
        timeouts = self.settings.timeouts
        install = "\n".join(
            format_command(["kubectl", *args]) for args in install_commands(settings)
        )
        ops = []
        for role in ROLES:
            detail = (
                "GET apiregistration.k8s.io/v1 APIService v1beta1.metrics.k8s.io\n"
                + (
                    f"if it is missing:\n{install}\n"
                    if settings.install == "if-missing"
                    else "if it is missing: fail (kubernetes.metrics_server.install is 'never')\n"
                )
                + f"wait up to {timeouts.metrics_api:g}s for its condition Available"
            )

            def ensure(clusters: Clusters, role: str = role) -> dict[str, Any]:
                outcome = ensure_metrics_server(
                    clusters[role], settings, timeouts.metrics_api, timeouts.command
                )
                return {f"metrics_server_{role}": outcome}

            ops.append(
                call_op(
                    "prepare_pair",
                    role,
                    "api",
                    f"metrics API answers (install metrics-server "
                    f"{settings.version or 'for the cluster version'} if missing)",
                    ensure,
                    detail,
                )
            )
        return ops + self.installer.prepare_pair_ops(ctx)

    def deploy_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        phase = iteration_phase(iteration, "deploy_workloads")
        timeout = self.settings.timeouts.namespace_deletion
        ops = []
        for path in self.paths(ctx):
            manifests = self.manifests(ctx, path)
            namespace = manifests.namespace
            for role in ROLES:
                # The previous iteration deleted this namespace; a retry must not race it.
                ops.append(
                    wait_op(
                        phase,
                        role,
                        f"namespace {namespace} is not still being deleted",
                        lambda cluster, ns=namespace: _wait_not_terminating(cluster, ns, timeout),
                        f"GET v1 Namespace {namespace}; wait up to {timeout:g}s while Terminating",
                    )
                )
            suffix = " (paired baseline: no mesh)" if path.name == "no-mesh" else ""
            ops.append(
                apply_op(
                    phase, "server", manifests.server, f"nginx in namespace {namespace}{suffix}"
                )
            )
            ops.append(
                apply_op(
                    phase, "client", manifests.client, f"Fortio in namespace {namespace}{suffix}"
                )
            )
        return ops

    def workload_ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        phase = iteration_phase(iteration, "wait_workloads_ready")
        mesh = self.mesh_path(ctx)
        ops = self._rollout_ops(mesh, phase, "server_address")
        ops += self.installer.workload_ready_ops(ctx, iteration)
        ops.append(self._probe_op(mesh, phase))
        if self.paired_baseline():
            no_mesh = self.no_mesh_path(ctx)
            ops += self._rollout_ops(no_mesh, phase, "paired_baseline_server_address")
            ops.append(self._probe_op(no_mesh, phase, "paired_baseline_target_url"))
        return ops

    def _rollout_ops(self, path: LoadPath, phase: str, address_key: str) -> list[Op]:
        namespace = path.namespace
        timeouts = self.settings.timeouts
        ops = [
            wait_op(
                phase,
                "server",
                f"deployment {namespace}/{NGINX} rolled out",
                lambda cluster: cluster.wait_rollout(namespace, NGINX, timeouts.rollout),
                f"poll apps/v1 Deployment {namespace}/{NGINX} status every "
                f"{self.poll_interval:g}s, up to {timeouts.rollout:g}s",
            ),
            wait_op(
                phase,
                "client",
                f"deployment {namespace}/{FORTIO} rolled out",
                lambda cluster: cluster.wait_rollout(namespace, FORTIO, timeouts.rollout),
                f"poll apps/v1 Deployment {namespace}/{FORTIO} status every "
                f"{self.poll_interval:g}s, up to {timeouts.rollout:g}s",
            ),
        ]
        if path.profile.service_type == "LoadBalancer":
            ops.append(
                wait_op(
                    phase,
                    "server",
                    f"service {namespace}/{NGINX} has a LoadBalancer address",
                    lambda cluster: cluster.wait_load_balancer(
                        namespace, NGINX, timeouts.load_balancer
                    ),
                    f"poll v1 Service {namespace}/{NGINX} .status.loadBalancer.ingress[0] "
                    f"(ip or hostname), up to {timeouts.load_balancer:g}s",
                    record_as=address_key,
                )
            )
        return ops

    def _probe_op(self, path: LoadPath, phase: str, record_as: str = "target_url") -> Op:
        namespace = path.namespace
        timeout = self.settings.timeouts.probe
        forward = format_command(
            ["kubectl", *port_forward_args(namespace, FORTIO_TARGET, FORTIO_REST_PORT)]
        )

        def probe(clusters: Clusters) -> dict[str, Any]:
            target = path.target_url(clusters)
            client = clusters["client"]

            def attempt() -> Readiness:
                from meshbench.loadgen.fortio import FortioClient, FortioError

                with client.port_forward(namespace, FORTIO_TARGET, FORTIO_REST_PORT) as forward:
                    try:
                        FortioClient(forward.url, http_timeout=30.0).probe(target)
                    except FortioError as exc:
                        return Readiness(False, (exc.reason,))
                return Readiness(True)

            wait_for(
                attempt,
                what=f"client cluster: a request from Fortio to {target} returns 200",
                timeout=timeout,
                interval=self.probe_interval,
            )
            return {record_as: target}

        return call_op(
            phase,
            "client",
            "http",
            f"probe: Fortio requests {path.describe_target} and gets only 200s",
            probe,
            f"{forward}\nPOST /fortio/rest/run "
            '{"url": <target>, "qps": "-1", "c": "1", "n": "5", "timeout": "5s"} '
            f"(synchronous); retry up to {timeout:g}s",
        )

    def uninstall_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        phase = iteration_phase(iteration, "uninstall_mesh")
        return self._namespace_removal_ops(ctx, phase) + self.installer.uninstall_ops(
            ctx, iteration
        )

    def _namespace_removal_ops(self, ctx: RunContext, phase: str) -> list[Op]:
        timeout = self.settings.timeouts.namespace_deletion
        return [
            delete_op(
                phase,
                role,
                "v1",
                "Namespace",
                namespace,
                None,
                timeout,
                f"delete namespace {namespace} and wait until it is gone",
            )
            for namespace in self._namespaces(ctx)
            for role in ROLES
        ]

    def _namespaces(self, ctx: RunContext) -> list[str]:
        # The no-mesh namespace goes even when the paired baseline was switched off since
        # (deleting a namespace that is not there is tolerated).
        mesh = self.namespace(ctx)
        return [mesh, paired_baseline_namespace(mesh)]

    def run_load_steps(self, ctx: RunContext, iteration: int, phase: str, index: int) -> list[Step]:
        """What ``run_load`` does (its control flow is its own, so it is described here)."""
        path = self.path_for(ctx, phase)
        namespace = path.namespace
        task = phase if phase == PHASE_WARMUP else f"{phase}_{index:02d}"
        if "step" in ctx.labels and phase != PHASE_WARMUP:
            task = f"{ctx.labels['step']}.{task}"
        step_phase = iteration_phase(iteration, task)
        duration = (
            ctx.load.effective_warmup_duration if phase == PHASE_WARMUP else ctx.load.duration
        )
        body = self._fortio_request(ctx, iteration, phase, index, "<target>").body()
        steps = [
            Step(
                step_phase,
                "process",
                f"port-forward to Fortio's REST port {FORTIO_REST_PORT}",
                format_command(
                    ["kubectl", *port_forward_args(namespace, FORTIO_TARGET, FORTIO_REST_PORT)]
                ),
                "client",
            ),
        ]
        cost = self.resource_cost
        cost_scopes = "; ".join(scope.describe() for scope in path.cost_scopes)
        if phase != PHASE_WARMUP and cost.node_counters:
            steps.append(
                Step(
                    step_phase,
                    "api",
                    "idle window: the kubelet's CPU counters of every node running a pod of "
                    "the path, before and after it, give each node's and container's idle rate",
                    f"LIST v1 Pod in {cost_scopes} (their nodes)\n"
                    f"GET /api/v1/nodes/<node>/proxy/{SUMMARY_PATH} per node; again after "
                    f"{cost.idle_seconds:g}s once its counters are newer (up to "
                    f"{cost.fresh_stats_timeout:g}s more)",
                )
            )
        if phase != PHASE_WARMUP:
            scopes = "; ".join(scope.describe() for scope in path.sample_scopes)
            steps.append(
                Step(
                    step_phase,
                    "api",
                    "sample metrics-server during the run (every container on the path)",
                    f"every {self.metrics_server.sample_interval:g}s: LIST "
                    f"metrics.k8s.io/v1beta1 PodMetrics in {scopes}; a container at "
                    f"{self.metrics_server.cpu_limit_fraction:.0%} of its CPU limit makes the "
                    f"run negative",
                )
            )
        kind = {
            PHASE_WARMUP: "warm-up",
            PHASE_PAIRED_BASELINE: "paired baseline (no mesh, same clusters)",
        }.get(phase, "measured")
        steps.append(
            Step(
                step_phase,
                "http",
                f"{kind} Fortio run of {duration:g}s against {path.describe_target}"
                + (" (result discarded)" if phase == PHASE_WARMUP else ""),
                "POST /fortio/rest/run "
                + ", ".join(f'"{k}": "{v}"' for k, v in body.items())
                + f"\nGET /fortio/rest/status?runid=<id> every {self.fortio_poll_interval:g}s "
                f"(stop after {duration + self.fortio_grace:g}s)\n"
                "GET /fortio/data/<ResultID>.json",
                "client",
            )
        )
        steps.append(
            Step(step_phase, "process", "stop the port-forward (by its handle)", "", "client")
        )
        if phase != PHASE_WARMUP:
            from_samples = (
                "each container's mean metrics-server rate over the run's duration (no node figure)"
            )
            steps.append(
                Step(
                    step_phase,
                    "api",
                    "the run's cost: CPU seconds of every container by role and of the nodes, "
                    "per 1000 requests, the idle rates taken off; the nodes' rest is the "
                    "kernel's and unattributed",
                    (
                        f"GET /api/v1/nodes/<node>/proxy/{SUMMARY_PATH} per node once stamped "
                        f"after the run's end (up to {cost.fresh_stats_timeout:g}s); if "
                        f"refused: {from_samples}"
                    )
                    if cost.node_counters
                    else f"kubernetes.resource_cost.node_counters is off: {from_samples}",
                )
            )
        return steps

    # ------------------------------------------------------------------ the plan
    def plan(self, ctx: RunContext) -> Plan:
        steps: list[Step] = [*self.source.plan_create(ctx)]
        steps += self.source.plan_prepare(ctx)
        steps += plan_steps(self.prepare_ops(ctx))
        iteration = 1
        steps += plan_steps(self.installer.install_ops(ctx, iteration))
        steps += plan_steps(self.installer.ready_ops(ctx, iteration))
        steps += plan_steps(self.deploy_ops(ctx, iteration))
        steps += plan_steps(self.workload_ready_ops(ctx, iteration))
        if ctx.load.warmup:
            steps += self.run_load_steps(ctx.at_step(1), iteration, PHASE_WARMUP, 1)
        # As pipeline.steps runs them: each load step in order, and in each, with a paired
        # baseline, B1 M1 B2 M2 …
        ladder = ctx.load.ladder()
        for number, load_step in enumerate(ladder, start=1):
            step_ctx = ctx.at_step(number)
            if ctx.load.is_ladder:
                rate = (
                    "as fast as it can (qps -1)"
                    if load_step.target_qps == 0
                    else f"at {load_step.target_qps} QPS in all"
                )
                plural = "s" if load_step.connections > 1 else ""
                steps.append(
                    Step(
                        iteration_phase(iteration, load_step.key),
                        "note",
                        f"load step {number} of {len(ladder)} ({load_step.key}): Fortio with "
                        f"{load_step.connections} connection{plural} {rate}; its runs below",
                    )
                )
            for index in range(1, ctx.load.runs_per_iteration + 1):
                if self.paired_baseline():
                    steps += self.run_load_steps(step_ctx, iteration, PHASE_PAIRED_BASELINE, index)
                steps += self.run_load_steps(step_ctx, iteration, PHASE_MEASURED, index)
        steps += plan_steps(self.uninstall_ops(ctx, iteration))
        if ctx.load.iterations > 1:
            steps.append(
                Step(
                    "iterations",
                    "note",
                    f"iterations 2 to {ctx.load.iterations} repeat the iteration_01 steps in "
                    f"order (install_mesh to uninstall_mesh), one after the other",
                )
            )
        steps += plan_steps(self._namespace_removal_ops(ctx, "delete_clusters"))
        steps += plan_steps(self.installer.cleanup_pair_ops(ctx))
        steps += self.source.plan_delete(ctx)
        warnings = [*self.source.plan_warnings(ctx), *self.installer.warnings(ctx)]
        return Plan(self.environment, self.mesh, tuple(steps), tuple(warnings))

    # ------------------------------------------------------------------ DAG tasks
    def create_clusters(self, ctx: RunContext) -> dict[str, Any]:
        return self.source.create(ctx)

    def prepare_pair(self, ctx: RunContext) -> dict[str, Any]:
        prepared = self.source.prepare(ctx)
        return {**prepared, **self._run(ctx, self.prepare_ops(ctx))}

    def install_mesh(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        return self._run(ctx, self.installer.install_ops(ctx, iteration))

    def wait_mesh_ready(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        return self._run(ctx, self.installer.ready_ops(ctx, iteration))

    def deploy_workloads(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        summary = self._run(ctx, self.deploy_ops(ctx, iteration))
        return {**summary, "namespace": self.namespace(ctx)}

    def wait_workloads_ready(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        return self._run(ctx, self.workload_ready_ops(ctx, iteration))

    def uninstall_mesh(self, ctx: RunContext, iteration: int) -> None:
        phase = iteration_phase(iteration, "uninstall_mesh")
        self._run_each(
            ctx,
            [
                *([op] for op in self._namespace_removal_ops(ctx, phase)),
                lambda: self.installer.uninstall_ops(ctx, iteration),
            ],
        )

    def _run_each(self, ctx: RunContext, groups: list[list[Op] | Callable[[], list[Op]]]) -> None:
        """Run each group of teardown ops (or build it, then run it) even when an earlier
        one failed: a cluster that cannot be reached must not keep the other's teardown from
        running. Fails once all were tried, naming every failure."""
        failures = []
        for group in groups:
            try:
                self._run(ctx, group() if callable(group) else group)
            except Exception as exc:
                log.warning("teardown went on past a failure: %s", exc)
                failures.append(str(exc) or type(exc).__name__)
        if failures:
            raise StepFailed("; ".join(failures))

    def delete_clusters(self, ctx: RunContext) -> None:
        try:
            try:
                self._run_each(
                    ctx, [[op] for op in self._namespace_removal_ops(ctx, "delete_clusters")]
                )
            finally:
                # What prepare_pair installed (SPIRE, CoreDNS changes) goes even when the
                # namespace did not: on adopted clusters nothing else would remove it.
                self._run(ctx, self.installer.cleanup_pair_ops(ctx))
        finally:
            self.source.delete(ctx)

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        profile = self.installer.workload_profile(ctx)
        return {
            "environment": self.source.run_info(ctx),
            "mesh": self.installer.run_info(ctx),
            "workloads": workload_record(self.settings),
            "like_for_like": profile.record(),
            "metrics_server": self.metrics_server.model_dump(),
            "namespace": self.namespace(ctx),
        }

    # ------------------------------------------------------------------ measuring
    def sample_scopes(self, ctx: RunContext) -> list[SampleScope]:
        return list(self.mesh_path(ctx).sample_scopes)

    def _fortio_request(
        self, ctx: RunContext, iteration: int, phase: str, index: int, url: str
    ) -> Any:
        from meshbench.loadgen.fortio import FortioRequest, format_labels

        duration = (
            ctx.load.effective_warmup_duration if phase == PHASE_WARMUP else ctx.load.duration
        )
        labels = format_labels(
            {
                "meshbench": ctx.slug,
                "env": ctx.environment,
                "mesh": ctx.mesh,
                "iteration": iteration,
                "run": index,
                "phase": phase,
                "dag_run": ctx.run_id,
                **({"step": ctx.labels["step"]} if "step" in ctx.labels else {}),
            }
        )
        return FortioRequest(
            url=url,
            qps=ctx.load.qps,
            connections=ctx.load.connections,
            duration=duration,
            resolution=ctx.load.histogram_resolution,
            labels=labels,
        )

    def run_load(
        self, ctx: RunContext, iteration: int, phase: str, run_index: int
    ) -> MeasurementOutcome:
        """One Fortio run through a fresh port-forward; never raises for a failed run.

        ``paired-baseline`` runs go over the no-mesh path (their own namespace, nginx's
        LoadBalancer Service) between the same clusters."""
        path = self.path_for(ctx, phase)
        context: dict[str, Any] = {
            "environment": ctx.environment,
            "mesh": ctx.mesh,
            "mesh_version": ctx.mesh_version,
            "iteration": iteration,
            "phase": phase,
            "run_index": run_index,
            "namespace": path.namespace,
            "path": path.name,
            "load_generator": "fortio",
            "fortio_mode": "REST async, save=on, via kubectl port-forward",
        }
        samples: list[dict[str, Any]] = []
        try:
            context["like_for_like"] = path.profile.record()
            context["workloads"] = workload_record(self.settings)
            with self.clusters(ctx) as clusters:
                target = path.target_url(clusters)
                context["target_url"] = target
                request = self._fortio_request(ctx, iteration, phase, run_index, target)
                outcome, samples = self._measure(path, clusters, request, phase, context)
                return outcome
        except Exception as exc:
            reason = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "run_load %s iteration %d run %d failed: %s", phase, iteration, run_index, reason
            )
            return MeasurementOutcome(None, reason, context, samples)

    def _measure(
        self,
        path: LoadPath,
        clusters: Clusters,
        request: Any,
        phase: str,
        context: dict[str, Any],
    ) -> tuple[MeasurementOutcome, list[dict[str, Any]]]:
        from meshbench.loadgen.fortio import FortioClient

        namespace = path.namespace
        client: KubeCluster = clusters["client"]
        sampler: ResourceSampler | None = None
        meter: CostMeter | None = None
        if phase != PHASE_WARMUP:
            scopes = path.sample_scopes
            sampler = ResourceSampler(
                {scope.cluster: clusters[scope.cluster].api for scope in scopes},
                scopes,
                self.metrics_server.sample_interval,
            )
            meter = CostMeter(
                {scope.cluster: clusters[scope.cluster].api for scope in path.cost_scopes},
                path.cost_scopes,
                self.resource_cost,
            )
        with client.port_forward(namespace, FORTIO_TARGET, FORTIO_REST_PORT) as forward:
            fortio = FortioClient(
                forward.url, poll_interval=self.fortio_poll_interval, grace=self.fortio_grace
            )
            if meter is not None:
                # The idle window: nothing runs on the path yet.
                meter.begin()
            started = datetime.now(UTC)
            if sampler is not None:
                sampler.start()
            samples: list[dict[str, Any]] = []
            try:
                # A killed task (SIGTERM) stops the Fortio run inside FortioClient.run.
                run = fortio.run(request, connection_lost=forward.describe_loss)
            finally:
                if sampler is not None:
                    samples = sampler.stop()
        ended = datetime.now(UTC)
        context.update(run.record())
        failure = run.failure
        if sampler is not None:
            context["resource_sampling"] = {
                "polls": sampler.polls,
                "samples": len(samples),
                "errors": sampler.errors,
                "interval_s": self.metrics_server.sample_interval,
            }
            if failure is None:
                failure = self._judge_samples(samples, started, request.duration, context)
        if meter is not None and run.result:
            requests, duration = _requests_and_duration(run.result, started, ended)
            context["resources"] = meter.finish(ended, duration, requests, samples, started)
        return MeasurementOutcome(run.result, failure, context, samples), samples

    def _judge_samples(
        self,
        samples: list[dict[str, Any]],
        started: datetime,
        duration: float,
        context: dict[str, Any],
    ) -> str | None:
        during = samples_within(samples, started)
        reason, peaks = cpu_limit_failure(during, self.metrics_server.cpu_limit_fraction)
        context["cpu_limit_peaks"] = peaks
        if reason:
            return reason
        if not during and duration >= MIN_SECONDS_FOR_SAMPLES:
            return (
                "no metrics-server sample was taken during the run, so CPU limits could not "
                "be checked"
            )
        return None


def _requests_and_duration(
    result: dict[str, Any], started: datetime, ended: datetime
) -> tuple[int, float]:
    """The requests Fortio made and how long it ran, from its result (our own clock when
    the result does not say)."""
    count = (result.get("DurationHistogram") or {}).get("Count")
    actual = result.get("ActualDuration")
    duration = actual / 1e9 if isinstance(actual, int | float) and actual > 0 else None
    return (
        int(count) if isinstance(count, int | float) else 0,
        duration if duration is not None else (ended - started).total_seconds(),
    )


def _wait_not_terminating(cluster: KubeCluster, namespace: str, timeout: float) -> None:
    def check(api: Any) -> Readiness:
        found = api.get("v1", "Namespace", namespace)
        if found is None or (found.get("status") or {}).get("phase") != "Terminating":
            return Readiness(True)
        return gone_state(api, "v1", "Namespace", namespace)

    cluster.wait(check, f"namespace {namespace} not terminating", timeout)


def build_kubernetes_backend(
    config: BenchmarkConfig,
    mesh: str,
    source_type: Callable[..., ClusterSource],
    *,
    backend_type: type[KubernetesBackend] = KubernetesBackend,
    metrics_server: dict[str, Any] | None = None,
    **options: Any,
) -> KubernetesBackend:
    """What each Kubernetes environment's registry entry builds: its cluster source and the
    backend sharing one kubectl runner, with the metrics-server release that fits the
    environment's Kubernetes version (``metrics_server`` adjusts its settings). Tests pass
    ``runner`` and ``api_factory`` to swap kubectl and the Kubernetes API."""
    from meshbench.meshes import get_installer

    runner = options.pop("runner", None) or CommandRunner(
        default_timeout=config.kubernetes.timeouts.command
    )
    api_factory = options.pop("api_factory", None) or default_api_factory
    source = source_type(config, runner=runner, api_factory=api_factory)
    release = config.kubernetes.metrics_server.for_kubernetes(
        config.environment(source.environment).kubernetes_version
    )
    options.setdefault("metrics_server", release.model_copy(update=metrics_server or {}))
    return backend_type(
        config,
        source,
        get_installer(config, mesh),
        runner=runner,
        api_factory=api_factory,
        **options,
    )

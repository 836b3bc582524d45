"""The local environment's Backend: one method per DAG task, state in the run's folder.

Every method finds what earlier ones made from the run's prefix (``mb-<slug>``) and the
state file, never from memory: in Airflow each task is a process of its own. Each task
runs ``LocalOp`` lists: the backend's own (namespaces, nginx, teardown) and those of the
mesh's data plane (``meshbench.local.meshes``); the plan lists the same ops' steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from meshbench.backend import Backend, MeasurementOutcome, Plan, RunContext, Step, StepFailed
from meshbench.config import BenchmarkConfig, LocalEnvironment
from meshbench.loadgen import wrk as wrk_loadgen
from meshbench.local import binaries, measurement, netns, nginx, probes, processes
from meshbench.local.meshes import get_data_plane
from meshbench.local.meshes.base import DIRECT, WORKLOAD, WORKLOAD_DESCRIPTION, NotReady
from meshbench.local.ops import LocalOp, run_ops
from meshbench.local.plan import local_plan
from meshbench.local.processes import ProcessRecord
from meshbench.local.reaper import reap, reap_orphans
from meshbench.local.state import RunFolder, RunState, default_root, now_iso, this_process
from meshbench.local.topology import Topology, plan_topology

log = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 0.1


def build_backend(config: BenchmarkConfig, mesh: str) -> LocalBackend:
    return LocalBackend(config, mesh)


class LocalBackend(Backend):
    environment = "local"
    holds_machine = True
    counts_cluster_minutes = False

    def __init__(self, config: BenchmarkConfig, mesh: str, state_root: Path | None = None) -> None:
        super().__init__(config)
        self.plane = get_data_plane(mesh)
        self.mesh = mesh
        self.settings: LocalEnvironment = config.environments.local
        self.state_root = state_root or default_root()
        # Every step this backend object started, in order (tests compare it with the plan).
        self.executed_steps: list[Step] = []

    def reclaim_machine(self, silent_run_prefix: str | None) -> None:
        reap_orphans(self.state_root)
        if silent_run_prefix is not None:
            report = reap(self.state_root, only=[silent_run_prefix])
            log.warning("reaped what the silent run %s left: %s", silent_run_prefix, report)

    # ----------------------------------------------------------------- helpers

    def folder(self, ctx: RunContext) -> RunFolder:
        return RunFolder(self.state_root, ctx.resource_prefix)

    def state(self, ctx: RunContext) -> RunState:
        state = self.folder(ctx).read()
        if state is None:
            raise StepFailed(
                f"no local clusters for run {ctx.resource_prefix}: create_clusters has not run "
                f"(or delete_clusters removed them)"
            )
        return state

    def network_mode(self) -> str:
        """The mode a run gets: the setting, with ``auto`` resolved on this machine."""
        wanted = self.settings.network_mode
        if wanted == "loopback":
            return "loopback"
        if netns.can_create_namespaces():
            return "netns"
        if wanted == "netns":
            raise StepFailed(
                "network_mode is 'netns' but network namespaces cannot be made here: they need "
                "root and iproute2 (set network_mode: auto to fall back to loopback addresses)"
            )
        return "loopback"

    def _programs(self) -> list[str]:
        return [WORKLOAD, "wrk", *self.plane.programs]

    def describe(self, name: str) -> str:
        """A recorded process in words."""
        return {WORKLOAD: WORKLOAD_DESCRIPTION, **self.plane.components}.get(name, name)

    def iteration_dir(self, ctx: RunContext, iteration: int) -> Path:
        path = self.folder(ctx).path / f"iteration-{iteration:02d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(
        self,
        ctx: RunContext,
        name: str,
        argv: Sequence[str],
        cluster: str,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> ProcessRecord:
        """Start a component unless this run's record says it is running (a retry)."""
        folder = self.folder(ctx)
        state = self.state(ctx)
        existing = state.processes.get(name)
        if existing is not None and existing.is_running():
            log.info("%s is running already (pid %s); adopting it", name, existing.pid)
            return existing
        topology = state.topology
        record = processes.start(
            name,
            argv,
            cluster=cluster,
            log_path=log_path,
            namespace=topology.namespace(cluster),
            cpus=topology.cpus.get(cluster),
            env=env,
        )
        with folder.update() as current:
            current.record_process(record)
        return record

    def wait(self, what: str, check: Callable[[], Any], timeout: float | None = None) -> Any:
        """Retry ``check`` until it passes; StepFailed names ``what`` and the last problem."""
        limit = self.settings.ready_timeout if timeout is None else timeout
        try:
            for attempt in Retrying(
                stop=stop_after_delay(limit),
                wait=wait_fixed(PROBE_INTERVAL_SECONDS),
                retry=retry_if_exception_type((NotReady, OSError)),
                reraise=True,
            ):
                with attempt:
                    return check()
        except (NotReady, OSError) as exc:
            raise StepFailed(f"{what} did not come up within {limit:g} s: {exc}") from None
        return None

    def require_running(self, record: ProcessRecord) -> None:
        if not record.is_running():
            tail = record.log_tail(600)
            raise StepFailed(
                f"{self.describe(record.name)} (pid {record.pid}) is not running"
                + (f"; its log ends with: {tail}" if tail else "")
            )

    def _run(self, ops: Sequence[LocalOp]) -> dict[str, Any]:
        return run_ops(ops, self.executed_steps)

    # ------------------------------------------------------------------- plan

    def plan(self, ctx: RunContext) -> Plan:
        return local_plan(self, ctx)

    # --------------------------------------------------------------- clusters

    def cluster_ops(self, topology: Topology) -> list[LocalOp]:
        if topology.network_mode != "netns":
            # plan_topology chose the addresses and ports when the state was made.
            step = Step(
                "create_clusters",
                "command",
                "two loopback addresses",
                f"{topology.client_address} and {topology.server_address}"
                " with free ports chosen at creation",
            )
            return [LocalOp(step, lambda: None)]
        client_ns, server_ns = topology.namespace("client"), topology.namespace("server")
        assert client_ns and server_ns
        client_veth, server_veth = topology.veth("client"), topology.veth("server")
        client_cidr = f"{topology.client_address}/{topology.underlay_prefix_length}"
        server_cidr = f"{topology.server_address}/{topology.underlay_prefix_length}"

        def connect() -> None:
            netns.connect_with_veth(client_ns, client_veth, server_ns, server_veth)
            netns.add_address(client_ns, client_veth, client_cidr)
            netns.add_address(server_ns, server_veth, server_cidr)

        return [
            *(
                LocalOp(
                    Step(
                        "create_clusters",
                        "command",
                        f"network namespace {namespace}",
                        f"ip netns add {namespace}",
                        cluster,
                    ),
                    lambda name=namespace: netns.create(name),
                )
                for cluster, namespace in (("client", client_ns), ("server", server_ns))
            ),
            LocalOp(
                Step(
                    "create_clusters",
                    "command",
                    "veth pair between the clusters",
                    f"ip link add {client_veth} netns {client_ns} type veth "
                    f"peer name {server_veth} netns {server_ns}\n"
                    f"ip -n {client_ns} address add {client_cidr} dev {client_veth}\n"
                    f"ip -n {server_ns} address add {server_cidr} dev {server_veth}",
                ),
                connect,
            ),
        ]

    def create_clusters(self, ctx: RunContext) -> dict[str, Any]:
        mode = self.network_mode()
        if self.plane.needs_namespaces and mode != "netns":
            raise StepFailed(self.plane.needs_namespaces)
        for program in self._programs():
            try:
                binaries.find(program)
            except binaries.MissingBinary as exc:
                raise StepFailed(str(exc)) from None
        for what, seconds in (
            ("duration", ctx.load.duration),
            ("warmup_duration", ctx.load.effective_warmup_duration),
        ):
            try:
                wrk_loadgen.whole_seconds(seconds)
            except ValueError as exc:
                raise StepFailed(f"load profile {what}: {exc}") from None
        folder = self.folder(ctx)
        topology = plan_topology(
            ctx.resource_prefix,
            mode,  # type: ignore[arg-type]
            self.settings.subnet,
            self.settings.cpu_placement,  # type: ignore[arg-type]
        )
        owner_pid, owner_start = this_process() if self.owned_by_this_process else (None, None)
        state = folder.create(
            RunState(
                prefix=ctx.resource_prefix,
                mesh=self.mesh,
                created_at=now_iso(),
                topology=topology,
                owner_pid=owner_pid,
                owner_start_ticks=owner_start,
            )
        )
        topology = state.topology  # a retry keeps what the first try chose
        self._run(self.cluster_ops(topology))
        with folder.update() as current:
            current.versions = {program: binaries.version(program) for program in self._programs()}
        return {
            "network_mode": topology.network_mode,
            "namespaces": topology.namespaces,
            "client_address": topology.client_address,
            "server_address": topology.server_address,
            "cpu_placement": topology.cpu_placement,
            "cpus": topology.cpus,
            "state": str(folder.path),
        }

    def prepare_pair(self, ctx: RunContext) -> dict[str, Any]:
        return self._run(self.plane.prepare_pair_ops(self, ctx))

    def delete_ops(self, ctx: RunContext) -> list[LocalOp]:
        step = Step("delete_clusters", "command", "delete the namespaces and the run's state")
        return [LocalOp(step, lambda: self._delete(ctx))]

    def delete_clusters(self, ctx: RunContext) -> None:
        self._run(self.delete_ops(ctx))

    def _delete(self, ctx: RunContext) -> None:
        folder = self.folder(ctx)
        state = folder.read()
        problems: list[str] = []
        if state is not None:
            problems += self._stop_all(ctx, state)
            namespaces = state.topology.namespaces
        else:
            namespaces = [f"{ctx.resource_prefix}-client", f"{ctx.resource_prefix}-server"]
        for name in namespaces:
            try:
                if netns.delete(name):
                    log.info("deleted network namespace %s", name)
            except StepFailed as exc:
                problems.append(str(exc))
        if problems:
            raise StepFailed("teardown incomplete: " + "; ".join(problems))
        if state is not None:
            # What ran outlives the run's folder: load_results asks for it after teardown.
            folder.write_summary(self._what_ran(state))
        folder.remove()

    # ------------------------------------------------------------------- mesh

    def install_mesh(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        topology = self.state(ctx).topology
        with self.folder(ctx).update() as current:
            current.installed_iteration = iteration
        outcome = self._run(self.plane.install_ops(self, ctx, topology, iteration))
        started = self.state(ctx).processes
        pids = {name: started[name].pid for name in self.plane.components if name in started}
        return {
            "mesh": self.mesh,
            "data_plane": self.plane.data_plane,
            **({"pids": pids} if pids else {}),
            **outcome,
        }

    def wait_mesh_ready(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        topology = self.state(ctx).topology
        return self._run(self.plane.ready_ops(self, ctx, topology, iteration))

    def uninstall_ops(self, ctx: RunContext, iteration: int) -> list[LocalOp]:
        step = Step("uninstall_mesh", "process", "stop the recorded processes by pid")
        return [LocalOp(step, lambda: self._uninstall(ctx, iteration))]

    def uninstall_mesh(self, ctx: RunContext, iteration: int) -> None:
        self._run(self.uninstall_ops(ctx, iteration))

    def _uninstall(self, ctx: RunContext, iteration: int) -> None:
        state = self.folder(ctx).read()
        if state is None:
            return
        problems = self._stop_all(ctx, state)
        directory = self.folder(ctx).path / f"iteration-{iteration:02d}"
        for key in directory.glob("*key*"):
            key.unlink(missing_ok=True)
        if problems:
            raise StepFailed("uninstall incomplete: " + "; ".join(problems))

    def _stop_all(self, ctx: RunContext, state: RunState) -> list[str]:
        """Stop every recorded component (workload first, then the data plane in reverse
        start order); returns what could not be done."""
        problems = []
        order = [WORKLOAD, *reversed(list(self.plane.components))]
        names = sorted(
            state.processes, key=lambda name: order.index(name) if name in order else len(order)
        )
        for name in names:
            record = state.processes[name]
            try:
                hit = processes.stop(record)
                if hit:
                    log.info("stopped %s (pids %s)", name, hit)
            except OSError as exc:
                problems.append(f"stopping {name} (pid {record.pid}): {exc}")
                continue
            with self.folder(ctx).update() as current:
                current.processes.pop(name, None)
        self.plane.after_stop(state.topology)
        return problems

    # --------------------------------------------------------------- workloads

    def workload_ops(self, ctx: RunContext, topology: Topology, iteration: int) -> list[LocalOp]:
        def start_nginx() -> dict[str, Any]:
            directory = self.iteration_dir(ctx, iteration)
            (directory / "nginx-temp").mkdir(exist_ok=True)
            config = nginx.render_config(
                directory,
                topology.nginx_listen,
                f"{topology.local_host('server')}:{topology.ports['nginx_status']}",
            )
            config_path = directory / "nginx.conf"
            config_path.write_text(config)
            argv = [
                str(binaries.find("nginx")),
                "-p",
                str(directory),
                "-c",
                str(config_path),
                "-e",
                str(directory / "nginx-error.log"),
            ]
            record = self.start(ctx, WORKLOAD, argv, "server", directory / "nginx.out")
            return {
                "nginx": record.pid,
                "listen": topology.nginx_listen,
                "keepalive_requests": nginx.KEEPALIVE_REQUESTS,
                "body_bytes": nginx.BODY_SIZE,
            }

        step = Step(
            "deploy_workloads",
            "process",
            "nginx (generated config, access log off, "
            f"keepalive_requests {nginx.KEEPALIVE_REQUESTS}, {nginx.BODY_SIZE}-byte body)",
            f"nginx -c <nginx.conf>  # listens on {topology.nginx_listen}",
            "server",
        )
        return [LocalOp(step, start_nginx)]

    def deploy_workloads(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        return self._run(self.workload_ops(ctx, self.state(ctx).topology, iteration))

    def workload_ready_ops(self, ctx: RunContext, topology: Topology) -> list[LocalOp]:
        step = Step(
            "wait_workloads_ready",
            "http",
            "nginx answers 200 directly and through the whole path",
            self.plane.url(topology),
        )
        return [LocalOp(step, lambda: self._probe_paths(ctx))]

    def wait_workloads_ready(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        return self._run(self.workload_ready_ops(ctx, self.state(ctx).topology))

    def _probe_paths(self, ctx: RunContext) -> dict[str, Any]:
        state = self.state(ctx)
        topology = state.topology
        client_ns = topology.namespace("client")
        record = state.processes.get(WORKLOAD)
        if record is None:
            raise StepFailed("nginx was never started (deploy_workloads)")

        def direct() -> None:
            self.require_running(record)
            self._expect_page(probes.get(topology.direct_url, client_ns), "nginx")

        self.wait(f"nginx at {topology.direct_url}", direct)
        ready = {DIRECT.path: topology.direct_url}
        if self.plane.adds_path:
            path_url = self.plane.url(topology)

            def through_mesh() -> None:
                for name in self.plane.components:
                    component = state.processes.get(name)
                    if component is None:
                        raise StepFailed(f"{self.describe(name)} was never started (install_mesh)")
                    self.require_running(component)
                self._expect_page(probes.get(path_url, client_ns), f"the {self.mesh} path")

            try:
                self.wait(f"the probe through the {self.mesh} path ({path_url})", through_mesh)
            except StepFailed as exc:
                raise StepFailed(f"{exc}; {self._diagnose(state)}") from None
            ready[self.plane.path] = path_url
        return {"probe": ready}

    @staticmethod
    def _expect_page(answer: probes.Response, what: str) -> None:
        if answer.status != 200:
            raise NotReady(
                f"{what} answered {answer.status}: {answer.body[:200].decode(errors='replace')}"
            )
        if len(answer.body) != nginx.BODY_SIZE:
            raise NotReady(
                f"{what} answered a {len(answer.body)}-byte body, not nginx's "
                f"{nginx.BODY_SIZE}-byte page"
            )

    def _diagnose(self, state: RunState) -> str:
        """Which component of the path is not answering: the first one found is named."""
        findings = []
        for name in self.plane.components:
            record = state.processes.get(name)
            if record is None or not record.is_running():
                findings.append(f"{self.describe(name)} is not running")
        findings += self.plane.diagnose(self, state)
        return "; ".join(findings) if findings else "every component answers on its own"

    # ------------------------------------------------------------------- load

    def run_load(
        self, ctx: RunContext, iteration: int, phase: str, run_index: int
    ) -> MeasurementOutcome:
        context: dict[str, Any] = {
            "environment": "local",
            "mesh": self.mesh,
            "phase": phase,
            "iteration": iteration,
            "run_index": run_index,
        }
        try:
            return measurement.measure(self, ctx, iteration, phase, run_index, context)
        except Exception as exc:  # a failed measurement is a negative row, never a crash
            log.exception("run_load failed")
            reason = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            return MeasurementOutcome(raw_result=None, failure=reason, context=context)

    # -------------------------------------------------------------------- info

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        folder = self.folder(ctx)
        state = folder.read()
        info: dict[str, Any] = {
            "environment": "local",
            "mesh": self.mesh,
            "data_plane": self.plane.data_plane,
            "emulation": "honest data-plane emulation on one machine; not Istio, Kuma or NSM",
            "load_generator": wrk_loadgen.LOAD_GENERATOR,
            "load_mode": wrk_loadgen.MODE,
            "status_codes": self.settings.status_codes,
            "nginx": {
                "keepalive_requests": nginx.KEEPALIVE_REQUESTS,
                "worker_processes": nginx.WORKER_PROCESSES,
                "body_bytes": nginx.BODY_SIZE,
                "access_log": "off",
            },
            "protocol": "HTTP/1.1",
        }
        info.update(self.plane.run_info())
        what_ran = self._what_ran(state) if state is not None else folder.read_summary()
        if what_ran:
            info.update(what_ran)
        else:
            info["network_mode_setting"] = self.settings.network_mode
            info["cpu_placement_setting"] = self.settings.cpu_placement
        return info

    @staticmethod
    def _what_ran(state: RunState) -> dict[str, Any]:
        return {
            "network_mode": state.topology.network_mode,
            "cpu_placement": state.topology.cpu_placement,
            "cpus": state.topology.cpus,
            "versions": state.versions,
        }

"""The local environment's Backend: one method per DAG task, state in the run's folder.

Every method finds what earlier ones made from the run's prefix (``mb-<slug>``) and the
state file, never from memory: in Airflow each task is a process of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from meshbench.backend import (
    PHASE_PAIRED_BASELINE,
    PHASES,
    Backend,
    MeasurementOutcome,
    Plan,
    RunContext,
    StepFailed,
)
from meshbench.config import BenchmarkConfig, ConfigError, LocalEnvironment
from meshbench.loadgen import wrk as wrk_loadgen
from meshbench.local import (
    binaries,
    counters,
    envoy,
    machine,
    netns,
    nginx,
    pki,
    probes,
    processes,
)
from meshbench.local import wireguard as wg
from meshbench.local.plan import local_plan
from meshbench.local.processes import ProcessRecord
from meshbench.local.state import RunFolder, RunState, default_root, now_iso, this_process
from meshbench.local.topology import Topology, plan_topology

log = logging.getLogger(__name__)

LOCAL_MESHES = ("baseline", "envoy-mtls", "wireguard")
PROBE_INTERVAL_SECONDS = 0.1

DATA_PLANES = {
    "direct": "client -> nginx (no mesh)",
    "envoy-mtls": "client -> client sidecar Envoy (HTTP) -> gateway Envoy (SNI passthrough) -> "
    "server sidecar Envoy (mutual TLS, HTTP) -> nginx",
    "wireguard": "client -> WireGuard tunnel (wireguard-go, userspace) -> nginx",
}
# What each mesh needs besides nginx and wrk.
MESH_PROGRAMS = {"baseline": (), "envoy-mtls": ("envoy",), "wireguard": ("wireguard-go", "wg")}
COMPONENT_DESCRIPTIONS = {
    "nginx": "nginx (server workload)",
    "client-sidecar": envoy.CLIENT_SIDECAR.description,
    "gateway": envoy.GATEWAY.description,
    "server-sidecar": envoy.SERVER_SIDECAR.description,
    "wireguard-client": "wireguard-go in the client cluster",
    "wireguard-server": "wireguard-go in the server cluster",
}
MESH_COMPONENTS = {
    "baseline": (),
    "envoy-mtls": ("server-sidecar", "gateway", "client-sidecar"),
    "wireguard": ("wireguard-server", "wireguard-client"),
}


class NotReady(Exception):
    """A readiness check that has not passed yet; its message says what was seen."""


def build_backend(config: BenchmarkConfig, mesh: str) -> LocalBackend:
    return LocalBackend(config, mesh)


def describe(name: str) -> str:
    return COMPONENT_DESCRIPTIONS.get(name, name)


class LocalBackend(Backend):
    environment = "local"
    holds_machine = True
    counts_cluster_minutes = False

    def __init__(self, config: BenchmarkConfig, mesh: str, state_root: Path | None = None) -> None:
        super().__init__(config)
        if mesh not in LOCAL_MESHES:
            raise ConfigError(f"the local environment runs {', '.join(LOCAL_MESHES)}; not {mesh!r}")
        self.mesh = mesh
        self.settings: LocalEnvironment = config.environments.local
        self.state_root = state_root or default_root()
        # True where one process runs the whole run (run_local): it is recorded as the
        # run's owner, so the run is reaped as soon as that process is gone.
        self.owned_by_this_process = False

    # ----------------------------------------------------------------- helpers

    def folder(self, ctx: RunContext) -> RunFolder:
        return RunFolder(self.state_root, ctx.resource_prefix)

    def _state(self, ctx: RunContext) -> RunState:
        state = self.folder(ctx).read()
        if state is None:
            raise StepFailed(
                f"no local clusters for run {ctx.resource_prefix}: create_clusters has not run "
                f"(or delete_clusters removed them)"
            )
        return state

    def _network_mode(self) -> str:
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
        return ["nginx", "wrk", *MESH_PROGRAMS[self.mesh]]

    def _iteration_dir(self, ctx: RunContext, iteration: int) -> Path:
        path = self.folder(ctx).path / f"iteration-{iteration:02d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _start(
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
        state = self._state(ctx)
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

    def _wait(self, what: str, check: Callable[[], Any], timeout: float | None = None) -> Any:
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

    def _require_running(self, record: ProcessRecord) -> None:
        if not record.is_running():
            tail = record.log_tail(600)
            raise StepFailed(
                f"{describe(record.name)} (pid {record.pid}) is not running"
                + (f"; its log ends with: {tail}" if tail else "")
            )

    # ------------------------------------------------------------------- plan

    def plan(self, ctx: RunContext) -> Plan:
        return local_plan(self.settings, self.mesh, ctx)

    @staticmethod
    def _path(mesh_or_phase: str) -> str:
        return "direct" if mesh_or_phase == "baseline" else mesh_or_phase

    # --------------------------------------------------------------- clusters

    def create_clusters(self, ctx: RunContext) -> dict[str, Any]:
        mode = self._network_mode()
        if self.mesh == "wireguard" and mode != "netns":
            raise StepFailed(
                "the wireguard mesh needs network namespaces (root): its tunnel devices would "
                "otherwise change this machine's own routing"
            )
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
            mode,
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
        if topology.network_mode == "netns":
            client_ns = topology.namespace("client")
            server_ns = topology.namespace("server")
            assert client_ns and server_ns
            netns.create(client_ns)
            netns.create(server_ns)
            netns.connect_with_veth(
                client_ns, topology.veth("client"), server_ns, topology.veth("server")
            )
            netns.add_address(
                client_ns,
                topology.veth("client"),
                f"{topology.client_address}/{topology.underlay_prefix_length}",
            )
            netns.add_address(
                server_ns,
                topology.veth("server"),
                f"{topology.server_address}/{topology.underlay_prefix_length}",
            )
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
        if self.mesh != "envoy-mtls":
            return {}
        self._ensure_ca(ctx)
        return {"ca": "per-run CA, EC P-256", "trust_domain": pki.trust_domain(ctx.resource_prefix)}

    def _ensure_ca(self, ctx: RunContext) -> pki.Issued:
        folder = self.folder(ctx)
        certificate, key = folder.path / "ca.pem", folder.path / "ca-key.pem"
        if certificate.exists() and key.exists():
            return pki.Issued(certificate.read_bytes(), key.read_bytes())
        ca = pki.make_ca(ctx.resource_prefix)
        folder.write_private("ca-key.pem", ca.private_key_pem)
        folder.file("ca.pem").write_bytes(ca.certificate_pem)
        return ca

    def delete_clusters(self, ctx: RunContext) -> None:
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
        state = self._state(ctx)
        with self.folder(ctx).update() as current:
            current.installed_iteration = iteration
        if self.mesh == "envoy-mtls":
            return self._install_envoy(ctx, state.topology, iteration)
        if self.mesh == "wireguard":
            return self._install_wireguard(ctx, state.topology, iteration)
        return {"mesh": "baseline", "data_plane": DATA_PLANES["direct"]}

    def _install_envoy(self, ctx: RunContext, topology: Topology, iteration: int) -> dict[str, Any]:
        folder = self.folder(ctx)
        directory = self._iteration_dir(ctx, iteration)
        ca = self._ensure_ca(ctx)
        prefix = ctx.resource_prefix
        client_identity = pki.spiffe_id(prefix, "client", "wrk")
        server_identity = pki.spiffe_id(prefix, "server", "nginx")
        issued_client = pki.issue_workload(ca, client_identity, [])
        issued_server = pki.issue_workload(ca, server_identity, [envoy.sni(topology)])
        relative = directory.relative_to(folder.path)
        certificates = envoy.Certificates(
            ca=folder.path / "ca.pem",
            client_certificate=folder.file(str(relative), "client-sidecar.pem"),
            client_key=folder.write_private(
                f"{relative}/client-sidecar-key.pem", issued_client.private_key_pem
            ),
            server_certificate=folder.file(str(relative), "server-sidecar.pem"),
            server_key=folder.write_private(
                f"{relative}/server-sidecar-key.pem", issued_server.private_key_pem
            ),
            client_identity=client_identity,
            server_identity=server_identity,
        )
        certificates.client_certificate.write_bytes(issued_client.certificate_pem)
        certificates.server_certificate.write_bytes(issued_server.certificate_pem)
        configs = {
            envoy.SERVER_SIDECAR.name: envoy.server_sidecar_config(topology, certificates),
            envoy.GATEWAY.name: envoy.gateway_config(topology),
            envoy.CLIENT_SIDECAR.name: envoy.client_sidecar_config(topology, certificates),
        }
        binary = binaries.envoy_path()
        started = {}
        for role in envoy.ROLES:
            config_path = envoy.write_config(directory / f"{role.name}.json", configs[role.name])
            argv = envoy.command(binary, config_path, directory / f"{role.name}.log")
            record = self._start(ctx, role.name, argv, role.cluster, directory / f"{role.name}.out")
            started[role.name] = record.pid
        return {
            "mesh": "envoy-mtls",
            "data_plane": DATA_PLANES["envoy-mtls"],
            "pids": started,
            "sni": envoy.sni(topology),
        }

    def _install_wireguard(
        self, ctx: RunContext, topology: Topology, iteration: int
    ) -> dict[str, Any]:
        folder = self.folder(ctx)
        directory = self._iteration_dir(ctx, iteration)
        relative = directory.relative_to(folder.path)
        keys = {cluster: wg.generate_keypair() for cluster in ("client", "server")}
        inner = {"client": topology.tunnel_client_address, "server": topology.tunnel_server_address}
        outer = {"client": topology.client_address, "server": topology.server_address}
        ports = {
            "client": topology.ports["wireguard_client"],
            "server": topology.ports["wireguard_server"],
        }
        started = {}
        for cluster in ("server", "client"):
            interface = topology.wireguard_interface(cluster)
            record = self._start(
                ctx,
                f"wireguard-{cluster}",
                wg.daemon_command(interface),
                cluster,
                directory / f"wireguard-{cluster}.log",
                env=wg.DAEMON_ENVIRONMENT,
            )
            if not wg.wait_for_socket(interface, self.settings.ready_timeout):
                self._require_running(record)
                raise StepFailed(
                    f"{describe(record.name)} created no control socket "
                    f"{wg.socket_path(interface)} within "
                    f"{self.settings.ready_timeout:g} s"
                )
            started[record.name] = record.pid
        for cluster, peer in (("server", "client"), ("client", "server")):
            namespace = topology.namespace(cluster)
            assert namespace
            key_file = folder.write_private(
                f"{relative}/wireguard-{cluster}.key", keys[cluster][0].encode()
            )
            wg.configure(
                namespace,
                topology.wireguard_interface(cluster),
                key_file,
                ports[cluster],
                peer_public_key=keys[peer][1],
                peer_inner_address=inner[peer],
                peer_endpoint=f"{outer[peer]}:{ports[peer]}",
                inner_cidr=f"{inner[cluster]}/{topology.tunnel_prefix_length}",
            )
            key_file.unlink()  # wireguard-go holds the key now
        return {
            "mesh": "wireguard",
            "data_plane": DATA_PLANES["wireguard"],
            "pids": started,
            "interfaces": [topology.wireguard_interface(c) for c in ("client", "server")],
        }

    def wait_mesh_ready(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        state = self._state(ctx)
        topology = state.topology
        if self.mesh == "envoy-mtls":
            for role in envoy.ROLES:
                record = state.processes.get(role.name)
                if record is None:
                    raise StepFailed(f"{role.description} was never started (install_mesh)")
                self._wait(
                    role.description, lambda r=role, p=record: self._envoy_ready(topology, r, p)
                )
            return {"ready": [role.description for role in envoy.ROLES]}
        if self.mesh == "wireguard":
            return self._wait_handshake(state)
        return {}

    def _envoy_ready(
        self, topology: Topology, role: envoy.EnvoyRole, record: ProcessRecord
    ) -> None:
        self._require_running(record)
        url = (
            f"http://{topology.local_host(role.cluster)}:"
            f"{topology.ports[role.admin_port_role]}/ready"
        )
        answer = probes.get(url, topology.namespace(role.cluster))
        if answer.status != 200:
            raise NotReady(
                f"admin /ready answered {answer.status} "
                f"{answer.body.decode(errors='replace').strip()}"
            )

    def _wait_handshake(self, state: RunState) -> dict[str, Any]:
        topology = state.topology
        client_ns = topology.namespace("client")
        interface = topology.wireguard_interface("client")
        assert client_ns
        records = [
            state.processes[f"wireguard-{c}"]
            for c in ("server", "client")
            if f"wireguard-{c}" in state.processes
        ]
        if len(records) != 2:
            raise StepFailed("wireguard-go was never started in both clusters (install_mesh)")

        def handshake() -> int:
            for record in records:
                self._require_running(record)
            stamp = wg.latest_handshake(client_ns, interface)
            if stamp == 0:
                wg.send_handshake_trigger(client_ns, topology.tunnel_server_address)
                raise NotReady(f"no handshake on {interface} yet")
            return stamp

        stamp = self._wait(
            f"the WireGuard tunnel {interface} <-> {topology.wireguard_interface('server')}",
            handshake,
        )
        return {
            "handshake": stamp,
            "interfaces": [interface, topology.wireguard_interface("server")],
        }

    def uninstall_mesh(self, ctx: RunContext, iteration: int) -> None:
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
        """Stop every recorded component (workload first); returns what could not be done."""
        problems = []
        order = [
            "nginx",
            "client-sidecar",
            "gateway",
            "server-sidecar",
            "wireguard-client",
            "wireguard-server",
        ]
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
        for cluster in ("client", "server"):
            # wireguard-go removes its socket on a clean exit, not when killed.
            wg.socket_path(state.topology.wireguard_interface(cluster)).unlink(missing_ok=True)
        return problems

    # --------------------------------------------------------------- workloads

    def deploy_workloads(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        state = self._state(ctx)
        topology = state.topology
        directory = self._iteration_dir(ctx, iteration)
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
        record = self._start(ctx, "nginx", argv, "server", directory / "nginx.out")
        return {
            "nginx": record.pid,
            "listen": topology.nginx_listen,
            "keepalive_requests": nginx.KEEPALIVE_REQUESTS,
            "body_bytes": nginx.BODY_SIZE,
        }

    def wait_workloads_ready(self, ctx: RunContext, iteration: int) -> dict[str, Any]:
        state = self._state(ctx)
        topology = state.topology
        client_ns = topology.namespace("client")
        record = state.processes.get("nginx")
        if record is None:
            raise StepFailed("nginx was never started (deploy_workloads)")

        def direct() -> None:
            self._require_running(record)
            self._expect_page(probes.get(topology.url("direct"), client_ns), "nginx")

        self._wait(f"nginx at {topology.url('direct')}", direct)
        ready = {"direct": topology.url("direct")}
        if self.mesh != "baseline":
            path_url = topology.url(self.mesh)

            def through_mesh() -> None:
                for name in MESH_COMPONENTS[self.mesh]:
                    component = state.processes.get(name)
                    if component is None:
                        raise StepFailed(f"{describe(name)} was never started (install_mesh)")
                    self._require_running(component)
                self._expect_page(probes.get(path_url, client_ns), f"the {self.mesh} path")

            try:
                self._wait(f"the probe through the {self.mesh} path ({path_url})", through_mesh)
            except StepFailed as exc:
                raise StepFailed(f"{exc}; {self._diagnose(state)}") from None
            ready[self.mesh] = path_url
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
        topology = state.topology
        findings = []
        for name in MESH_COMPONENTS[self.mesh]:
            record = state.processes.get(name)
            if record is None or not record.is_running():
                findings.append(f"{describe(name)} is not running")
        if self.mesh == "envoy-mtls":
            for role in envoy.ROLES:
                record = state.processes.get(role.name)
                if record is None or not record.is_running():
                    continue
                try:
                    self._envoy_ready(topology, role, record)
                except (NotReady, OSError, StepFailed) as exc:
                    findings.append(f"{role.description} is not ready ({exc})")
        if self.mesh == "wireguard":
            client_ns = topology.namespace("client")
            interface = topology.wireguard_interface("client")
            if client_ns and wg.latest_handshake(client_ns, interface) == 0:
                findings.append(f"the WireGuard tunnel {interface} has no handshake")
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
            return self._run_load(ctx, iteration, phase, run_index, context)
        except Exception as exc:  # a failed measurement is a negative row, never a crash
            log.exception("run_load failed")
            reason = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            return MeasurementOutcome(raw_result=None, failure=reason, context=context)

    def _run_load(
        self,
        ctx: RunContext,
        iteration: int,
        phase: str,
        run_index: int,
        context: dict[str, Any],
    ) -> MeasurementOutcome:
        if phase not in PHASES:
            raise StepFailed(f"unknown phase {phase!r}")
        state = self._state(ctx)
        topology = state.topology
        path = "direct" if phase == PHASE_PAIRED_BASELINE else self._path(self.mesh)
        components = ["nginx"] + (list(MESH_COMPONENTS[self.mesh]) if path != "direct" else [])
        records = []
        for name in components:
            record = state.processes.get(name)
            if record is None:
                raise StepFailed(f"{describe(name)} is not deployed (its task did not run)")
            records.append(record)
        duration = ctx.load.effective_warmup_duration if phase == "warmup" else ctx.load.duration
        client_cpus = topology.cpus.get("client")
        threads = min(
            ctx.load.connections, len(client_cpus) if client_cpus else os.cpu_count() or 1
        )
        settings = wrk_loadgen.WrkSettings(
            url=topology.url(path),
            connections=ctx.load.connections,
            duration_seconds=wrk_loadgen.whole_seconds(duration),
            threads=threads,
            status_codes=self.settings.status_codes,
            labels=" ".join(
                [f"{key}={value}" for key, value in sorted(ctx.labels.items())]
                + [f"iteration={iteration}", f"phase={phase}", f"run={run_index}"]
            ),
            profile_qps=ctx.load.qps,
        )
        context.update(
            {
                "path": path,
                "data_plane": DATA_PLANES[path],
                "url": settings.url,
                "network_mode": topology.network_mode,
                "cpu_placement": topology.cpu_placement,
                "cpus": topology.cpus,
                "load_generator": f"{wrk_loadgen.LOAD_GENERATOR} "
                f"{state.versions.get('wrk', 'unknown')}",
                "load_mode": wrk_loadgen.MODE,
                "connections": settings.connections,
                "threads": settings.threads,
                "status_codes": settings.status_codes,
                "versions": state.versions,
                "emulation": "data-plane emulation on one machine; not Istio, Kuma or NSM",
            }
        )
        for record in records:
            self._require_running(record)

        self.folder(ctx).touch()  # a run being measured is active: the reaper spares it
        hop = counters.first_hop(topology, path)
        before = hop.read()
        cpu_before = sum(record.cpu_seconds() for record in records)
        machine_before = machine.MachineSample.take()
        run = wrk_loadgen.run(
            binaries.find("wrk"),
            settings,
            self.folder(ctx).path / "wrk",
            spawn_in=lambda spawn: netns.call_in(
                topology.namespace("client"), spawn, cpus=client_cpus
            ),
        )
        machine_after = machine.MachineSample.take()
        cpu_after = sum(record.cpu_seconds() for record in records)
        dead = [record for record in records if not record.is_running()]
        after = hop.read() if before is not None and not dead else None
        context["machine"] = machine.describe_interval(
            machine_before, machine_after, run.cpu_seconds + max(cpu_after - cpu_before, 0.0)
        )
        context["wrk_command"] = " ".join(run.command)
        context["first_hop_counters"] = hop.description

        failures = []
        for record in dead:
            tail = record.log_tail(300)
            failures.append(
                f"{describe(record.name)} (pid {record.pid}, {record.cluster} cluster) exited "
                f"during the run" + (f"; its log ends with: {tail}" if tail else "")
            )
        if run.failure:
            failures.append(run.failure)
        raw = None
        if run.report is not None:
            socket_count = hop.socket_count(before, after) if before and after else None
            raw = wrk_loadgen.to_fortio(
                run.report,
                settings,
                run.start_time,
                socket_count,
                state.versions.get("wrk", "unknown"),
            )
            if before and after:
                check = counters.check_answers(
                    hop,
                    hop.answers(before, after),
                    requests=run.report.requests,
                    status_errors=run.report.errors.get("status", 0),
                    connections=settings.connections,
                )
                raw["meshbench"]["answer_check"] = check
                if not check["consistent"]:
                    failures.append(
                        f"answer counts disagree: wrk counted {check['load_generator_counted']} "
                        f"but the {hop.description} counted {check['first_hop_counted']}"
                    )
        return MeasurementOutcome(
            raw_result=raw, failure="; ".join(failures) or None, context=context
        )

    # -------------------------------------------------------------------- info

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        folder = self.folder(ctx)
        state = folder.read()
        info: dict[str, Any] = {
            "environment": "local",
            "mesh": self.mesh,
            "data_plane": DATA_PLANES[self._path(self.mesh)],
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
        if self.mesh == "envoy-mtls":
            info["envoy"] = {
                "concurrency": envoy.CONCURRENCY,
                "tls": "mutual, per-run CA",
                "l7": "HTTP at both sidecars",
                "gateway": "SNI passthrough",
            }
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

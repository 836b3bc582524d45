"""``wireguard``: an L3 tunnel between the two namespaces (userspace wireguard-go), nginx
reached at its tunnel address."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from meshbench.backend import RunContext, Step, StepFailed
from meshbench.local import resources
from meshbench.local import wireguard as wg
from meshbench.local.meshes.base import LocalDataPlane, NotReady
from meshbench.local.ops import LocalOp
from meshbench.local.topology import Topology

if TYPE_CHECKING:
    from meshbench.local.backend import LocalBackend
    from meshbench.local.state import RunState

CLUSTERS = ("client", "server")
START_ORDER = ("server", "client")


def _other(cluster: str) -> str:
    return "server" if cluster == "client" else "client"


def _process(cluster: str) -> str:
    return f"wireguard-{cluster}"


class WireGuard(LocalDataPlane):
    name = "wireguard"
    path = "wireguard"
    data_plane = "client -> WireGuard tunnel (wireguard-go, userspace) -> nginx"
    programs = ("wireguard-go", "wg")
    components: ClassVar[Mapping[str, str]] = {
        _process(cluster): f"wireguard-go in the {cluster} cluster" for cluster in START_ORDER
    }
    component_roles: ClassVar[Mapping[str, str]] = {
        _process(cluster): resources.TUNNEL for cluster in START_ORDER
    }
    needs_namespaces = (
        "the wireguard mesh needs network namespaces (root): its tunnel devices would "
        "otherwise change this machine's own routing"
    )

    def url(self, topology: Topology) -> str:
        return f"http://{topology.tunnel_server_address}:{topology.ports['nginx']}/"

    def install_ops(
        self, backend: LocalBackend, ctx: RunContext, topology: Topology, iteration: int
    ) -> list[LocalOp]:
        # Both key pairs exist before the first end starts: each end is told its peer's key.
        keys = functools.cache(lambda: {cluster: wg.generate_keypair() for cluster in CLUSTERS})
        inner = {"client": topology.tunnel_client_address, "server": topology.tunnel_server_address}
        outer = {"client": topology.client_address, "server": topology.server_address}
        ports = {cluster: topology.ports[f"wireguard_{cluster}"] for cluster in CLUSTERS}

        def start(cluster: str) -> dict[str, Any]:
            folder = backend.folder(ctx)
            directory = backend.iteration_dir(ctx, iteration)
            interface = topology.wireguard_interface(cluster)
            record = backend.start(
                ctx,
                _process(cluster),
                wg.daemon_command(interface),
                cluster,
                directory / f"{_process(cluster)}.log",
                env=wg.DAEMON_ENVIRONMENT,
            )
            if not wg.wait_for_socket(interface, backend.settings.ready_timeout):
                backend.require_running(record)
                raise StepFailed(
                    f"{backend.describe(record.name)} created no control socket "
                    f"{wg.socket_path(interface)} within "
                    f"{backend.settings.ready_timeout:g} s"
                )
            namespace = topology.namespace(cluster)
            assert namespace
            peer = _other(cluster)
            relative = directory.relative_to(folder.path)
            key_file = folder.write_private(
                f"{relative}/{_process(cluster)}.key", keys()[cluster][0].encode()
            )
            wg.configure(
                namespace,
                interface,
                key_file,
                ports[cluster],
                peer_public_key=keys()[peer][1],
                peer_inner_address=inner[peer],
                peer_endpoint=f"{outer[peer]}:{ports[peer]}",
                inner_cidr=f"{inner[cluster]}/{topology.tunnel_prefix_length}",
            )
            key_file.unlink()  # wireguard-go holds the key now
            return {"interfaces": [topology.wireguard_interface(c) for c in CLUSTERS]}

        ops = []
        for cluster in START_ORDER:
            interface = topology.wireguard_interface(cluster)
            step = Step(
                "install_mesh",
                "process",
                f"wireguard-go {interface}",
                f"wireguard-go -f {interface}; wg set {interface} ...",
                cluster,
            )
            ops.append(LocalOp(step, functools.partial(start, cluster)))
        return ops

    def ready_ops(
        self, backend: LocalBackend, ctx: RunContext, topology: Topology, iteration: int
    ) -> list[LocalOp]:
        step = Step("wait_mesh_ready", "wait", "a WireGuard handshake completes")
        return [LocalOp(step, lambda: self._wait_handshake(backend, backend.state(ctx)))]

    @staticmethod
    def _wait_handshake(backend: LocalBackend, state: RunState) -> dict[str, Any]:
        topology = state.topology
        client_ns = topology.namespace("client")
        interface = topology.wireguard_interface("client")
        assert client_ns
        records = [
            state.processes[_process(c)] for c in START_ORDER if _process(c) in state.processes
        ]
        if len(records) != 2:
            raise StepFailed("wireguard-go was never started in both clusters (install_mesh)")

        def handshake() -> int:
            for record in records:
                backend.require_running(record)
            stamp = wg.latest_handshake(client_ns, interface)
            if stamp == 0:
                wg.send_handshake_trigger(client_ns, topology.tunnel_server_address)
                raise NotReady(f"no handshake on {interface} yet")
            return stamp

        stamp = backend.wait(
            f"the WireGuard tunnel {interface} <-> {topology.wireguard_interface('server')}",
            handshake,
        )
        return {
            "handshake": stamp,
            "interfaces": [interface, topology.wireguard_interface("server")],
        }

    def after_stop(self, topology: Topology) -> None:
        for cluster in CLUSTERS:
            # wireguard-go removes its socket on a clean exit, not when killed.
            wg.socket_path(topology.wireguard_interface(cluster)).unlink(missing_ok=True)

    def diagnose(self, backend: LocalBackend, state: RunState) -> list[str]:
        client_ns = state.topology.namespace("client")
        interface = state.topology.wireguard_interface("client")
        if client_ns and wg.latest_handshake(client_ns, interface) == 0:
            return [f"the WireGuard tunnel {interface} has no handshake"]
        return []


DATA_PLANE = WireGuard()

"""``envoy-mtls``: client sidecar Envoy -> gateway Envoy (SNI passthrough) -> server sidecar
Envoy, mutual TLS between the sidecars with certificates from a per-run CA."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from meshbench.backend import RunContext, Step, StepFailed
from meshbench.local import binaries, counters, envoy, pki, probes, resources
from meshbench.local.meshes.base import LocalDataPlane, NotReady
from meshbench.local.ops import LocalOp
from meshbench.local.processes import ProcessRecord
from meshbench.local.topology import Topology

if TYPE_CHECKING:
    from meshbench.local.backend import LocalBackend
    from meshbench.local.state import RunState

CONNECTIONS = "http.outbound.downstream_cx_total"
ANSWERS_2XX = "http.outbound.downstream_rq_2xx"


def _stats_reading(text: str) -> counters.Reading:
    stats = envoy.parse_stats(text)
    return counters.Reading(connections=stats[CONNECTIONS], answers=stats[ANSWERS_2XX])


class EnvoyMtls(LocalDataPlane):
    name = "envoy-mtls"
    path = "envoy-mtls"
    data_plane = (
        "client -> client sidecar Envoy (HTTP) -> gateway Envoy (SNI passthrough) -> "
        "server sidecar Envoy (mutual TLS, HTTP) -> nginx"
    )
    programs = ("envoy",)
    components: ClassVar[Mapping[str, str]] = {role.name: role.description for role in envoy.ROLES}
    component_roles: ClassVar[Mapping[str, str]] = {
        envoy.CLIENT_SIDECAR.name: resources.CLIENT_PROXY,
        envoy.GATEWAY.name: resources.GATEWAY,
        envoy.SERVER_SIDECAR.name: resources.SERVER_PROXY,
    }

    def url(self, topology: Topology) -> str:
        return f"http://{topology.local_host('client')}:{topology.ports['client_sidecar']}/"

    def first_hop(self, topology: Topology) -> counters.FirstHop:
        pattern = "|".join(name.split(".")[-1] for name in (CONNECTIONS, ANSWERS_2XX))
        return counters.FirstHop(
            url=f"http://{topology.local_host('client')}:"
            f"{topology.ports['client_sidecar_admin']}/stats?filter="
            f"^http[.]outbound[.]({pattern})$",
            namespace=topology.namespace("client"),
            description="client sidecar Envoy counters (downstream_cx_total, downstream_rq_2xx)",
            answers_are="2xx responses",
            # Admin requests do not pass through the outbound listener: readings add nothing.
            parse=_stats_reading,
            counts_error_answers=False,
        )

    # ------------------------------------------------------------------- CA

    def prepare_pair_ops(self, backend: LocalBackend, ctx: RunContext) -> list[LocalOp]:
        def make_ca() -> dict[str, Any]:
            self.ensure_ca(backend, ctx)
            return {
                "ca": "per-run CA, EC P-256",
                "trust_domain": pki.trust_domain(ctx.resource_prefix),
            }

        step = Step(
            "prepare_pair",
            "api",
            "per-run CA (EC P-256, cryptography)",
            f"trust domain {pki.trust_domain(ctx.resource_prefix)}",
        )
        return [LocalOp(step, make_ca)]

    @staticmethod
    def ensure_ca(backend: LocalBackend, ctx: RunContext) -> pki.Issued:
        folder = backend.folder(ctx)
        certificate, key = folder.path / "ca.pem", folder.path / "ca-key.pem"
        if certificate.exists() and key.exists():
            return pki.Issued(certificate.read_bytes(), key.read_bytes())
        ca = pki.make_ca(ctx.resource_prefix)
        folder.write_private("ca-key.pem", ca.private_key_pem)
        folder.file("ca.pem").write_bytes(ca.certificate_pem)
        return ca

    def _write_certificates(
        self, backend: LocalBackend, ctx: RunContext, topology: Topology, iteration: int
    ) -> envoy.Certificates:
        folder = backend.folder(ctx)
        directory = backend.iteration_dir(ctx, iteration)
        ca = self.ensure_ca(backend, ctx)
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
        return certificates

    # -------------------------------------------------------------- install

    def install_ops(
        self, backend: LocalBackend, ctx: RunContext, topology: Topology, iteration: int
    ) -> list[LocalOp]:
        # Issued once, when the first Envoy starts: both sidecars' certificates come together.
        certificates = functools.cache(
            lambda: self._write_certificates(backend, ctx, topology, iteration)
        )
        config_builders = {
            envoy.SERVER_SIDECAR.name: lambda: envoy.server_sidecar_config(
                topology, certificates()
            ),
            envoy.GATEWAY.name: lambda: envoy.gateway_config(topology),
            envoy.CLIENT_SIDECAR.name: lambda: envoy.client_sidecar_config(
                topology, certificates()
            ),
        }

        def start(role: envoy.EnvoyRole) -> dict[str, Any]:
            directory = backend.iteration_dir(ctx, iteration)
            config_path = envoy.write_config(
                directory / f"{role.name}.json", config_builders[role.name]()
            )
            argv = envoy.command(binaries.envoy_path(), config_path, directory / f"{role.name}.log")
            backend.start(ctx, role.name, argv, role.cluster, directory / f"{role.name}.out")
            return {"sni": envoy.sni(topology)}

        return [
            LocalOp(
                Step(
                    "install_mesh",
                    "process",
                    f"start {role.description}",
                    f"envoy -c <{role.name}.json> --concurrency "
                    f"{envoy.CONCURRENCY} --disable-hot-restart",
                    role.cluster,
                ),
                functools.partial(start, role),
            )
            for role in envoy.ROLES
        ]

    # ------------------------------------------------------------ readiness

    def ready_ops(
        self, backend: LocalBackend, ctx: RunContext, topology: Topology, iteration: int
    ) -> list[LocalOp]:
        def every_envoy_ready() -> dict[str, Any]:
            state = backend.state(ctx)
            for role in envoy.ROLES:
                record = state.processes.get(role.name)
                if record is None:
                    raise StepFailed(f"{role.description} was never started (install_mesh)")
                backend.wait(
                    role.description,
                    lambda r=role, p=record: self._ready(backend, topology, r, p),
                )
            return {"ready": [role.description for role in envoy.ROLES]}

        step = Step("wait_mesh_ready", "http", "each Envoy's admin /ready answers 200")
        return [LocalOp(step, every_envoy_ready)]

    @staticmethod
    def _ready(
        backend: LocalBackend, topology: Topology, role: envoy.EnvoyRole, record: ProcessRecord
    ) -> None:
        backend.require_running(record)
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

    def diagnose(self, backend: LocalBackend, state: RunState) -> list[str]:
        findings = []
        for role in envoy.ROLES:
            record = state.processes.get(role.name)
            if record is None or not record.is_running():
                continue
            try:
                self._ready(backend, state.topology, role, record)
            except (NotReady, OSError, StepFailed) as exc:
                findings.append(f"{role.description} is not ready ({exc})")
        return findings

    def run_info(self) -> dict[str, Any]:
        return {
            "envoy": {
                "concurrency": envoy.CONCURRENCY,
                "tls": "mutual, per-run CA",
                "l7": "HTTP at both sidecars",
                "gateway": "SNI passthrough",
            }
        }


DATA_PLANE = EnvoyMtls()

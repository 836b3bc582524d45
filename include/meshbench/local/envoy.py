"""The ``envoy-mtls`` data plane: client sidecar -> gateway (SNI passthrough) -> server
sidecar -> nginx, the shape Istio multi-network and Kuma multi-zone share.

- The client sidecar proxies HTTP (L7) and opens mutual TLS to the server cluster's
  gateway, naming the destination in SNI.
- The gateway does not terminate TLS: it reads SNI and passes the bytes through to the
  server sidecar (Istio's AUTO_PASSTHROUGH, Kuma's zone ingress).
- The server sidecar terminates mutual TLS, checks the client's identity and proxies HTTP
  to nginx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshbench.local.topology import Topology

CONCURRENCY = 1
CONNECT_TIMEOUT = "2s"
# The SNI name the client sidecar asks the gateway for, in Istio's outbound cluster format.
SNI_TEMPLATE = "outbound_.{port}_._.nginx.{prefix}-server.svc.cluster.local"


def _typed(name: str) -> str:
    """The type URL of an Envoy extension's configuration message."""
    return f"type.googleapis.com/envoy.extensions.{name}"


ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": _typed("filters.http.router.v3.Router")},
}


@dataclass(frozen=True)
class Certificates:
    ca: Path
    client_certificate: Path
    client_key: Path
    server_certificate: Path
    server_key: Path
    client_identity: str
    server_identity: str


@dataclass(frozen=True)
class EnvoyRole:
    name: str  # process name in the state file
    cluster: str  # "client" or "server"
    admin_port_role: str
    description: str


CLIENT_SIDECAR = EnvoyRole(
    "client-sidecar", "client", "client_sidecar_admin", "client sidecar Envoy"
)
GATEWAY = EnvoyRole("gateway", "server", "gateway_admin", "gateway Envoy (SNI passthrough)")
SERVER_SIDECAR = EnvoyRole(
    "server-sidecar", "server", "server_sidecar_admin", "server sidecar Envoy"
)
ROLES = (SERVER_SIDECAR, GATEWAY, CLIENT_SIDECAR)


def sni(topology: Topology) -> str:
    return SNI_TEMPLATE.format(port=topology.ports["nginx"], prefix=topology.prefix)


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _admin(topology: Topology, role: EnvoyRole) -> dict[str, Any]:
    return {
        "address": _address(topology.local_host(role.cluster), topology.ports[role.admin_port_role])
    }


def _static_cluster(name: str, host: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
        **extra,
    }


def _http_manager(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _typed("filters.network.http_connection_manager.v3.HttpConnectionManager"),
            "stat_prefix": stat_prefix,
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [
                    {
                        "name": "nginx",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ],
            },
            "http_filters": [ROUTER],
        },
    }


def _bootstrap(
    topology: Topology, role: EnvoyRole, listener: dict[str, Any], cluster: dict[str, Any]
) -> dict[str, Any]:
    """The static bootstrap every Envoy of the path runs: one listener, one upstream."""
    return {
        "node": {"id": f"{topology.prefix}-{role.name}", "cluster": role.cluster},
        "admin": _admin(topology, role),
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


def _tls_context(certificate: Path, key: Path, ca: Path, peer_identity: str) -> dict[str, Any]:
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(certificate)},
                "private_key": {"filename": str(key)},
            }
        ],
        "validation_context": {
            "trusted_ca": {"filename": str(ca)},
            "match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": peer_identity}}
            ],
        },
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
    }


def client_sidecar_config(topology: Topology, certificates: Certificates) -> dict[str, Any]:
    transport = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _typed("transport_sockets.tls.v3.UpstreamTlsContext"),
            "sni": sni(topology),
            "common_tls_context": _tls_context(
                certificates.client_certificate,
                certificates.client_key,
                certificates.ca,
                certificates.server_identity,
            ),
        },
    }
    listener = {
        "name": "outbound",
        "address": _address(topology.local_host("client"), topology.ports["client_sidecar"]),
        "filter_chains": [{"filters": [_http_manager("outbound", "nginx_remote")]}],
    }
    upstream = _static_cluster(
        "nginx_remote",
        topology.server_address,
        topology.ports["gateway"],
        transport_socket=transport,
    )
    return _bootstrap(topology, CLIENT_SIDECAR, listener, upstream)


def gateway_config(topology: Topology) -> dict[str, Any]:
    listener = {
        "name": "cross_network",
        "address": _address(topology.server_address, topology.ports["gateway"]),
        "listener_filters": [
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": _typed("filters.listener.tls_inspector.v3.TlsInspector")},
            }
        ],
        "filter_chains": [
            {
                "filter_chain_match": {"server_names": [sni(topology)]},
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": _typed("filters.network.tcp_proxy.v3.TcpProxy"),
                            "stat_prefix": "passthrough",
                            "cluster": "server_sidecar",
                        },
                    }
                ],
            }
        ],
    }
    upstream = _static_cluster(
        "server_sidecar", topology.local_host("server"), topology.ports["server_sidecar"]
    )
    return _bootstrap(topology, GATEWAY, listener, upstream)


def server_sidecar_config(topology: Topology, certificates: Certificates) -> dict[str, Any]:
    transport = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _typed("transport_sockets.tls.v3.DownstreamTlsContext"),
            "require_client_certificate": True,
            "common_tls_context": _tls_context(
                certificates.server_certificate,
                certificates.server_key,
                certificates.ca,
                certificates.client_identity,
            ),
        },
    }
    nginx_host = topology.server_address if topology.network_mode == "loopback" else "127.0.0.1"
    listener = {
        "name": "inbound",
        "address": _address(topology.local_host("server"), topology.ports["server_sidecar"]),
        "filter_chains": [
            {
                "transport_socket": transport,
                "filters": [_http_manager("inbound", "local_nginx")],
            }
        ],
    }
    upstream = _static_cluster("local_nginx", nginx_host, topology.ports["nginx"])
    return _bootstrap(topology, SERVER_SIDECAR, listener, upstream)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config, indent=2))
    return path


def command(envoy: Path, config_path: Path, log_path: Path) -> list[str]:
    return [
        str(envoy),
        "-c",
        str(config_path),
        "--concurrency",
        str(CONCURRENCY),
        "--disable-hot-restart",
        "--log-level",
        "warning",
        "--log-path",
        str(log_path),
    ]


def parse_stats(text: str) -> dict[str, int]:
    """Counters and gauges from the admin ``/stats`` text output (histograms skipped)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, separator, value = line.partition(": ")
        if separator and value.strip().lstrip("-").isdigit():
            values[name] = int(value)
    return values

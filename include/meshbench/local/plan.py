"""The plan of a local run: every step, its command line, nothing executed (``meshbench
plan --env local``, the DAG's documentation, tests)."""

from __future__ import annotations

from meshbench.backend import Plan, RunContext, Step
from meshbench.config import LocalEnvironment
from meshbench.local import envoy, netns, nginx, pki
from meshbench.local.topology import NETNS_PORTS, Topology, plan_topology


def local_plan(settings: LocalEnvironment, mesh: str, ctx: RunContext) -> Plan:
    """Every step of a local run in order, without making anything."""
    path = "direct" if mesh == "baseline" else mesh
    mode = "netns" if netns.can_create_namespaces() else "loopback"
    if settings.network_mode != "auto":
        mode = settings.network_mode
    prefix = ctx.resource_prefix
    if mode == "netns":
        placeholder = plan_topology(prefix, "netns", settings.subnet, settings.cpu_placement)
    else:
        # Loopback ports are chosen free at creation; the plan shows the netns ports.
        placeholder = Topology(
            prefix=prefix,
            network_mode="loopback",
            client_address="127.x.y.1",
            server_address="127.x.y.2",
            underlay_prefix_length=30,
            tunnel_client_address="-",
            tunnel_server_address="-",
            tunnel_prefix_length=30,
            ports=dict(NETNS_PORTS),
            cpu_placement=settings.cpu_placement,
        )
    steps: list[Step] = []
    warnings: list[str] = []
    if mode == "netns":
        client_ns, server_ns = placeholder.namespace("client"), placeholder.namespace("server")
        steps += [
            Step(
                "create_clusters",
                "command",
                f"network namespace {client_ns}",
                f"ip netns add {client_ns}",
                "client",
            ),
            Step(
                "create_clusters",
                "command",
                f"network namespace {server_ns}",
                f"ip netns add {server_ns}",
                "server",
            ),
            Step(
                "create_clusters",
                "command",
                "veth pair between the clusters",
                f"ip link add {placeholder.veth('client')} netns {client_ns} type veth "
                f"peer name {placeholder.veth('server')} netns {server_ns}\n"
                f"ip -n {client_ns} address add {placeholder.client_address}/30 dev "
                f"{placeholder.veth('client')}\n"
                f"ip -n {server_ns} address add {placeholder.server_address}/30 dev "
                f"{placeholder.veth('server')}",
            ),
        ]
    else:
        warnings.append(
            "not root: the clusters are two loopback addresses in this namespace "
            "(mode 'loopback', recorded with the results); wireguard needs root"
        )
        steps.append(
            Step(
                "create_clusters",
                "command",
                "two loopback addresses",
                f"{placeholder.client_address} and {placeholder.server_address}"
                " with free ports chosen at creation",
            )
        )
    if mesh == "envoy-mtls":
        steps.append(
            Step(
                "prepare_pair",
                "api",
                "per-run CA (EC P-256, cryptography)",
                f"trust domain {pki.trust_domain(prefix)}",
            )
        )
        for role in envoy.ROLES:
            steps.append(
                Step(
                    "install_mesh",
                    "process",
                    f"start {role.description}",
                    f"envoy -c <{role.name}.json> --concurrency "
                    f"{envoy.CONCURRENCY} --disable-hot-restart",
                    role.cluster,
                )
            )
        steps.append(Step("wait_mesh_ready", "http", "each Envoy's admin /ready answers 200"))
    elif mesh == "wireguard":
        for cluster in ("client", "server"):
            interface = placeholder.wireguard_interface(cluster)
            steps.append(
                Step(
                    "install_mesh",
                    "process",
                    f"wireguard-go {interface}",
                    f"wireguard-go -f {interface}; wg set {interface} ...",
                    cluster,
                )
            )
        steps.append(Step("wait_mesh_ready", "wait", "a WireGuard handshake completes"))
    steps += [
        Step(
            "deploy_workloads",
            "process",
            "nginx (generated config, access log off, "
            f"keepalive_requests {nginx.KEEPALIVE_REQUESTS}, {nginx.BODY_SIZE}-byte body)",
            f"nginx -c <nginx.conf>  # listens on {placeholder.nginx_listen}",
            "server",
        ),
        Step(
            "wait_workloads_ready",
            "http",
            "nginx answers 200 directly and through the whole path",
            placeholder.url(path),
        ),
        *(
            [
                Step(
                    "measure",
                    "process",
                    "paired baseline: wrk on the direct path right before each mesh run",
                    f"wrk ... {placeholder.url('direct')}",
                    "client",
                )
            ]
            if mesh != "baseline" and settings.paired_baseline
            else []
        ),
        Step(
            "measure",
            "process",
            "wrk back to back",
            f"wrk --connections {ctx.load.connections} --duration "
            f"{ctx.load.duration:g}s --script wrk_report.lua "
            f"{placeholder.url(path)}",
            "client",
        ),
        Step("uninstall_mesh", "process", "stop the recorded processes by pid"),
        Step("delete_clusters", "command", "delete the namespaces and the run's state"),
    ]
    return Plan(environment="local", mesh=mesh, steps=tuple(steps), warnings=tuple(warnings))

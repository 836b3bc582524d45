"""One builder per Istio component: each renders that component's install and uninstall ops
for both clusters; ``IstioInstaller.components`` lists them in install order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshbench.backend import RunContext
from meshbench.kube.ops import Op, apply_op, call_op, delete_op
from meshbench.meshes.common import (
    ROLES,
    CliFile,
    Component,
    ComponentBuilder,
    api_wait_op,
    cli_op,
    delete_namespace_op,
    delete_secret_op,
    inventory_component,
    other,
    phase,
    render,
    require_version,
    step_text,
)
from meshbench.meshes.istio.resources import (
    CROSS_NETWORK_GATEWAY,
    CROSS_NETWORK_PORT,
    EASTWEST,
    EASTWEST_SELECTOR,
    ISTIO_NAMESPACE,
    ISTIOCTL,
    delete_eastwest_op,
    eastwest_gone_state,
    gateway_api_version,
    remote_secret_name,
)
from meshbench.meshes.pki import CACERTS_SECRET

if TYPE_CHECKING:
    from meshbench.meshes.istio.installer import IstioInstaller


def istioctl_install_op(
    installer: IstioInstaller, step_phase: str, role: str, description: str, operator: CliFile
) -> Op:
    """``istioctl install`` of one IstioOperator file, waiting for what it installs."""
    return cli_op(
        step_phase,
        role,
        description,
        ISTIOCTL,
        [
            "install",
            "-y",
            "--readiness-timeout",
            f"{int(installer.timeouts.rollout)}s",
            "-f",
            f"{{dir}}/{operator.name}",
        ],
        installer.timeouts.command,
        files=[operator],
    )


def preflight(installer: IstioInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    version = require_version(ctx, installer.name)
    part = Component("preflight")
    part.install.append(
        call_op(
            install,
            "client",
            "command",
            step_text(
                "preflight",
                f"{ISTIOCTL} on the worker is version {version} (a client of another version "
                f"installs another Istio)",
            ),
            lambda clusters: installer._check_cli(clusters, version),
            f"{ISTIOCTL} version --remote=false",
        )
    )
    return part


def namespace(installer: IstioInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    part = Component("namespace")
    for role in ROLES:
        part.install.append(
            apply_op(
                install,
                role,
                [installer.system_namespace(ctx, role)],
                step_text(
                    "namespace",
                    f"{ISTIO_NAMESPACE} labelled with network {installer.network(role)} (before "
                    f"istiod starts, which reads it for pods without sidecars)",
                ),
            )
        )
        part.uninstall.append(
            delete_namespace_op(
                uninstall,
                role,
                "namespace",
                ISTIO_NAMESPACE,
                installer.timeouts.namespace_deletion,
                f"delete {ISTIO_NAMESPACE} and wait until it is gone",
            )
        )
    return part


def plugin_ca(installer: IstioInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    part = Component("plug-in CA")
    part.install.append(installer._cacerts_op(ctx, install))
    for role in ROLES:
        part.uninstall.append(
            delete_secret_op(uninstall, role, "plug-in CA", ISTIO_NAMESPACE, CACERTS_SECRET)
        )
    return part


def control_plane(installer: IstioInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    timeout = installer.timeouts.command
    part = Component("control plane")
    for role in ROLES:
        part.install.append(
            istioctl_install_op(
                installer,
                install,
                role,
                step_text(
                    "control plane",
                    f"istioctl install: mesh {installer.settings.mesh_id}, cluster "
                    f"{installer.cluster_name(role)}, network {installer.network(role)}",
                ),
                CliFile(
                    "control-plane.yaml",
                    render(
                        [
                            installer.control_plane_operator(
                                role, installer.load_balancer_policy(ctx, role)
                            )
                        ]
                    ),
                ),
            )
        )
        part.uninstall.append(
            cli_op(
                uninstall,
                role,
                step_text(
                    "control plane",
                    "istioctl uninstall --purge (istiod, webhooks, cluster roles, CRDs)",
                ),
                ISTIOCTL,
                ["uninstall", "-y", "--purge"],
                timeout,
            )
        )
    return part


def eastwest_gateway(installer: IstioInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    timeouts = installer.timeouts
    part = Component("east-west gateway")
    for role in ROLES:
        load_balancer = installer.load_balancer_policy(ctx, role)
        part.install.append(
            istioctl_install_op(
                installer,
                install,
                role,
                step_text(
                    "east-west gateway",
                    f"istioctl install {EASTWEST} for network {installer.network(role)} "
                    f"(LoadBalancer ports 15021, 15443, 15012, 15017"
                    + (
                        ""
                        if load_balancer.is_empty
                        else "; the environment's load-balancer annotations and source ranges"
                    )
                    + ")",
                ),
                CliFile(
                    "eastwest.yaml", render([installer.eastwest_operator(role, load_balancer)])
                ),
            )
        )
        part.uninstall += [
            delete_eastwest_op(uninstall, role),
            delete_op(
                uninstall,
                role,
                "v1",
                "Service",
                EASTWEST,
                ISTIO_NAMESPACE,
                timeouts.load_balancer,
                step_text(
                    "east-west gateway",
                    f"Service {EASTWEST} is gone (its cloud load balancer with it)",
                ),
            ),
            api_wait_op(
                uninstall,
                role,
                step_text("east-west gateway", f"nothing of {EASTWEST} is left"),
                eastwest_gone_state,
                timeouts.namespace_deletion,
                f"LIST the kinds above with labels {EASTWEST_SELECTOR} in "
                f"{ISTIO_NAMESPACE}: none left; up to {timeouts.namespace_deletion:g}s",
                record_as=f"eastwest_left_{role}",
            ),
        ]
    return part


def cross_network_gateway(installer: IstioInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    version = require_version(ctx, installer.name)
    part = Component("cross-network gateway")
    for role in ROLES:
        part.install.append(
            apply_op(
                install,
                role,
                [installer.cross_network_gateway(ctx)],
                step_text(
                    "cross-network gateway",
                    f"expose *.local services on {CROSS_NETWORK_PORT} (AUTO_PASSTHROUGH)",
                ),
            )
        )
        part.uninstall.append(
            delete_op(
                uninstall,
                role,
                gateway_api_version(version),
                "Gateway",
                CROSS_NETWORK_GATEWAY,
                ISTIO_NAMESPACE,
                None,
                step_text(
                    "cross-network gateway",
                    f"delete Gateway {ISTIO_NAMESPACE}/{CROSS_NETWORK_GATEWAY}",
                ),
            )
        )
    return part


def remote_secrets(installer: IstioInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    part = Component("remote secrets")
    for target in ROLES:
        described = other(target)
        secret = remote_secret_name(installer.cluster_name(described))
        part.install.append(installer._remote_secret_op(ctx, install, target, described))
        part.uninstall.append(
            delete_secret_op(
                uninstall,
                target,
                "remote secrets",
                ISTIO_NAMESPACE,
                secret,
                f"it describes the {described} cluster",
            )
        )
    return part


# Install order; uninstall runs them backwards.
COMPONENT_BUILDERS: tuple[ComponentBuilder, ...] = (
    preflight,
    inventory_component,
    namespace,
    plugin_ca,
    control_plane,
    eastwest_gateway,
    cross_network_gateway,
    remote_secrets,
)

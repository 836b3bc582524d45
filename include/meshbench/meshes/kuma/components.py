"""One builder per Kuma component: each renders that component's install and uninstall ops;
``KumaInstaller.components`` lists them in install order."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshbench.backend import RunContext, StepFailed
from meshbench.kube.cluster import Clusters
from meshbench.kube.load_balancers import NO_POLICY, policy_patch_op
from meshbench.kube.ops import apply_op, call_op, wait_op
from meshbench.kube.redact import format_command
from meshbench.kube.waits import load_balancer_state
from meshbench.meshes import inventory
from meshbench.meshes.common import (
    ROLES,
    Component,
    ComponentBuilder,
    cli_op,
    delete_crds_op,
    delete_namespace_op,
    delete_secret_op,
    inventory_component,
    managed_labels,
    namespace_manifest,
    phase,
    render,
    require_version,
    step_text,
)
from meshbench.meshes.kuma.resources import (
    ALLOW_ALL,
    CA_BACKEND,
    CONTROL_PLANE,
    GLOBAL_SYNC_SERVICE,
    INGRESS,
    INJECTION_LABEL,
    KDS_PORT,
    MESH,
    POSTGRES_SECRET,
    RELEASE,
    ZONE_NAMESPACE,
    allow_all_permission,
    mesh_resource,
    needs_traffic_permission,
)


def global_control_plane(installer: KumaInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    version = require_version(ctx, installer.name)
    store = installer.settings.global_control_plane
    g = installer.global_role
    timeouts = installer.timeouts
    global_part = Component("global control plane")
    global_part.install.append(
        apply_op(
            install,
            g,
            [namespace_manifest(installer.global_namespace, managed_labels(ctx))],
            step_text("global control plane", f"namespace {installer.global_namespace}"),
        )
    )
    if store.store == "postgres":
        global_part.install.append(
            call_op(
                install,
                g,
                "manifest",
                step_text(
                    "global control plane",
                    f"Secret {installer.global_namespace}/{POSTGRES_SECRET} from Airflow "
                    f"connection {store.postgres_conn_id!r}",
                ),
                lambda clusters: installer._apply_postgres_secret(clusters, ctx),
                "keys host, port, user, password, db (values never shown)",
            )
        )

    # Both zones' control planes, one of them in the global's own cluster, connect to
    # the KDS load balancer.
    global_load_balancer = installer.load_balancer_policy(ctx, g, ROLES)

    def apply_global(clusters: Clusters) -> dict[str, Any]:
        objects = installer._render_global(clusters, version, global_load_balancer)
        clusters[g].apply(objects)
        return {"kuma_global_objects": len(objects)}

    global_part.install += [
        call_op(
            install,
            g,
            "manifest",
            step_text(
                "global control plane",
                f"Kuma {version} global (universal on Kubernetes, {store.store} store) in "
                f"{installer.global_namespace}, rendered by helm and applied server-side",
            ),
            apply_global,
            installer._global_render_detail(
                version,
                "drop helm hooks"
                + (
                    ", drop the 'migration' init container (memory store)"
                    if store.store == "memory"
                    else ""
                )
                + f"; refuse cluster-scoped objects; server-side apply in "
                f"{installer.global_namespace}",
                global_load_balancer,
            ),
        ),
        wait_op(
            install,
            g,
            step_text(
                "global control plane",
                f"deployment {installer.global_namespace}/{CONTROL_PLANE} rolled out",
            ),
            lambda cluster: cluster.wait_rollout(
                installer.global_namespace, CONTROL_PLANE, timeouts.rollout
            ),
            f"poll apps/v1 Deployment {installer.global_namespace}/{CONTROL_PLANE}, up to "
            f"{timeouts.rollout:g}s",
        ),
        wait_op(
            install,
            g,
            step_text(
                "global control plane",
                f"KDS service {installer.global_namespace}/{GLOBAL_SYNC_SERVICE} ({KDS_PORT}) has "
                f"a LoadBalancer address",
            ),
            lambda cluster: cluster.wait_load_balancer(
                installer.global_namespace, GLOBAL_SYNC_SERVICE, timeouts.load_balancer
            ),
            f"poll v1 Service {installer.global_namespace}/{GLOBAL_SYNC_SERVICE} "
            f".status.loadBalancer.ingress[0], up to {timeouts.load_balancer:g}s",
            record_as="kuma_global_kds_address",
        ),
    ]

    def delete_global(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[g]
        found = cluster.api.get("v1", "Namespace", installer.global_namespace)
        if found is None:
            return {"kuma_global": "already gone"}
        deleted = 0
        # Deleted by name: the environment's Service fields make no difference here.
        for obj in reversed(installer._render_global(clusters, version, NO_POLICY)):
            metadata = obj["metadata"]
            if cluster.delete(
                obj["apiVersion"], obj["kind"], metadata["name"], metadata["namespace"]
            ):
                deleted += 1
        return {"kuma_global_objects_deleted": deleted}

    global_part.uninstall.append(
        call_op(
            uninstall,
            g,
            "api",
            step_text(
                "global control plane",
                "delete what the same rendering created (reverse order)",
            ),
            delete_global,
            installer._global_render_detail(
                version,
                "DELETE each rendered object, last first (already gone is fine)",
                NO_POLICY,
            ),
        )
    )
    if store.store == "postgres":
        global_part.uninstall.append(
            delete_secret_op(
                uninstall, g, "global control plane", installer.global_namespace, POSTGRES_SECRET
            )
        )
    global_part.uninstall.append(
        delete_namespace_op(
            uninstall,
            g,
            "global control plane",
            installer.global_namespace,
            timeouts.namespace_deletion,
            f"delete namespace {installer.global_namespace} and wait until it is gone (its "
            f"load balancer with it)",
        )
    )
    return global_part


def mesh(installer: KumaInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    version = require_version(ctx, installer.name)
    mesh_part = Component("mesh")
    calls: list[tuple[str, str, Mapping[str, Any] | None]] = []
    undo: list[tuple[str, str, Mapping[str, Any] | None]] = []
    if needs_traffic_permission(version):
        # Before mTLS: without it, mTLS denies all traffic from 2.6 on.
        calls.append(
            (
                "PUT",
                f"/meshes/{MESH}/meshtrafficpermissions/{ALLOW_ALL}",
                allow_all_permission(),
            )
        )
    calls.append(("PUT", f"/meshes/{MESH}", mesh_resource(mtls=True)))
    undo.append(("PUT", f"/meshes/{MESH}", mesh_resource(mtls=False)))
    if needs_traffic_permission(version):
        undo.append(("DELETE", f"/meshes/{MESH}/meshtrafficpermissions/{ALLOW_ALL}", None))
    mesh_part.install.append(
        installer._api_op(
            install,
            step_text(
                "mesh",
                f"Mesh {MESH} with builtin-CA mTLS ({CA_BACKEND})"
                + (
                    " and a MeshTrafficPermission allowing all"
                    if needs_traffic_permission(version)
                    else ""
                ),
            ),
            calls,
        )
    )
    mesh_part.uninstall.append(
        installer._api_op(
            uninstall,
            step_text("mesh", f"Mesh {MESH} back without mTLS (matters with a Postgres store)"),
            undo,
            teardown=True,
        )
    )
    return mesh_part


def zone_control_planes(installer: KumaInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    version = require_version(ctx, installer.name)
    key = f"before-iteration-{iteration:02d}"
    g = installer.global_role
    timeouts = installer.timeouts
    zones_part = Component("zone control planes")
    for role in ROLES:
        zones_part.install.append(
            apply_op(
                install,
                role,
                [
                    namespace_manifest(
                        ZONE_NAMESPACE, {**managed_labels(ctx), INJECTION_LABEL: "disabled"}
                    )
                ],
                step_text(
                    "zone control planes",
                    f"namespace {ZONE_NAMESPACE} ({INJECTION_LABEL}=disabled, required from 2.11)",
                ),
            )
        )

        ingress_load_balancer = installer.load_balancer_policy(ctx, role)
        values = installer.zone_values(ingress_load_balancer)
        patched = not ingress_load_balancer.is_empty

        def install_zone(
            clusters: Clusters,
            role: str = role,
            values: dict[str, Any] = values,
            patched: bool = patched,
        ) -> dict[str, Any]:
            state = load_balancer_state(
                clusters[g].api, installer.global_namespace, GLOBAL_SYNC_SERVICE
            )
            if not state.ready:
                raise StepFailed("; ".join(state.pending))
            with tempfile.TemporaryDirectory(prefix="meshbench-") as folder:
                values_file = None
                if values:
                    values_file = str(Path(folder) / "zone-values.yaml")
                    Path(values_file).write_text(render([values]), encoding="utf-8")
                clusters[role].run(
                    "helm",
                    installer.zone_install_args(
                        version, role, str(state.value), values_file, wait=not patched
                    ),
                    timeout=timeouts.command + timeouts.rollout,
                )
            return {f"kuma_zone_{role}": installer.zone(role)}

        detail = format_command(
            [
                "helm",
                *installer.zone_install_args(
                    version,
                    role,
                    "<global KDS address>",
                    "<tmp>/zone-values.yaml" if values else None,
                    wait=not patched,
                ),
            ]
        )
        if values:
            detail += "\n# <tmp>/zone-values.yaml\n" + render([values])
        zones_part.install.append(
            call_op(
                install,
                role,
                "command",
                step_text(
                    "zone control planes",
                    f"zone {installer.zone(role)} with zone ingress, connected to the global's KDS",
                ),
                install_zone,
                detail,
            )
        )
        if patched:
            zones_part.install.append(
                policy_patch_op(
                    install,
                    role,
                    ZONE_NAMESPACE,
                    INGRESS,
                    ingress_load_balancer,
                    step_text(
                        "zone control planes",
                        f"Service {ZONE_NAMESPACE}/{INGRESS} gets the environment's "
                        f"load-balancer settings right after helm created it (the chart has "
                        f"no value for source ranges)",
                    ),
                )
            )
    for role in ROLES:
        zones_part.uninstall += [
            cli_op(
                uninstall,
                role,
                step_text("zone control planes", f"helm uninstall zone {installer.zone(role)}"),
                "helm",
                ["uninstall", RELEASE, "--namespace", ZONE_NAMESPACE, "--wait"],
                timeouts.command,
                gone_if=("not found",),
            ),
            delete_crds_op(
                uninstall,
                role,
                "zone control planes",
                "kuma.io",
                lambda cluster, k=key: inventory.before_names(cluster, ctx, k, "crds"),
            ),
            delete_namespace_op(
                uninstall,
                role,
                "zone control planes",
                ZONE_NAMESPACE,
                timeouts.namespace_deletion,
                f"delete namespace {ZONE_NAMESPACE} and wait until it is gone",
            ),
        ]
    zones_part.uninstall.append(installer._delete_zones_op(uninstall))
    return zones_part


# Install order; uninstall runs them backwards.
COMPONENT_BUILDERS: tuple[ComponentBuilder, ...] = (
    inventory_component,
    global_control_plane,
    mesh,
    zone_control_planes,
)


if TYPE_CHECKING:
    from meshbench.meshes.kuma.installer import KumaInstaller

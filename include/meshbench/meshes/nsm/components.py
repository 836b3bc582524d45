"""One builder per NSM component: each renders that component's install and uninstall ops.
``pair_components`` lists those set up once per cluster pair (prepare_pair, undone in
delete_clusters), ``iteration_components`` those installed once per iteration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from meshbench.backend import RunContext
from meshbench.kube.cluster import Clusters
from meshbench.kube.ops import Op, apply_op, call_op, delete_op, wait_op
from meshbench.meshes import coredns, inventory
from meshbench.meshes.common import (
    ROLES,
    CliFile,
    Component,
    at_least,
    cli_op,
    delete_crds_op,
    delete_namespace_op,
    other,
    phase,
    require_version,
    step_text,
)
from meshbench.meshes.nsm import dns, spire
from meshbench.meshes.nsm.resources import (
    EXPOSED_DNS,
    NSM_CLUSTER,
    NSM_NAMESPACE,
    NSM_WEBHOOK,
    PAIR_KEY,
    SPIRE_CLAIM_FROM,
    SPIRE_NAMESPACE,
    SPIRE_POSTGRES_FROM,
    SPIRE_WEBHOOK,
    VL3_NAMESPACE,
    WEBHOOK_APP,
    git_ref,
    trust_domain,
)

if TYPE_CHECKING:
    from meshbench.meshes.nsm.installer import NsmInstaller

# The tasks that set up the once-per-pair components and undo them.
PREPARE, CLEANUP = "prepare_pair", "delete_clusters"


def kustomization_op(
    step_phase: str,
    role: str,
    description: str,
    target: str,
    files: Sequence[CliFile],
    timeout: float,
    delete: bool = False,
) -> Op:
    """``kubectl apply -k <target>``; with ``delete``, remove what it created without
    waiting: the namespace's deletion that follows is what is waited for."""
    args = ["apply", "-k", target]
    if delete:
        args = ["delete", "-k", target, "--ignore-not-found", "--wait=false"]
    return cli_op(step_phase, role, description, "kubectl", args, timeout, files=files)


# ------------------------------------------------------------------------- per pair


def pair_inventory(installer: NsmInstaller, ctx: RunContext) -> Component:
    part = Component("inventory")
    for role in ROLES:
        part.install.append(
            inventory.record_op(PREPARE, role, ctx, PAIR_KEY, "SPIRE and DNS are set up")
        )
        part.uninstall += [
            inventory.verify_op(
                CLEANUP,
                role,
                ctx,
                PAIR_KEY,
                "SPIRE and DNS were set up",
                installer.timeouts.namespace_deletion,
            ),
            inventory.remove_op(CLEANUP, role, ctx),
        ]
    return part


def interdomain_dns(installer: NsmInstaller, ctx: RunContext) -> Component:
    timeouts = installer.timeouts
    part = Component("interdomain DNS")
    # Each step runs in both clusters before the next starts: a Corefile can only be
    # edited once the peer's exposed DNS has an address, and probed once both are edited.
    for role in ROLES:
        part.install.append(dns.exposed_dns_op(installer, ctx, PREPARE, role))
    for role in ROLES:
        part.install.append(
            wait_op(
                PREPARE,
                role,
                step_text("interdomain DNS", f"service kube-system/{EXPOSED_DNS} has an address"),
                lambda cluster: cluster.wait_load_balancer(
                    coredns.COREDNS_NAMESPACE, EXPOSED_DNS, timeouts.load_balancer
                ),
                f"poll v1 Service kube-system/{EXPOSED_DNS} .status.loadBalancer.ingress[0], "
                f"up to {timeouts.load_balancer:g}s",
                record_as=f"exposed_dns_{role}",
            )
        )
    for role in ROLES:
        part.install.append(dns.edit_corefile_op(installer, ctx, PREPARE, role))
        part.uninstall += [
            dns.restore_corefile_op(ctx, CLEANUP, role),
            delete_op(
                CLEANUP,
                role,
                "v1",
                "Service",
                EXPOSED_DNS,
                coredns.COREDNS_NAMESPACE,
                timeouts.load_balancer,
                step_text(
                    "interdomain DNS",
                    f"delete Service kube-system/{EXPOSED_DNS} and wait until it is gone",
                ),
            ),
        ]
    for role in ROLES:
        part.install.append(dns.dns_probe_op(installer, ctx, PREPARE, role))
    return part


def spire_servers(installer: NsmInstaller, ctx: RunContext) -> Component:
    version = require_version(ctx, installer.name)
    settings = installer.settings
    timeouts = installer.timeouts
    part = Component("SPIRE")
    for role in ROLES:
        spire_target, spire_files = spire.spire_kustomize_args(settings, role, version)
        spiffe_ids = installer.cluster_spiffe_ids(ctx, role, version)
        if at_least(version, SPIRE_CLAIM_FROM):
            part.install.append(spire.spire_storage_op(PREPARE, role, settings.spire_storage_class))
        postgres = (
            f", postgres:{settings.spire_postgres_tag}"
            if at_least(version, SPIRE_POSTGRES_FROM)
            else ""
        )
        part.install += [
            kustomization_op(
                PREPARE,
                role,
                step_text(
                    "SPIRE",
                    f"SPIRE for trust domain {trust_domain(role)} (upstream "
                    f"examples/spire/{NSM_CLUSTER[role]} at {git_ref(version)}{postgres})",
                ),
                spire_target,
                spire_files,
                timeouts.command,
            ),
            *spire.spire_service_patch_ops(
                PREPARE, role, installer.load_balancer_policy(ctx, role)
            ),
            wait_op(
                PREPARE,
                role,
                step_text("SPIRE", "spire-server and spire-agent pods ready"),
                lambda cluster: [
                    cluster.wait_pods_ready(SPIRE_NAMESPACE, f"app={app}", timeouts.rollout)
                    for app in ("spire-server", "spire-agent")
                ],
                f"poll pods app=spire-server, app=spire-agent in {SPIRE_NAMESPACE}, up to "
                f"{timeouts.rollout:g}s each",
            ),
            apply_op(
                PREPARE,
                role,
                spiffe_ids,
                step_text(
                    "SPIRE",
                    f"ClusterSPIFFEIDs for NSM's pods (federating with "
                    f"{trust_domain(other(role))})",
                ),
            ),
        ]
        part.uninstall += [
            *(
                delete_op(
                    CLEANUP,
                    role,
                    "spire.spiffe.io/v1alpha1",
                    "ClusterSPIFFEID",
                    item["metadata"]["name"],
                    None,
                    None,
                    step_text("SPIRE", f"delete ClusterSPIFFEID {item['metadata']['name']}"),
                )
                for item in spiffe_ids
            ),
            kustomization_op(
                CLEANUP,
                role,
                step_text("SPIRE", f"delete what examples/spire/{NSM_CLUSTER[role]} created"),
                spire_target,
                spire_files,
                timeouts.command,
                delete=True,
            ),
            delete_crds_op(
                CLEANUP,
                role,
                "SPIRE",
                "spire.spiffe.io",
                inventory.crds_recorded(ctx, PAIR_KEY),
            ),
            delete_op(
                CLEANUP,
                role,
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                SPIRE_WEBHOOK,
                None,
                None,
                step_text("SPIRE", f"delete ValidatingWebhookConfiguration {SPIRE_WEBHOOK}"),
            ),
            delete_namespace_op(
                CLEANUP,
                role,
                "SPIRE",
                SPIRE_NAMESPACE,
                timeouts.namespace_deletion,
                f"delete namespace {SPIRE_NAMESPACE} and wait until it is gone",
            ),
        ]
    return part


def spiffe_federation(installer: NsmInstaller, ctx: RunContext) -> Component:
    timeout = installer.timeouts.command
    part = Component("SPIFFE federation")
    part.install.append(spire.federation_op(PREPARE))
    for role in ROLES:
        part.install.append(spire.federation_check_op(PREPARE, role, timeout))
        part.uninstall.append(spire.drop_bundle_op(CLEANUP, role, timeout))
    return part


# ------------------------------------------------------------------------- per iteration


def preflight(installer: NsmInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    part = Component("preflight")
    for role in ROLES:
        part.install.append(dns.pinned_address_op(installer, ctx, install, role))
    return part


def inventory_component(installer: NsmInstaller, ctx: RunContext, iteration: int) -> Component:
    return inventory.iteration_component(
        ctx, iteration, "NSM", installer.timeouts.namespace_deletion
    )


def delete_nsm_webhooks_op(step_phase: str, role: str) -> Op:
    def action(clusters: Clusters) -> dict[str, Any]:
        cluster = clusters[role]
        pods = cluster.api.list(
            "v1", "Pod", namespace=NSM_NAMESPACE, label_selector=f"app={WEBHOOK_APP}"
        )
        names = {NSM_WEBHOOK, *(p["metadata"]["name"] for p in pods)}
        deleted = [
            name
            for name in sorted(names)
            if cluster.delete(
                "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", name
            )
        ]
        return {f"nsm_webhooks_deleted_{role}": deleted}

    return call_op(
        step_phase,
        role,
        "api",
        step_text("NSM", "delete the admission webhook's MutatingWebhookConfiguration"),
        action,
        f"before v1.12 the webhook registers itself under its pod's name: LIST pods "
        f"app={WEBHOOK_APP} in {NSM_NAMESPACE}, DELETE MutatingWebhookConfiguration of each "
        f"name and {NSM_WEBHOOK}",
    )


def nsm_deployment(installer: NsmInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    version = require_version(ctx, installer.name)
    timeouts = installer.timeouts
    part = Component("NSM")
    for role in ROLES:
        files = installer.nsm_kustomization(ctx, role, version)
        part.install.append(
            kustomization_op(
                install,
                role,
                step_text(
                    "NSM",
                    f"interdomain NSM {git_ref(version)} in {NSM_NAMESPACE} (federating with "
                    f"{trust_domain(other(role))}; inter-node mechanism "
                    f"{installer.settings.inter_node_mechanism})",
                ),
                "{dir}/nsm",
                files,
                timeouts.command,
            )
        )
        part.uninstall += [
            delete_nsm_webhooks_op(uninstall, role),
            kustomization_op(
                uninstall,
                role,
                step_text("NSM", "delete what the NSM kustomization created"),
                "{dir}/nsm",
                files,
                timeouts.command,
                delete=True,
            ),
            delete_crds_op(
                uninstall,
                role,
                "NSM",
                "networkservicemesh.io",
                inventory.crds_recorded(ctx, inventory.iteration_key(iteration)),
            ),
            delete_namespace_op(
                uninstall,
                role,
                "NSM",
                NSM_NAMESPACE,
                timeouts.namespace_deletion,
                f"delete namespace {NSM_NAMESPACE} and wait until it is gone",
            ),
        ]
    return part


def vl3_network(installer: NsmInstaller, ctx: RunContext, iteration: int) -> Component:
    install = phase(iteration, "install_mesh")
    uninstall = phase(iteration, "uninstall_mesh")
    version = require_version(ctx, installer.name)
    settings = installer.settings
    timeouts = installer.timeouts
    part = Component("vl3 network")
    files = installer.vl3_kustomization(ctx, version)
    part.install.append(
        kustomization_op(
            install,
            "server",
            step_text(
                "vl3 network",
                f"NetworkService {settings.network_service} (payload IP), vl3 endpoint "
                f"and IPAM ({settings.vl3_prefix}) with DNS",
            ),
            "{dir}/vl3",
            files,
            timeouts.command,
        )
    )
    part.uninstall += [
        kustomization_op(
            uninstall,
            "server",
            step_text("vl3 network", "delete what the vl3 kustomization created"),
            "{dir}/vl3",
            files,
            timeouts.command,
            delete=True,
        ),
        delete_namespace_op(
            uninstall,
            "server",
            "vl3 network",
            VL3_NAMESPACE,
            timeouts.namespace_deletion,
            f"delete namespace {VL3_NAMESPACE} and wait until it is gone",
        ),
    ]
    return part


def pair_components(installer: NsmInstaller, ctx: RunContext) -> list[Component]:
    """The once-per-pair components in install order; cleanup runs them backwards."""
    return [
        pair_inventory(installer, ctx),
        interdomain_dns(installer, ctx),
        spire_servers(installer, ctx),
        spiffe_federation(installer, ctx),
    ]


def iteration_components(
    installer: NsmInstaller, ctx: RunContext, iteration: int
) -> list[Component]:
    """One iteration's components in install order; uninstall runs them backwards."""
    return [
        preflight(installer, ctx, iteration),
        inventory_component(installer, ctx, iteration),
        nsm_deployment(installer, ctx, iteration),
        vl3_network(installer, ctx, iteration),
    ]

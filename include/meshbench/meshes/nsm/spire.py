"""SPIRE in each cluster and SPIFFE federation between them: upstream's SPIRE
kustomization with what it leaves open made explicit, the ClusterSPIFFEIDs for NSM's pods,
the storage check before SPIRE is applied, and the exchange of trust bundles."""

from __future__ import annotations

from typing import Any

from meshbench.backend import RunContext, StepFailed
from meshbench.config import NsmMesh
from meshbench.kube.cluster import Clusters
from meshbench.kube.load_balancers import LoadBalancerPolicy, policy_patch_op
from meshbench.kube.ops import Op, call_op
from meshbench.meshes.common import (
    ROLES,
    CliFile,
    at_least,
    cli_op,
    managed_labels,
    other,
    render,
    step_text,
)
from meshbench.meshes.nsm.resources import (
    DEFAULT_CLASS_ANNOTATIONS,
    NSM_CLUSTER,
    SPIRE_CLAIM,
    SPIRE_CLAIM_FROM,
    SPIRE_NAMESPACE,
    SPIRE_POSTGRES_FROM,
    SPIRE_SERVER_CLI,
    SPIRE_SERVER_SERVICE,
    WEBHOOK_APP,
    WEBHOOK_SPIFFE_ID,
    WORKLOADS_SPIFFE_ID,
    json_patch_file,
    kustomization,
    trust_domain,
    upstream_url,
)


def spire_url(settings: NsmMesh, role: str, version: str) -> str:
    return upstream_url(settings, f"examples/spire/{NSM_CLUSTER[role]}", version)


def spire_files(settings: NsmMesh, role: str, version: str) -> list[CliFile]:
    """Upstream's examples/spire/clusterN with what it leaves open made explicit: the
    storage class of the spire-data claim (when one is configured) and the tag of the
    postgres image. Empty before v1.12: upstream's URL is applied as it is."""
    if not at_least(version, SPIRE_CLAIM_FROM):
        return []
    files: list[CliFile] = []
    patches: list[dict[str, Any]] = []
    if settings.spire_storage_class:
        patches.append(
            {
                "path": "patch-spire-data-storage-class.yaml",
                "target": {"group": "apps", "kind": "StatefulSet", "name": "spire-server"},
            }
        )
        files.append(
            json_patch_file(
                "spire/patch-spire-data-storage-class.yaml",
                [
                    {
                        "op": "add",
                        "path": "/spec/volumeClaimTemplates/0/spec/storageClassName",
                        "value": settings.spire_storage_class,
                    }
                ],
            )
        )
    spire = kustomization([spire_url(settings, role, version)], patches)
    if at_least(version, SPIRE_POSTGRES_FROM):
        spire["images"] = [{"name": "postgres", "newTag": settings.spire_postgres_tag}]
    return [CliFile("spire/kustomization.yaml", render([spire])), *files]


def spire_kustomize_args(settings: NsmMesh, role: str, version: str) -> tuple[str, list[CliFile]]:
    """What ``kubectl apply -k`` takes for SPIRE, and the files it reads."""
    files = spire_files(settings, role, version)
    return ("{dir}/spire" if files else spire_url(settings, role, version)), files


def _cluster_spiffe_id(ctx: RunContext, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "spire.spiffe.io/v1alpha1",
        "kind": "ClusterSPIFFEID",
        "metadata": {"name": name, "labels": managed_labels(ctx)},
        "spec": spec,
    }


def cluster_spiffe_ids(ctx: RunContext, role: str, version: str) -> list[dict[str, Any]]:
    own, peer = trust_domain(role), trust_domain(other(role))
    pod_id = f"spiffe://{own}/ns/{{{{.PodMeta.Namespace}}}}/pod/{{{{.PodMeta.Name}}}}"
    ids = [
        _cluster_spiffe_id(
            ctx,
            WORKLOADS_SPIFFE_ID,
            {
                "spiffeIDTemplate": pod_id,
                "podSelector": {"matchLabels": {"spiffe.io/spiffe-id": "true"}},
                "federatesWith": [peer],
            },
        )
    ]
    if at_least(version, "1.12"):
        # From v1.12 the admission webhook serves with a SPIRE-issued certificate.
        label = '{{index .PodMeta.Labels "spiffe.io/spiffe-dns-webhook"}}'
        ids.append(
            _cluster_spiffe_id(
                ctx,
                WEBHOOK_SPIFFE_ID,
                {
                    "spiffeIDTemplate": pod_id,
                    "dnsNameTemplates": [
                        f"{label}.{{{{.PodMeta.Namespace}}}}",
                        f"{label}.{{{{.PodMeta.Namespace}}}}.svc",
                    ],
                    "podSelector": {"matchLabels": {"app": WEBHOOK_APP}},
                },
            )
        )
    return ids


# ------------------------------------------------------------------------- ops


def spire_storage_op(step_phase: str, role: str, wanted: str | None) -> Op:
    """Fail before SPIRE is applied when its claim could not be bound: ``wanted`` (the
    configured class) must exist, or without one the cluster must have a default."""

    def action(clusters: Clusters) -> dict[str, Any]:
        classes = clusters[role].api.list("storage.k8s.io/v1", "StorageClass")
        names = sorted(c["metadata"]["name"] for c in classes)
        where = f"in the {role} cluster: SPIRE's 1Gi ReadWriteOnce claim {SPIRE_CLAIM} "
        found = ", ".join(names) or "none"
        if wanted:
            if wanted not in names:
                raise StepFailed(
                    f"no StorageClass {wanted!r} (meshes.nsm.spire_storage_class) "
                    f"{where}would stay Pending; StorageClasses there: {found}"
                )
            return {f"spire_storage_class_{role}": wanted}
        defaults = [
            c["metadata"]["name"]
            for c in classes
            if any(
                ((c["metadata"].get("annotations") or {}).get(key) or "").lower() == "true"
                for key in DEFAULT_CLASS_ANNOTATIONS
            )
        ]
        if not defaults:
            raise StepFailed(
                f"no default StorageClass {where}names no class and would stay Pending "
                f"(EKS from 1.30 marks none default, and its gp2/gp3 need the EBS CSI "
                f"driver): mark one default with {DEFAULT_CLASS_ANNOTATIONS[0]}=true or "
                f"set meshes.nsm.spire_storage_class; StorageClasses there: {found}"
            )
        return {f"spire_storage_class_{role}": f"{defaults[0]} (default)"}

    return call_op(
        step_phase,
        role,
        "api",
        step_text(
            "SPIRE",
            f"storage for the spire-server claim {SPIRE_CLAIM} (1Gi ReadWriteOnce): "
            + (
                f"StorageClass {wanted} exists"
                if wanted
                else "the cluster has a default StorageClass"
            ),
        ),
        action,
        "LIST storage.k8s.io/v1 StorageClass: "
        + (
            f"{wanted} (meshes.nsm.spire_storage_class) must be among them"
            if wanted
            else f'one must carry {DEFAULT_CLASS_ANNOTATIONS[0]}: "true"'
        )
        + "; otherwise fail before SPIRE is applied (the claim would stay Pending)",
    )


def spire_service_patch_ops(
    step_phase: str, role: str, load_balancer: LoadBalancerPolicy
) -> list[Op]:
    """Upstream's SPIRE kustomization, applied straight from its URL, makes Service
    spire-server a LoadBalancer; it gets the environment's settings right after."""
    if load_balancer.is_empty:
        return []
    return [
        policy_patch_op(
            step_phase,
            role,
            SPIRE_NAMESPACE,
            SPIRE_SERVER_SERVICE,
            load_balancer,
            step_text(
                "SPIRE",
                f"Service {SPIRE_NAMESPACE}/{SPIRE_SERVER_SERVICE} gets the environment's "
                f"load-balancer settings right after upstream's manifests created it",
            ),
        )
    ]


def federation_op(step_phase: str) -> Op:
    def action(clusters: Clusters) -> dict[str, Any]:
        bundles = {
            role: clusters[role]
            .kubectl(*SPIRE_SERVER_CLI, "bundle", "show", "-format", "spiffe")
            .stdout
            for role in ROLES
        }
        for role in ROLES:
            peer = other(role)
            if not bundles[peer].strip():
                raise StepFailed(f"the {peer} SPIRE server printed an empty bundle")
            clusters[role].run(
                "kubectl",
                [
                    "exec",
                    "-i",  # the peer's bundle comes on standard input
                    *SPIRE_SERVER_CLI[1:],
                    "bundle",
                    "set",
                    "-format",
                    "spiffe",
                    "-id",
                    f"spiffe://{trust_domain(peer)}",
                ],
                stdin=bundles[peer],
            )
        return {"spiffe_federation": "bundles exchanged"}

    lines = []
    for role in ROLES:
        peer = other(role)
        lines.append(
            f"[{peer}] kubectl exec -n spire spire-server-0 -- bin/spire-server bundle show "
            f"-format spiffe | [{role}] kubectl exec -i -n spire spire-server-0 -- "
            f"bin/spire-server bundle set -format spiffe -id spiffe://{trust_domain(peer)}"
        )
    return call_op(
        step_phase,
        None,
        "command",
        step_text("SPIFFE federation", "each SPIRE server trusts the other's bundle"),
        action,
        "\n".join(lines),
    )


def federation_check_op(step_phase: str, role: str, timeout: float) -> Op:
    peer = trust_domain(other(role))

    def check(output: str) -> None:
        if f"spiffe://{peer}" not in output and peer not in output:
            raise StepFailed(f"SPIRE server does not list a bundle for {peer}")

    return cli_op(
        step_phase,
        role,
        step_text("SPIFFE federation", f"the SPIRE server lists the bundle of {peer}"),
        "kubectl",
        [*SPIRE_SERVER_CLI, "bundle", "list", "-format", "spiffe"],
        timeout,
        check=check,
    )


def drop_bundle_op(step_phase: str, role: str, timeout: float) -> Op:
    peer = trust_domain(other(role))
    return cli_op(
        step_phase,
        role,
        step_text("SPIFFE federation", f"drop the bundle of {peer}"),
        "kubectl",
        [*SPIRE_SERVER_CLI, "bundle", "delete", "-id", f"spiffe://{peer}"],
        timeout,
        gone_if=("NotFound", "not found", "no such"),
    )

"""NSM names, upstream URLs, the kustomizations and patches meshbench writes around
upstream's manifests, and the readiness of NSM's pods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from meshbench.backend import RunContext
from meshbench.config import ContainerResources, NsmMesh
from meshbench.kube.cluster import KubeCluster
from meshbench.kube.load_balancers import LoadBalancerPolicy
from meshbench.kube.waits import Readiness, pod_is_ready, pod_problems
from meshbench.meshes import coredns
from meshbench.meshes.common import (
    CliFile,
    managed_labels,
    namespace_manifest,
    other,
    render,
    resources_record,
)

# Upstream's SPIRE kustomizations are per "cluster1"/"cluster2" (trust domain, peer URL).
# The vl3 endpoint lives in cluster1 as in upstream's vl3 examples, so that is the server.
NSM_CLUSTER = {"server": "cluster1", "client": "cluster2"}
NSM_NAMESPACE = "nsm-system"
SPIRE_NAMESPACE = "spire"
# kubectl arguments that run the SPIRE server CLI in its pod.
SPIRE_SERVER_CLI = ["exec", "-n", SPIRE_NAMESPACE, "spire-server-0", "--", "bin/spire-server"]
VL3_NAMESPACE = "ns-dns-vl3"
EXPOSED_DNS = "exposed-kube-dns"
SPIRE_WEBHOOK = "spire-controller-manager-webhook"
NSM_WEBHOOK = "nsm-mutating-webhook"  # a manifest from v1.12; before, named after its pod
WORKLOADS_SPIFFE_ID = "nsm-workloads"
WEBHOOK_SPIFFE_ID = "nsm-workloads-webhook"
NSM_APPS = (
    "nsmgr",
    "forwarder-vpp",
    "registry-k8s",
    "registry-proxy-dns",
    "nsmgr-proxy",
    "admission-webhook-k8s",
)
# The ``app`` label of each app's pods.
NSM_POD_APPS = ("nsmgr", "forwarder-vpp", "registry", "registry-proxy", "nsmgr-proxy")
# LoadBalancer Services of the NSM apps (nsmgr-proxy is one upstream; registry by our patch).
EXPOSED_NSM_SERVICES = ("nsmgr-proxy", "registry")
SPIRE_SERVER_SERVICE = "spire-server"  # a LoadBalancer in upstream's examples/spire/clusterN
WEBHOOK_APP = "admission-webhook-k8s"
VL3_APPS = ("nse-vl3-vpp", "vl3-ipam")
NSC_CONTAINER = "cmd-nsc"
INTERFACE = "nsm-1"
PAIR_KEY = "before-prepare-pair"
# From deployments-k8s v1.12.0 (e541301, #10287) examples/spire/base/server-statefulset.yaml
# claims a 1Gi ReadWriteOnce volume spire-data (no storage class) for /run/spire/data.
SPIRE_CLAIM_FROM = "1.12"
SPIRE_CLAIM = "spire-data"
# From v1.14.0 (9de8cac, #12120) examples/spire/cluster1|2 add ../postgres, whose
# Deployment uses `image: postgres` (no tag).
SPIRE_POSTGRES_FROM = "1.14"
DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
# A name CoreDNS in cluster X answers only once the edited Corefile is live: the peer's
# exposed kube-dns, forwarded to the peer and answered there by k8s_external.
DNS_PROBE_INTERVAL = 5
VPP_PATCH = "patch-vpp-resources.yaml"
# Why the VPP containers get no CPU limit by default (meshes.nsm.vpp_cpu_limit).
VPP_CPU_LIMIT_REASON = (
    "VPP busy-polls under load: NSM sets its interfaces to adaptive rx mode "
    "(cmd-forwarder-vpp v1.18.0 internal/vppinit/vppinit.go for the AF_XDP uplink, sdk-vpp "
    "kerneltap and memifrxmode for the pods' interfaces), which polls while packets flow, "
    "and vpphelper's vpp.conf starts only VPP's main thread (no workers, no poll-sleep). "
    "A VPP container under load so sits at one core whatever its limit, and the rule that "
    "fails a run at 90% of a CPU limit would fail every NSM run; without a limit the main "
    "thread still uses at most one core, the proxies' limit"
)
# Names in the vl3 network: <dnsName label>.<network service> (upstream's vl3-dns example).
DNS_TEMPLATE = '{{ index .Labels "dnsName" }}.{{ .NetworkService }}.'


def git_ref(version: str) -> str:
    return f"v{version.lstrip('v')}"


def trust_domain(role: str) -> str:
    return f"nsm.{NSM_CLUSTER[role]}"


def upstream_url(settings: NsmMesh, path: str, version: str) -> str:
    """A folder of deployments-k8s at the tag of ``version``, as kustomize fetches it."""
    return f"{settings.deployments_repository}/{path}?ref={git_ref(version)}"


def client_annotation(network_service: str, dns_name: str, remote_role: str | None) -> str:
    """``kernel://<service>[@<domain>]/<interface>?dnsName=<name>`` (section 3.7)."""
    where = f"@{coredns.domain(NSM_CLUSTER[remote_role])}" if remote_role else ""
    return f"kernel://{network_service}{where}/{INTERFACE}?dnsName={dns_name}"


# ------------------------------------------------------------------------- readiness


def _live_pods(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods not being deleted: a terminating pod says nothing about the new ones."""
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]


def pods_all_ready(api: Any, namespace: str, required_apps: Sequence[str]) -> Readiness:
    """Every pod in ``namespace`` ready, and each of ``required_apps`` has one."""
    pods = _live_pods(api.list("v1", "Pod", namespace=namespace))
    pending: list[str] = []
    apps = {((p.get("metadata") or {}).get("labels") or {}).get("app") for p in pods}
    for app in required_apps:
        if app not in apps:
            pending.append(f"{namespace}: no pod with app={app}")
    for pod in pods:
        if not pod_is_ready(pod):
            pending += pod_problems(pod)
    return Readiness(not pending, tuple(pending), len(pods))


def joined_state(cluster: KubeCluster, namespace: str, app: str) -> Readiness:
    """The ``app`` pods carry the NSM client container and are ready."""
    live = _live_pods(
        cluster.api.list("v1", "Pod", namespace=namespace, label_selector=f"app={app}")
    )
    if not live:
        return Readiness(False, (f"no {app} pod in {namespace}",))
    pending = []
    for pod in live:
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        if NSC_CONTAINER not in containers:
            pending.append(
                f"pod {pod['metadata']['name']}: no {NSC_CONTAINER} container (the NSM "
                f"admission webhook did not inject it)"
            )
        elif not pod_is_ready(pod):
            pending += pod_problems(pod)
    return Readiness(not pending, tuple(pending))


# ------------------------------------------------------------------------- manifests


def kustomization(
    resources: Sequence[str],
    patches: Sequence[Mapping[str, Any]] = (),
    namespace: str | None = None,
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    if namespace is not None:
        found["namespace"] = namespace
    found["resources"] = list(resources)
    if patches:
        found["patches"] = list(patches)
    return found


def json_patch_file(name: str, operations: Sequence[Mapping[str, Any]]) -> CliFile:
    """A kustomization's JSON patch (a list of operations) as a file."""
    return CliFile(name, yaml.safe_dump([dict(op) for op in operations], sort_keys=False))


def pod_template_patch(kind: str, name: str, template: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch of the pod template of one of upstream's workloads."""
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"template": template},
    }


def container_patch(kind: str, name: str, container: dict[str, Any]) -> dict[str, Any]:
    return pod_template_patch(kind, name, {"spec": {"containers": [container]}})


def federation_patch(deployment: str, role: str) -> dict[str, Any]:
    return pod_template_patch(
        "Deployment",
        deployment,
        {"metadata": {"annotations": {"spiffe.io/federatesWith": trust_domain(other(role))}}},
    )


def network_service(settings: NsmMesh, ctx: RunContext) -> dict[str, Any]:
    return {
        "apiVersion": "networkservicemesh.io/v1",
        "kind": "NetworkService",
        "metadata": {
            "name": settings.network_service,
            "namespace": VL3_NAMESPACE,
            "labels": managed_labels(ctx),
        },
        # vl3 is an IP network: this makes the forwarders choose an IP mechanism.
        "spec": {"payload": "IP"},
    }


def vpp_resources(proxy_resources: ContainerResources, vpp_cpu_limit: str | None) -> dict[str, Any]:
    """The proxies' resources, except the CPU limit (VPP_CPU_LIMIT_REASON)."""
    resources = resources_record(proxy_resources)
    if vpp_cpu_limit:
        resources["limits"]["cpu"] = vpp_cpu_limit
    else:
        del resources["limits"]["cpu"]
    return resources


def vpp_resources_patch(folder: str, resources: dict[str, Any]) -> CliFile:
    """A JSON patch replacing the VPP container's whole ``resources`` (a strategic merge
    would keep upstream's CPU limit): each of these pods has one container."""
    return json_patch_file(
        f"{folder}/{VPP_PATCH}",
        [{"op": "add", "path": "/spec/template/spec/containers/0/resources", "value": resources}],
    )


def vpp_kustomization(
    folder: str,
    namespace: str,
    ctx: RunContext,
    resources: Sequence[str],
    patches: Sequence[Mapping[str, Any]],
    files: Sequence[CliFile],
    vpp_workload: tuple[str, str],
    vpp: dict[str, Any],
) -> list[CliFile]:
    """The files ``kubectl apply -k {dir}/<folder>`` reads: ``resources`` in ``namespace``
    (our manifest, so it carries our labels) with ``patches`` and ``files``, and the VPP
    container of ``vpp_workload`` (kind, name) given the ``vpp`` resources."""
    kind, name = vpp_workload
    entries = [
        *patches,
        {
            # The VPP containers carry every packet: the proxies' resources, but the
            # CPU limit (VPP_CPU_LIMIT_REASON).
            "path": VPP_PATCH,
            "target": {"group": "apps", "kind": kind, "name": name},
        },
    ]
    folder_kustomization = kustomization(["namespace.yaml", *resources], entries, namespace)
    return [
        CliFile(f"{folder}/kustomization.yaml", render([folder_kustomization])),
        CliFile(
            f"{folder}/namespace.yaml", render([namespace_manifest(namespace, managed_labels(ctx))])
        ),
        *files,
        vpp_resources_patch(folder, vpp),
    ]


def nsm_kustomization(
    settings: NsmMesh,
    ctx: RunContext,
    role: str,
    version: str,
    load_balancer: LoadBalancerPolicy,
    vpp: dict[str, Any],
) -> list[CliFile]:
    """NSM's interdomain apps from upstream, federating with the peer's trust domain, with
    the mechanism, load-balancer and VPP resource settings of this run."""
    forwarder_container: dict[str, Any] = {
        "name": "forwarder-vpp",
    }
    if settings.inter_node_mechanism == "ipsec":
        forwarder_container["env"] = [{"name": "NSM_MECHANISM_PRIORITY", "value": "ipsec"}]
    patches = {
        "patch-nsmgr-proxy.yaml": federation_patch("nsmgr-proxy", role),
        "patch-registry-proxy.yaml": federation_patch("registry-proxy", role),
        "patch-registry-k8s.yaml": federation_patch("registry-k8s", role),
        "patch-forwarder.yaml": container_patch("DaemonSet", "forwarder-vpp", forwarder_container),
    }
    if not load_balancer.is_empty:
        # The other cluster's nsmgr-proxy and registry-proxy-dns reach these two
        # LoadBalancer Services; they are made with the environment's settings.
        for service in EXPOSED_NSM_SERVICES:
            patch = load_balancer.service_patch(NSM_NAMESPACE, service)
            patch["metadata"].pop("namespace")  # the kustomization sets it
            patches[f"patch-{service}-service-load-balancer.yaml"] = patch
    return vpp_kustomization(
        "nsm",
        NSM_NAMESPACE,
        ctx,
        [upstream_url(settings, f"apps/{app}", version) for app in NSM_APPS],
        [
            *({"path": name} for name in patches),
            {
                "path": "patch-registry-service.yaml",
                "target": {"version": "v1", "kind": "Service", "name": "registry"},
            },
        ],
        [
            *(CliFile(f"nsm/{name}", render([patch])) for name, patch in patches.items()),
            json_patch_file(
                "nsm/patch-registry-service.yaml",
                [{"op": "replace", "path": "/spec/type", "value": "LoadBalancer"}],
            ),
        ],
        ("DaemonSet", "forwarder-vpp"),
        vpp,
    )


def vl3_kustomization(
    settings: NsmMesh, ctx: RunContext, version: str, vpp: dict[str, Any]
) -> list[CliFile]:
    """The vl3 network in the server cluster: our NetworkService, upstream's vl3 endpoint
    and IPAM with this run's service name, DNS template, prefix and VPP resources."""
    nse_patch = container_patch(
        "Deployment",
        "nse-vl3-vpp",
        {
            "name": "nse",
            "env": [
                {"name": "NSM_SERVICE_NAMES", "value": settings.network_service},
                # The NetworkService is our own manifest (reviewable, removed explicitly)
                # instead of self-registered.
                {"name": "NSM_REGISTER_SERVICE", "value": "false"},
                {"name": "NSM_DNS_TEMPLATES", "value": DNS_TEMPLATE},
            ],
        },
    )
    ipam_patch = container_patch(
        "Deployment",
        "vl3-ipam",
        {"name": "vl3-ipam", "env": [{"name": "NSM_PREFIX", "value": str(settings.vl3_prefix)}]},
    )
    return vpp_kustomization(
        "vl3",
        VL3_NAMESPACE,
        ctx,
        [
            "network-service.yaml",
            upstream_url(settings, "apps/nse-vl3-vpp", version),
            upstream_url(settings, "apps/vl3-ipam", version),
        ],
        [{"path": "patch-nse.yaml"}, {"path": "patch-ipam.yaml"}],
        [
            CliFile("vl3/network-service.yaml", render([network_service(settings, ctx)])),
            CliFile("vl3/patch-nse.yaml", render([nse_patch])),
            CliFile("vl3/patch-ipam.yaml", render([ipam_patch])),
        ],
        ("Deployment", "nse-vl3-vpp"),
        vpp,
    )

"""Network Service Mesh interdomain vl3.

Facts and sources: mesh-recipes.md section 3 (networkservicemesh/deployments-k8s at
v1.11.1 and v1.18.0, sdk and sdk-vpp at v1.11.1). Upstream's READMEs are the recipe; the
manifests are applied from upstream at the pinned tag (``apps/...?ref=vX.Y.Z``) through
kustomizations written here, which add this run's patches: nothing is copied.

Once per cluster pair (prepare_pair, undone in delete_clusters):

1. interdomain DNS: kube-dns exposed as a LoadBalancer; CoreDNS answers ``my.<self>``
   with LoadBalancer addresses and forwards ``my.<peer>`` to the peer's exposed DNS. The
   original Corefile is kept first and restored on cleanup (upstream never restores it);
2. SPIRE in each cluster (upstream ``examples/spire/cluster1|2``: trust domains
   ``nsm.cluster1``/``nsm.cluster2``), with the ClusterSPIFFEIDs for NSM's workloads;
3. SPIFFE federation: each SPIRE server gets the other's trust bundle.

Per iteration (install_mesh, undone in uninstall_mesh): NSM's interdomain deployment in
``nsm-system`` at the configured version (nsmgr, forwarder-vpp, registry-k8s,
registry-proxy-dns, nsmgr-proxy, admission webhook; registry and nsmgr-proxy exposed), and
in the server cluster the vl3 network: NetworkService ``my-vl3-network`` (payload IP),
``nse-vl3-vpp`` and ``vl3-ipam`` with DNS names from the ``dnsName`` label. Workloads join
by the ``networkservicemesh.io`` annotation; the client's names the server's domain.

Every LoadBalancer Service (exposed DNS, spire-server, nsmgr-proxy, registry) gets the
environment's load-balancer settings: in our manifest, in the NSM kustomization, or for
upstream's SPIRE by a patch right after ``kubectl apply -k``.

vl3 carries IP payload, so the forwarders pick WireGuard between nodes; ``ipsec`` puts
``NSM_MECHANISM_PRIORITY=ipsec`` on the forwarders. Every NSM pod must be ready: a wait
that times out fails the iteration (the study ignored its failed waits).
"""

from __future__ import annotations

import re
import shlex
import socket
from collections.abc import Sequence
from typing import Any

import yaml

from meshbench.backend import RunContext, StepFailed
from meshbench.config import BenchmarkConfig, NsmMesh
from meshbench.kube.cluster import Clusters, KubeCluster
from meshbench.kube.load_balancers import policy_patch_op
from meshbench.kube.metrics import SampleScope
from meshbench.kube.ops import Op, apply_op, call_op, delete_op, wait_op
from meshbench.kube.redact import format_command
from meshbench.kube.waits import (
    Readiness,
    load_balancer_state,
    pod_is_ready,
    pod_problems,
    wait_for,
)
from meshbench.meshes import coredns, inventory
from meshbench.meshes.common import (
    ROLES,
    CliFile,
    Component,
    ComponentMeshInstaller,
    api_wait_op,
    at_least,
    cli_op,
    delete_crds_op,
    install_sequence,
    managed_labels,
    other,
    phase,
    render,
    require_version,
    resources_record,
    step_text,
    support_check,
    uninstall_sequence,
)
from meshbench.workloads.kubernetes import FORTIO, NGINX, NGINX_PORT, WorkloadProfile

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


def client_annotation(network_service: str, dns_name: str, remote_role: str | None) -> str:
    """``kernel://<service>[@<domain>]/<interface>?dnsName=<name>`` (section 3.7)."""
    where = f"@{coredns.domain(NSM_CLUSTER[remote_role])}" if remote_role else ""
    return f"kernel://{network_service}{where}/{INTERFACE}?dnsName={dns_name}"


def pods_all_ready(api: Any, namespace: str, required_apps: Sequence[str]) -> Readiness:
    """Every pod in ``namespace`` ready, and each of ``required_apps`` has one."""
    pods = [
        p
        for p in api.list("v1", "Pod", namespace=namespace)
        if not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    pending: list[str] = []
    apps = {((p.get("metadata") or {}).get("labels") or {}).get("app") for p in pods}
    for app in required_apps:
        if app not in apps:
            pending.append(f"{namespace}: no pod with app={app}")
    for pod in pods:
        if not pod_is_ready(pod):
            pending += pod_problems(pod)
    return Readiness(not pending, tuple(pending), len(pods))


def resolution_state(address: str) -> Readiness:
    """CoreDNS ``forward`` takes addresses, not names: AWS load balancers have hostnames
    (upstream resolves them with dig), and a fresh ELB name takes minutes to resolve. The
    value is the IPv4 address (an address is its own)."""
    try:
        socket.inet_aton(address)
        return Readiness(True, value=address)
    except OSError:
        pass
    if ":" in address:
        return Readiness(True, value=address)
    try:
        found = socket.getaddrinfo(address, 53, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        return Readiness(False, (f"{address} does not resolve yet: {exc}",))
    return Readiness(True, value=str(found[0][4][0]))


def resolve_ipv4(address: str, timeout: float, interval: float = DNS_PROBE_INTERVAL) -> str:
    """``address`` as an IPv4 address, retried until it resolves or ``timeout`` passes."""
    return str(
        wait_for(
            lambda: resolution_state(address),
            what=f"the peer's DNS load balancer {address} resolves",
            timeout=timeout,
            interval=interval,
        )
    )


def pinned_forward_address(corefile: str, peer_cluster: str) -> str | None:
    """The address the edited Corefile forwards ``my.<peer>`` to (None if not edited)."""
    match = re.search(
        rf"(?m)^{re.escape(coredns.domain(peer_cluster))}:53 \{{.*\n\s*forward \. (\S+):53",
        corefile,
    )
    return match.group(1).strip("[]") if match else None


def corefile_and_kept(cluster: KubeCluster, saved: str) -> tuple[str, dict[str, Any] | None]:
    """The cluster's live Corefile, and the ConfigMap keeping its original (if any)."""
    current = coredns.corefile_of(
        cluster.api.get("v1", "ConfigMap", coredns.COREDNS_CONFIGMAP, coredns.COREDNS_NAMESPACE)
    )
    return current, cluster.api.get("v1", "ConfigMap", saved, coredns.COREDNS_NAMESPACE)


def probe_name(cluster: str) -> str:
    return f"{EXPOSED_DNS}.{coredns.COREDNS_NAMESPACE}.{coredns.domain(cluster)}"


class NsmInstaller(ComponentMeshInstaller):
    name = "nsm"

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self.settings: NsmMesh = config.meshes.nsm
        self.timeouts = config.kubernetes.timeouts
        self.dns_interval: float = DNS_PROBE_INTERVAL  # between resolution and probe tries

    # ------------------------------------------------------------------ upstream
    def url(self, path: str, version: str) -> str:
        return f"{self.settings.deployments_repository}/{path}?ref={git_ref(version)}"

    def spire_url(self, role: str, version: str) -> str:
        return self.url(f"examples/spire/{NSM_CLUSTER[role]}", version)

    def spire_files(self, role: str, version: str) -> list[CliFile]:
        """Upstream's examples/spire/clusterN with what it leaves open made explicit: the
        storage class of the spire-data claim (when one is configured) and the tag of the
        postgres image. Empty before v1.12: upstream's URL is applied as it is."""
        if not at_least(version, SPIRE_CLAIM_FROM):
            return []
        kustomization: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [self.spire_url(role, version)],
        }
        files: list[CliFile] = []
        if self.settings.spire_storage_class:
            kustomization["patches"] = [
                {
                    "path": "patch-spire-data-storage-class.yaml",
                    "target": {"group": "apps", "kind": "StatefulSet", "name": "spire-server"},
                }
            ]
            patch = [
                {
                    "op": "add",
                    "path": "/spec/volumeClaimTemplates/0/spec/storageClassName",
                    "value": self.settings.spire_storage_class,
                }
            ]
            files.append(
                CliFile(
                    "spire/patch-spire-data-storage-class.yaml",
                    yaml.safe_dump(patch, sort_keys=False),
                )
            )
        if at_least(version, SPIRE_POSTGRES_FROM):
            kustomization["images"] = [
                {"name": "postgres", "newTag": self.settings.spire_postgres_tag}
            ]
        return [CliFile("spire/kustomization.yaml", render([kustomization])), *files]

    def spire_kustomize_args(self, role: str, version: str) -> tuple[str, list[CliFile]]:
        files = self.spire_files(role, version)
        return ("{dir}/spire" if files else self.spire_url(role, version)), files

    # ------------------------------------------------------------------ manifests
    def cluster_spiffe_ids(self, ctx: RunContext, role: str, version: str) -> list[dict[str, Any]]:
        own, peer = trust_domain(role), trust_domain(other(role))
        ids: list[dict[str, Any]] = [
            {
                "apiVersion": "spire.spiffe.io/v1alpha1",
                "kind": "ClusterSPIFFEID",
                "metadata": {"name": WORKLOADS_SPIFFE_ID, "labels": managed_labels(ctx)},
                "spec": {
                    "spiffeIDTemplate": (
                        f"spiffe://{own}/ns/{{{{.PodMeta.Namespace}}}}/pod/{{{{.PodMeta.Name}}}}"
                    ),
                    "podSelector": {"matchLabels": {"spiffe.io/spiffe-id": "true"}},
                    "federatesWith": [peer],
                },
            }
        ]
        if at_least(version, "1.12"):
            # From v1.12 the admission webhook serves with a SPIRE-issued certificate.
            label = '{{index .PodMeta.Labels "spiffe.io/spiffe-dns-webhook"}}'
            ids.append(
                {
                    "apiVersion": "spire.spiffe.io/v1alpha1",
                    "kind": "ClusterSPIFFEID",
                    "metadata": {"name": WEBHOOK_SPIFFE_ID, "labels": managed_labels(ctx)},
                    "spec": {
                        "spiffeIDTemplate": (
                            f"spiffe://{own}/ns/{{{{.PodMeta.Namespace}}}}/pod/"
                            f"{{{{.PodMeta.Name}}}}"
                        ),
                        "dnsNameTemplates": [
                            f"{label}.{{{{.PodMeta.Namespace}}}}",
                            f"{label}.{{{{.PodMeta.Namespace}}}}.svc",
                        ],
                        "podSelector": {"matchLabels": {"app": WEBHOOK_APP}},
                    },
                }
            )
        return ids

    def network_service(self, ctx: RunContext) -> dict[str, Any]:
        return {
            "apiVersion": "networkservicemesh.io/v1",
            "kind": "NetworkService",
            "metadata": {
                "name": self.settings.network_service,
                "namespace": VL3_NAMESPACE,
                "labels": managed_labels(ctx),
            },
            # vl3 is an IP network: this makes the forwarders choose an IP mechanism.
            "spec": {"payload": "IP"},
        }

    def _proxy_resources(self) -> dict[str, Any]:
        return resources_record(self.config.kubernetes.proxy_resources)

    def vpp_resources(self) -> dict[str, Any]:
        """The proxies' resources, except the CPU limit (VPP_CPU_LIMIT_REASON)."""
        resources = self._proxy_resources()
        if self.settings.vpp_cpu_limit:
            resources["limits"]["cpu"] = self.settings.vpp_cpu_limit
        else:
            del resources["limits"]["cpu"]
        return resources

    def vpp_resources_patch(self, folder: str) -> CliFile:
        """A JSON patch replacing the VPP container's whole ``resources`` (a strategic merge
        would keep upstream's CPU limit): each of these pods has one container."""
        patch = [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/resources",
                "value": self.vpp_resources(),
            }
        ]
        return CliFile(f"{folder}/{VPP_PATCH}", yaml.safe_dump(patch, sort_keys=False))

    def _federation_patch(self, deployment: str, role: str) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deployment},
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {"spiffe.io/federatesWith": trust_domain(other(role))}
                    }
                }
            },
        }

    def nsm_kustomization(self, ctx: RunContext, role: str, version: str) -> list[CliFile]:
        forwarder_container: dict[str, Any] = {
            "name": "forwarder-vpp",
        }
        if self.settings.inter_node_mechanism == "ipsec":
            forwarder_container["env"] = [{"name": "NSM_MECHANISM_PRIORITY", "value": "ipsec"}]
        patches = {
            "patch-nsmgr-proxy.yaml": self._federation_patch("nsmgr-proxy", role),
            "patch-registry-proxy.yaml": self._federation_patch("registry-proxy", role),
            "patch-registry-k8s.yaml": self._federation_patch("registry-k8s", role),
            "patch-forwarder.yaml": {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "forwarder-vpp"},
                "spec": {"template": {"spec": {"containers": [forwarder_container]}}},
            },
        }
        load_balancer = self.load_balancer_policy(ctx, role)
        if not load_balancer.is_empty:
            # The other cluster's nsmgr-proxy and registry-proxy-dns reach these two
            # LoadBalancer Services; they are made with the environment's settings.
            for service in EXPOSED_NSM_SERVICES:
                patch = load_balancer.service_patch(NSM_NAMESPACE, service)
                patch["metadata"].pop("namespace")  # the kustomization sets it
                patches[f"patch-{service}-service-load-balancer.yaml"] = patch
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": NSM_NAMESPACE,
            "resources": [
                "namespace.yaml",
                *(self.url(f"apps/{app}", version) for app in NSM_APPS),
            ],
            "patches": [
                *({"path": name} for name in patches),
                {
                    "path": "patch-registry-service.yaml",
                    "target": {"version": "v1", "kind": "Service", "name": "registry"},
                },
                {
                    # The forwarders carry every packet: the proxies' resources, but the
                    # CPU limit (VPP_CPU_LIMIT_REASON).
                    "path": VPP_PATCH,
                    "target": {"group": "apps", "kind": "DaemonSet", "name": "forwarder-vpp"},
                },
            ],
        }
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NSM_NAMESPACE, "labels": managed_labels(ctx)},
        }
        files = [
            CliFile("nsm/kustomization.yaml", render([kustomization])),
            CliFile("nsm/namespace.yaml", render([namespace])),
            *(CliFile(f"nsm/{name}", render([patch])) for name, patch in patches.items()),
            CliFile(
                "nsm/patch-registry-service.yaml",
                yaml.safe_dump(
                    [{"op": "replace", "path": "/spec/type", "value": "LoadBalancer"}],
                    sort_keys=False,
                ),
            ),
            self.vpp_resources_patch("nsm"),
        ]
        return files

    def vl3_kustomization(self, ctx: RunContext, version: str) -> list[CliFile]:
        nse_patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "nse-vl3-vpp"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "nse",
                                "env": [
                                    {
                                        "name": "NSM_SERVICE_NAMES",
                                        "value": self.settings.network_service,
                                    },
                                    # The NetworkService is our own manifest (reviewable,
                                    # removed explicitly) instead of self-registered.
                                    {"name": "NSM_REGISTER_SERVICE", "value": "false"},
                                    {
                                        "name": "NSM_DNS_TEMPLATES",
                                        "value": DNS_TEMPLATE,
                                    },
                                ],
                            }
                        ]
                    }
                }
            },
        }
        ipam_patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "vl3-ipam"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "vl3-ipam",
                                "env": [
                                    {"name": "NSM_PREFIX", "value": str(self.settings.vl3_prefix)}
                                ],
                            }
                        ]
                    }
                }
            },
        }
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": VL3_NAMESPACE,
            "resources": [
                "namespace.yaml",
                "network-service.yaml",
                self.url("apps/nse-vl3-vpp", version),
                self.url("apps/vl3-ipam", version),
            ],
            "patches": [
                {"path": "patch-nse.yaml"},
                {"path": "patch-ipam.yaml"},
                {
                    "path": VPP_PATCH,
                    "target": {"group": "apps", "kind": "Deployment", "name": "nse-vl3-vpp"},
                },
            ],
        }
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": VL3_NAMESPACE, "labels": managed_labels(ctx)},
        }
        return [
            CliFile("vl3/kustomization.yaml", render([kustomization])),
            CliFile("vl3/namespace.yaml", render([namespace])),
            CliFile("vl3/network-service.yaml", render([self.network_service(ctx)])),
            CliFile("vl3/patch-nse.yaml", render([nse_patch])),
            CliFile("vl3/patch-ipam.yaml", render([ipam_patch])),
            self.vpp_resources_patch("vl3"),
        ]

    # ------------------------------------------------------------------ per pair
    def _exposed_dns_op(self, ctx: RunContext, step_phase: str, role: str) -> Op:
        def action(clusters: Clusters) -> dict[str, Any]:
            cluster = clusters[role]
            kube_dns = cluster.api.get("v1", "Service", "kube-dns", coredns.COREDNS_NAMESPACE)
            if kube_dns is None:
                raise StepFailed("Service kube-system/kube-dns does not exist")
            selector = (kube_dns.get("spec") or {}).get("selector") or {}
            if not selector:
                raise StepFailed("Service kube-system/kube-dns has no selector to copy")
            cluster.apply([self.exposed_dns_service(ctx, role, selector)])
            return {f"exposed_dns_selector_{role}": selector}

        return call_op(
            step_phase,
            role,
            "manifest",
            step_text(
                "interdomain DNS", f"expose kube-dns as LoadBalancer Service {EXPOSED_DNS} (53/TCP)"
            ),
            action,
            "# the selector is copied from Service kube-system/kube-dns at run time (what\n"
            "# `kubectl expose service kube-dns` does); usually k8s-app: kube-dns\n"
            + render([self.exposed_dns_service(ctx, role, {"k8s-app": "kube-dns"})]),
        )

    def exposed_dns_service(
        self, ctx: RunContext, role: str, selector: dict[str, str]
    ) -> dict[str, Any]:
        """kube-dns as a LoadBalancer the other cluster's CoreDNS forwards to."""
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": EXPOSED_DNS,
                "namespace": coredns.COREDNS_NAMESPACE,
                "labels": managed_labels(ctx),
            },
            "spec": {
                "type": "LoadBalancer",
                "selector": dict(selector),
                "ports": [{"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"}],
            },
        }
        return self.load_balancer_policy(ctx, role).apply_to(service)

    def saved_corefile_name(self, ctx: RunContext) -> str:
        return f"{ctx.resource_prefix}-coredns-original"

    def _edit_corefile_op(self, ctx: RunContext, step_phase: str, role: str) -> Op:
        saved = self.saved_corefile_name(ctx)
        own, peer = NSM_CLUSTER[role], NSM_CLUSTER[other(role)]

        def action(clusters: Clusters) -> dict[str, Any]:
            cluster = clusters[role]
            current, kept = corefile_and_kept(cluster, saved)
            if coredns.MARKER in current:
                if kept is None:
                    raise StepFailed(
                        "CoreDNS already carries interdomain changes but no original was kept: "
                        "restore the Corefile by hand before running"
                    )
                return {f"coredns_{role}": "already changed by an earlier try"}
            if kept is None:
                cluster.apply([self._saved_corefile(ctx, current)])
            state = load_balancer_state(
                clusters[other(role)].api, coredns.COREDNS_NAMESPACE, EXPOSED_DNS
            )
            if not state.ready:
                raise StepFailed("; ".join(state.pending))
            peer_ip = resolve_ipv4(str(state.value), self.timeouts.load_balancer, self.dns_interval)
            cluster.apply(
                [
                    coredns.coredns_config_map(
                        coredns.interdomain_corefile(current, own, peer, peer_ip)
                    )
                ]
            )
            forwarded = f"{coredns.domain(peer)} -> {peer_ip}"
            return {f"coredns_{role}": f"k8s_external {coredns.domain(own)}, {forwarded}"}

        return call_op(
            step_phase,
            role,
            "manifest",
            step_text(
                "interdomain DNS",
                f"keep the original Corefile, then CoreDNS serves {coredns.domain(own)} and "
                f"forwards {coredns.domain(peer)} to the {other(role)} cluster",
            ),
            action,
            f"GET ConfigMap kube-system/coredns; if not kept yet: save its Corefile as ConfigMap "
            f"kube-system/{saved}\nadd to the '.:53' block:   k8s_external {coredns.domain(own)}\n"
            f"append:   {coredns.domain(peer)}:53 {{ forward . <{other(role)} {EXPOSED_DNS} "
            f"address>:53 {{ force_tcp }} }}\n(a hostname is resolved to an IPv4 address on the "
            f"worker, retried every {self.dns_interval:g}s for up to "
            f"{self.timeouts.load_balancer:g}s)",
        )

    def dns_probe_command(self, ctx: RunContext, role: str) -> list[str]:
        """kubectl arguments: a pod (nginx's image, which has getent) asks the cluster's
        CoreDNS for the peer's exposed kube-dns until it answers: only an edited Corefile
        that CoreDNS has reloaded forwards that name (``reload`` checks every 30s)."""
        name = probe_name(NSM_CLUSTER[other(role)])
        tries = max(1, int(self.timeouts.probe // self.dns_interval))
        script = (
            f"for i in $(seq {tries}); do getent hosts {name} && exit 0; "
            f"sleep {self.dns_interval:g}; done; echo {shlex.quote(name)} never answered >&2; "
            f"exit 1"
        )
        return [
            "run",
            f"{ctx.resource_prefix}-dns-probe",
            "--namespace",
            coredns.COREDNS_NAMESPACE,
            "--rm",
            "--attach",
            "--quiet",
            "--restart=Never",
            f"--image={self.config.kubernetes.nginx.image}",
            "--labels=" + ",".join(f"{k}={v}" for k, v in managed_labels(ctx).items()),
            "--command",
            "--",
            "sh",
            "-c",
            script,
        ]

    def _probe_dns(self, ctx: RunContext, cluster: KubeCluster, role: str) -> str:
        args = self.dns_probe_command(ctx, role)
        # A probe pod left by an interrupted try would make `kubectl run` fail.
        cluster.kubectl(
            "delete", "pod", args[1], "--namespace", coredns.COREDNS_NAMESPACE,
            "--ignore-not-found", "--wait=true", timeout=self.timeouts.command,
        )  # fmt: skip
        result = cluster.kubectl(*args, timeout=self.timeouts.probe + self.timeouts.command)
        answer = result.stdout.strip().splitlines()
        return answer[-1] if answer else "answered"

    def _dns_probe_op(self, ctx: RunContext, step_phase: str, role: str) -> Op:
        args = self.dns_probe_command(ctx, role)

        def action(clusters: Clusters) -> dict[str, Any]:
            return {f"dns_probe_{role}": self._probe_dns(ctx, clusters[role], role)}

        return call_op(
            step_phase,
            role,
            "command",
            step_text(
                "interdomain DNS",
                f"CoreDNS answers {probe_name(NSM_CLUSTER[other(role)])} (the edited Corefile "
                f"is live), probed from a pod",
            ),
            action,
            format_command(
                ["kubectl", "delete", "pod", args[1], "-n", "kube-system", "--ignore-not-found"]
            )
            + "\n"
            + format_command(["kubectl", *args])
            + f"\nup to {self.timeouts.probe:g}s, then the step fails",
        )

    def _pinned_address_op(self, ctx: RunContext, step_phase: str, role: str) -> Op:
        """The peer's DNS load balancer may have new addresses since prepare_pair pinned
        one in the Corefile: re-resolve it, and re-pin (and probe) when it moved."""
        saved = self.saved_corefile_name(ctx)
        own, peer = NSM_CLUSTER[role], NSM_CLUSTER[other(role)]

        def action(clusters: Clusters) -> dict[str, Any]:
            cluster = clusters[role]
            current, kept = corefile_and_kept(cluster, saved)
            pinned = pinned_forward_address(current, peer)
            if pinned is None or kept is None:
                raise StepFailed(
                    f"CoreDNS no longer forwards {coredns.domain(peer)} as prepare_pair set it "
                    f"up (or ConfigMap kube-system/{saved} is gone): run prepare_pair again"
                )
            peer_address = clusters[other(role)].wait_load_balancer(
                coredns.COREDNS_NAMESPACE, EXPOSED_DNS, self.timeouts.load_balancer
            )
            now = resolve_ipv4(peer_address, self.timeouts.load_balancer, self.dns_interval)
            if now == pinned:
                return {f"coredns_pinned_{role}": f"{coredns.domain(peer)} -> {pinned} (unchanged)"}
            original = coredns.corefile_of(kept)
            cluster.apply(
                [coredns.coredns_config_map(coredns.interdomain_corefile(original, own, peer, now))]
            )
            probe = self._probe_dns(ctx, cluster, role)
            return {
                f"coredns_pinned_{role}": f"{coredns.domain(peer)} moved {pinned} -> {now}",
                f"dns_probe_{role}": probe,
            }

        return call_op(
            step_phase,
            role,
            "api",
            step_text(
                "preflight",
                f"interdomain DNS: the address CoreDNS forwards {coredns.domain(peer)} to is "
                f"still the "
                f"{other(role)} cluster's {EXPOSED_DNS} address",
            ),
            action,
            f"GET ConfigMap kube-system/coredns: the address in its {coredns.domain(peer)} "
            f"forward; resolve the {other(role)} Service kube-system/{EXPOSED_DNS} address "
            f"again; if it moved: re-edit the kept original with the new address and probe as "
            f"in prepare_pair",
        )

    def _saved_corefile(self, ctx: RunContext, corefile: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.saved_corefile_name(ctx),
                "namespace": coredns.COREDNS_NAMESPACE,
                "labels": managed_labels(ctx),
            },
            "data": {coredns.COREFILE_KEY: corefile},
        }

    def _restore_corefile_op(self, ctx: RunContext, step_phase: str, role: str) -> Op:
        saved = self.saved_corefile_name(ctx)

        def action(clusters: Clusters) -> dict[str, Any]:
            cluster = clusters[role]
            kept = cluster.api.get("v1", "ConfigMap", saved, coredns.COREDNS_NAMESPACE)
            current_map = cluster.api.get(
                "v1", "ConfigMap", coredns.COREDNS_CONFIGMAP, coredns.COREDNS_NAMESPACE
            )
            if kept is None:
                if current_map and coredns.MARKER in coredns.corefile_of(current_map):
                    raise StepFailed(
                        f"CoreDNS carries interdomain changes but ConfigMap kube-system/{saved} "
                        f"with the original is gone: restore the Corefile by hand"
                    )
                return {f"coredns_{role}": "nothing to restore"}
            original = coredns.corefile_of(kept)
            cluster.apply([coredns.coredns_config_map(original)])
            cluster.delete("v1", "ConfigMap", saved, coredns.COREDNS_NAMESPACE)
            return {f"coredns_{role}": "original Corefile restored"}

        return call_op(
            step_phase,
            role,
            "manifest",
            step_text("interdomain DNS", "restore the original Corefile and drop the kept copy"),
            action,
            f"GET ConfigMap kube-system/{saved}; server-side apply its Corefile to "
            f"kube-system/coredns; DELETE kube-system/{saved}",
        )

    def _federation_op(self, step_phase: str) -> Op:
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

    def _federation_check_op(self, step_phase: str, role: str) -> Op:
        peer = trust_domain(other(role))

        def check(output: str) -> None:
            if f"spiffe://{peer}" not in output and peer not in output:
                raise StepFailed(f"SPIRE server does not list a bundle for {peer}")

        return cli_op(
            step_phase,
            role,
            step_text("SPIFFE federation", f"the SPIRE server lists the bundle of {peer}"),
            "kubectl",
            [
                *SPIRE_SERVER_CLI,
                "bundle",
                "list",
                "-format",
                "spiffe",
            ],
            self.timeouts.command,
            check=check,
        )

    def _spire_storage_op(self, step_phase: str, role: str) -> Op:
        wanted = self.settings.spire_storage_class

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

    def _spire_service_patch(self, ctx: RunContext, step_phase: str, role: str) -> list[Op]:
        """Upstream's SPIRE kustomization, applied straight from its URL, makes Service
        spire-server a LoadBalancer; it gets the environment's settings right after."""
        load_balancer = self.load_balancer_policy(ctx, role)
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

    def pair_components(self, ctx: RunContext) -> list[Component]:
        prepare, cleanup = "prepare_pair", "delete_clusters"
        version = require_version(ctx, self.name)
        timeouts = self.timeouts

        inventory_part = Component("inventory")
        dns = Component("interdomain DNS")
        spire = Component("SPIRE")
        federation = Component("SPIFFE federation")
        for role in ROLES:
            inventory_part.install.append(
                inventory.record_op(prepare, role, ctx, PAIR_KEY, "SPIRE and DNS are set up")
            )
            inventory_part.uninstall += [
                inventory.verify_op(
                    cleanup,
                    role,
                    ctx,
                    PAIR_KEY,
                    "SPIRE and DNS were set up",
                    timeouts.namespace_deletion,
                ),
                inventory.remove_op(cleanup, role, ctx),
            ]
            dns.install.append(self._exposed_dns_op(ctx, prepare, role))
        for role in ROLES:
            dns.install.append(
                wait_op(
                    prepare,
                    role,
                    step_text(
                        "interdomain DNS", f"service kube-system/{EXPOSED_DNS} has an address"
                    ),
                    lambda cluster: cluster.wait_load_balancer(
                        coredns.COREDNS_NAMESPACE, EXPOSED_DNS, timeouts.load_balancer
                    ),
                    f"poll v1 Service kube-system/{EXPOSED_DNS} .status.loadBalancer.ingress[0], "
                    f"up to {timeouts.load_balancer:g}s",
                    record_as=f"exposed_dns_{role}",
                )
            )
        for role in ROLES:
            dns.install.append(self._edit_corefile_op(ctx, prepare, role))
            dns.uninstall += [
                self._restore_corefile_op(ctx, cleanup, role),
                delete_op(
                    cleanup,
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
            dns.install.append(self._dns_probe_op(ctx, prepare, role))
        for role in ROLES:
            spire_target, spire_files = self.spire_kustomize_args(role, version)
            if at_least(version, SPIRE_CLAIM_FROM):
                spire.install.append(self._spire_storage_op(prepare, role))
            spire.install += [
                cli_op(
                    prepare,
                    role,
                    step_text(
                        "SPIRE",
                        f"SPIRE for trust domain {trust_domain(role)} (upstream "
                        f"examples/spire/{NSM_CLUSTER[role]} at {git_ref(version)}"
                        + (
                            f", postgres:{self.settings.spire_postgres_tag}"
                            if at_least(version, SPIRE_POSTGRES_FROM)
                            else ""
                        )
                        + ")",
                    ),
                    "kubectl",
                    ["apply", "-k", spire_target],
                    timeouts.command,
                    files=spire_files,
                ),
                *self._spire_service_patch(ctx, prepare, role),
                wait_op(
                    prepare,
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
                    prepare,
                    role,
                    self.cluster_spiffe_ids(ctx, role, version),
                    step_text(
                        "SPIRE",
                        f"ClusterSPIFFEIDs for NSM's pods (federating with "
                        f"{trust_domain(other(role))})",
                    ),
                ),
            ]
            spire.uninstall += [
                *(
                    delete_op(
                        cleanup,
                        role,
                        "spire.spiffe.io/v1alpha1",
                        "ClusterSPIFFEID",
                        item["metadata"]["name"],
                        None,
                        None,
                        step_text("SPIRE", f"delete ClusterSPIFFEID {item['metadata']['name']}"),
                    )
                    for item in self.cluster_spiffe_ids(ctx, role, version)
                ),
                cli_op(
                    cleanup,
                    role,
                    step_text("SPIRE", f"delete what examples/spire/{NSM_CLUSTER[role]} created"),
                    "kubectl",
                    ["delete", "-k", spire_target, "--ignore-not-found", "--wait=false"],
                    timeouts.command,
                    files=spire_files,
                ),
                delete_crds_op(
                    cleanup,
                    role,
                    "SPIRE",
                    "spire.spiffe.io",
                    lambda cluster: inventory.before_names(cluster, ctx, PAIR_KEY, "crds"),
                ),
                delete_op(
                    cleanup,
                    role,
                    "admissionregistration.k8s.io/v1",
                    "ValidatingWebhookConfiguration",
                    SPIRE_WEBHOOK,
                    None,
                    None,
                    step_text("SPIRE", f"delete ValidatingWebhookConfiguration {SPIRE_WEBHOOK}"),
                ),
                delete_op(
                    cleanup,
                    role,
                    "v1",
                    "Namespace",
                    SPIRE_NAMESPACE,
                    None,
                    timeouts.namespace_deletion,
                    step_text(
                        "SPIRE", f"delete namespace {SPIRE_NAMESPACE} and wait until it is gone"
                    ),
                ),
            ]
        federation.install.append(self._federation_op(prepare))
        for role in ROLES:
            federation.install.append(self._federation_check_op(prepare, role))
            peer = trust_domain(other(role))
            federation.uninstall.append(
                cli_op(
                    cleanup,
                    role,
                    step_text("SPIFFE federation", f"drop the bundle of {peer}"),
                    "kubectl",
                    [
                        *SPIRE_SERVER_CLI,
                        "bundle",
                        "delete",
                        "-id",
                        f"spiffe://{peer}",
                    ],
                    timeouts.command,
                    gone_if=("NotFound", "not found", "no such"),
                )
            )
        return [inventory_part, dns, spire, federation]

    def prepare_pair_ops(self, ctx: RunContext) -> list[Op]:
        return install_sequence(self.pair_components(ctx))

    def cleanup_pair_ops(self, ctx: RunContext) -> list[Op]:
        return uninstall_sequence(self.pair_components(ctx))

    # ------------------------------------------------------------------ per iteration
    def _delete_nsm_webhooks_op(self, step_phase: str, role: str) -> Op:
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

    def components(self, ctx: RunContext, iteration: int) -> list[Component]:
        install = phase(iteration, "install_mesh")
        uninstall = phase(iteration, "uninstall_mesh")
        version = require_version(ctx, self.name)
        key = f"before-iteration-{iteration:02d}"
        timeouts = self.timeouts

        preflight = Component("preflight")
        inventory_part = Component("inventory")
        nsm = Component("NSM")
        vl3 = Component("vl3 network")
        for role in ROLES:
            preflight.install.append(self._pinned_address_op(ctx, install, role))
            inventory_part.install.append(
                inventory.record_op(install, role, ctx, key, "NSM is installed")
            )
            inventory_part.uninstall.append(
                inventory.verify_op(
                    uninstall, role, ctx, key, "NSM was installed", timeouts.namespace_deletion
                )
            )
            files = self.nsm_kustomization(ctx, role, version)
            nsm.install.append(
                cli_op(
                    install,
                    role,
                    step_text(
                        "NSM",
                        f"interdomain NSM {git_ref(version)} in {NSM_NAMESPACE} (federating with "
                        f"{trust_domain(other(role))}; inter-node mechanism "
                        f"{self.settings.inter_node_mechanism})",
                    ),
                    "kubectl",
                    ["apply", "-k", "{dir}/nsm"],
                    timeouts.command,
                    files=files,
                )
            )
            nsm.uninstall += [
                self._delete_nsm_webhooks_op(uninstall, role),
                cli_op(
                    uninstall,
                    role,
                    step_text("NSM", "delete what the NSM kustomization created"),
                    "kubectl",
                    ["delete", "-k", "{dir}/nsm", "--ignore-not-found", "--wait=false"],
                    timeouts.command,
                    files=files,
                ),
                delete_crds_op(
                    uninstall,
                    role,
                    "NSM",
                    "networkservicemesh.io",
                    lambda cluster, k=key: inventory.before_names(cluster, ctx, k, "crds"),
                ),
                delete_op(
                    uninstall,
                    role,
                    "v1",
                    "Namespace",
                    NSM_NAMESPACE,
                    None,
                    timeouts.namespace_deletion,
                    step_text("NSM", f"delete namespace {NSM_NAMESPACE} and wait until it is gone"),
                ),
            ]
        vl3_files = self.vl3_kustomization(ctx, version)
        vl3.install.append(
            cli_op(
                install,
                "server",
                step_text(
                    "vl3 network",
                    f"NetworkService {self.settings.network_service} (payload IP), vl3 endpoint "
                    f"and IPAM ({self.settings.vl3_prefix}) with DNS",
                ),
                "kubectl",
                ["apply", "-k", "{dir}/vl3"],
                timeouts.command,
                files=vl3_files,
            )
        )
        vl3.uninstall += [
            cli_op(
                uninstall,
                "server",
                step_text("vl3 network", "delete what the vl3 kustomization created"),
                "kubectl",
                ["delete", "-k", "{dir}/vl3", "--ignore-not-found", "--wait=false"],
                timeouts.command,
                files=vl3_files,
            ),
            delete_op(
                uninstall,
                "server",
                "v1",
                "Namespace",
                VL3_NAMESPACE,
                None,
                timeouts.namespace_deletion,
                step_text(
                    "vl3 network", f"delete namespace {VL3_NAMESPACE} and wait until it is gone"
                ),
            ),
        ]
        return [preflight, inventory_part, nsm, vl3]

    # ------------------------------------------------------------------ readiness
    def _all_nsm_pods_ready_op(self, step_phase: str, role: str) -> Op:
        return api_wait_op(
            step_phase,
            role,
            f"every pod in {NSM_NAMESPACE} is ready",
            lambda cluster: pods_all_ready(
                cluster.api, NSM_NAMESPACE, (*NSM_POD_APPS, WEBHOOK_APP)
            ),
            self.timeouts.rollout,
            f"LIST pods in {NSM_NAMESPACE}: all Ready, and one each of app="
            f"{', '.join((*NSM_POD_APPS, WEBHOOK_APP))}; up to {self.timeouts.rollout:g}s, "
            f"then the iteration fails",
        )

    def ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        step_phase = phase(iteration, "wait_mesh_ready")
        timeouts = self.timeouts
        ops: list[Op] = []
        for role in ROLES:
            ops.append(self._all_nsm_pods_ready_op(step_phase, role))
            for service in ("nsmgr-proxy", "registry"):
                ops.append(
                    wait_op(
                        step_phase,
                        role,
                        f"service {NSM_NAMESPACE}/{service} has a LoadBalancer address",
                        lambda cluster, s=service: cluster.wait_load_balancer(
                            NSM_NAMESPACE, s, timeouts.load_balancer
                        ),
                        f"poll v1 Service {NSM_NAMESPACE}/{service} .status.loadBalancer"
                        f".ingress[0], up to {timeouts.load_balancer:g}s",
                        record_as=f"{service}_address_{role}",
                    )
                )
        ops.append(
            api_wait_op(
                step_phase,
                "server",
                f"vl3 endpoint and IPAM ready in {VL3_NAMESPACE}",
                lambda cluster: pods_all_ready(cluster.api, VL3_NAMESPACE, VL3_APPS),
                timeouts.rollout,
                f"LIST pods in {VL3_NAMESPACE}: all Ready, app=nse-vl3-vpp and app=vl3-ipam "
                f"among them; up to {timeouts.rollout:g}s",
            )
        )
        return ops

    def workload_ready_ops(self, ctx: RunContext, iteration: int) -> list[Op]:
        step_phase = phase(iteration, "wait_workloads_ready")
        namespace = ctx.resource_prefix
        ops: list[Op] = []
        for role, app in (("server", NGINX), ("client", FORTIO)):
            ops.append(
                api_wait_op(
                    step_phase,
                    role,
                    f"the {app} pod joined {self.settings.network_service} (NSM client sidecar "
                    f"injected and ready)",
                    lambda cluster, a=app: self._joined_state(cluster, namespace, a),
                    self.timeouts.rollout,
                    f"LIST pods app={app} in {namespace}: container {NSC_CONTAINER} present "
                    f"(the webhook acted on the annotation) and the pod Ready",
                )
            )
        for role in ROLES:
            ops.append(self._all_nsm_pods_ready_op(step_phase, role))
        return ops

    @staticmethod
    def _joined_state(cluster: KubeCluster, namespace: str, app: str) -> Readiness:
        pods = cluster.api.list("v1", "Pod", namespace=namespace, label_selector=f"app={app}")
        live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
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

    # ------------------------------------------------------------------ workloads
    def workload_profile(self, ctx: RunContext) -> WorkloadProfile:
        service = self.settings.network_service
        return WorkloadProfile(
            server_pod_annotations={
                "networkservicemesh.io": client_annotation(service, NGINX, None)
            },
            client_pod_annotations={
                "networkservicemesh.io": client_annotation(service, FORTIO, "server")
            },
            service_type="ClusterIP",
            protocol="ip",
            path=(
                f"fortio -> {INTERFACE} (kernel interface) -> client node's forwarder-vpp -> "
                f"{self.settings.inter_node_mechanism} tunnel node to node -> server node's "
                f"forwarder-vpp -> vl3 endpoint (VPP) -> nginx's {INTERFACE}; no per-request proxy"
            ),
            crosses_load_balancer=False,
            extra_sample_scopes=(
                SampleScope("client", NSM_NAMESPACE, "app=forwarder-vpp"),
                SampleScope("server", NSM_NAMESPACE, "app=forwarder-vpp"),
                SampleScope("server", VL3_NAMESPACE, "app=nse-vl3-vpp"),
            ),
        )

    def target_url(self, ctx: RunContext, clusters: Clusters) -> str:
        return f"http://{NGINX}.{self.settings.network_service}:{NGINX_PORT}/"

    def describe_target(self, ctx: RunContext) -> str:
        return f"http://{NGINX}.{self.settings.network_service}:{NGINX_PORT}/ (vl3 DNS)"

    # ------------------------------------------------------------------ records
    def warnings(self, ctx: RunContext) -> list[str]:
        found = [support_check(self.config, ctx, self.name).warning()]
        found.append(
            "NSM's data path is node to node: each node needs an ExternalIP the other "
            "cluster can reach (nsmgr-proxy maps InternalIP to ExternalIP), and "
            + (
                "WireGuard needs UDP 51820 open between the clusters' nodes"
                if self.settings.inter_node_mechanism == "wireguard"
                else "IPsec needs UDP 500 and 4500 open between the clusters' nodes"
            )
        )
        version = ctx.mesh_version or ""
        if (
            version
            and at_least(version, SPIRE_CLAIM_FROM)
            and not self.settings.spire_storage_class
        ):
            found.append(
                f"NSM {git_ref(version)}'s SPIRE server claims a 1Gi ReadWriteOnce volume "
                f"({SPIRE_CLAIM}) from the cluster's default StorageClass, checked before SPIRE "
                f"is applied"
                + (
                    ": EKS from 1.30 marks no StorageClass default and its EBS classes need "
                    "the aws-ebs-csi-driver add-on (with its IAM role), which meshbench does not "
                    "install; give the clusters one or set meshes.nsm.spire_storage_class"
                    if ctx.environment == "aws"
                    else ""
                )
            )
        return [warning for warning in found if warning]

    def run_info(self, ctx: RunContext) -> dict[str, Any]:
        mechanism = self.settings.inter_node_mechanism
        return {
            "mesh": self.name,
            "mesh_version": ctx.mesh_version,
            "version_profile": self.config.version_profile_name_for(ctx.environment),
            "kubernetes_support": support_check(self.config, ctx, self.name).record(),
            "topology": "interdomain vl3",
            "inter_node_mechanism": mechanism,
            "mechanism_setting": "NSM_MECHANISM_PRIORITY=ipsec on forwarder-vpp"
            if mechanism == "ipsec"
            else "NSM default for IP payload (WireGuard, UDP 51820)",
            "network_service": self.settings.network_service,
            "vl3_prefix": str(self.settings.vl3_prefix),
            "vl3_endpoint_cluster": "server",
            "trust_domains": {role: trust_domain(role) for role in ROLES},
            "dns_domains": {role: coredns.domain(NSM_CLUSTER[role]) for role in ROLES},
            "forwarder_resources": self.vpp_resources(),
            "vl3_endpoint_resources": self.vpp_resources(),
            "vpp_cpu_limit": self.settings.vpp_cpu_limit,
            "vpp_cpu_limit_reason": VPP_CPU_LIMIT_REASON,
            "spire_storage_class": self.settings.spire_storage_class or "the cluster's default",
            "spire_postgres_image": f"postgres:{self.settings.spire_postgres_tag}",
            "client_sidecar": f"{NSC_CONTAINER} (control only, upstream resources)",
        }


def build_installer(config: BenchmarkConfig) -> NsmInstaller:
    return NsmInstaller(config)

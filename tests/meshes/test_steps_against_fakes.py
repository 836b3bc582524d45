"""The installers' steps run against fake clusters (see conftest.py): what reaches which
cluster, what is kept out of results, and that uninstall leaves the clusters as before."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbench.backend import StepFailed
from meshbench.config import load_config
from meshbench.kube.ops import run_ops
from meshbench.meshes import coredns, inventory
from meshbench.meshes.istio import IstioInstaller
from meshbench.meshes.kuma import KumaInstaller, filter_global_objects
from meshbench.meshes.nsm import NsmInstaller

from .conftest import FakePair, config_with, config_with_mesh, context

CONFIG = load_config()
CRD = "apiextensions.k8s.io/v1"


def with_timeouts(installer, seconds: float = 2.0):
    installer.timeouts = installer.timeouts.model_copy(
        update={name: seconds for name in ("rollout", "load_balancer", "namespace_deletion")}
    )
    return installer


# The labels istioctl puts on the east-west gateway's objects (its istio-ingress chart).
EASTWEST_LABELS = {
    "app": "istio-eastwestgateway",
    "install.operator.istio.io/owning-resource": "eastwest",
    "operator.istio.io/component": "IngressGateways",
}


def simulate_istioctl_install(pair: FakePair) -> None:
    """What `istioctl install` would have created: istiod, the east-west gateway (its
    Deployment, LoadBalancer Service, ServiceAccount, Role and RoleBinding, labelled as the
    chart labels them), and a CRD."""
    for api in pair.apis.values():
        for name, labels in (
            ("istiod", {"app": "istiod"}),
            ("istio-eastwestgateway", EASTWEST_LABELS),
        ):
            api.apply(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "namespace": "istio-system", "labels": labels},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": "c", "image": "istio/x"}]},
                        },
                    },
                }
            )
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "istio-eastwestgateway",
                    "namespace": "istio-system",
                    "labels": EASTWEST_LABELS,
                },
                "spec": {"type": "LoadBalancer", "ports": [{"port": 15443}]},
            }
        )
        for api_version, kind, name in (
            ("v1", "ServiceAccount", "istio-eastwestgateway-service-account"),
            ("rbac.authorization.k8s.io/v1", "Role", "istio-eastwestgateway-sds"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding", "istio-eastwestgateway-sds"),
        ):
            api.apply(
                {
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {
                        "name": name,
                        "namespace": "istio-system",
                        "labels": EASTWEST_LABELS,
                    },
                }
            )
        api.apply(
            {
                "apiVersion": CRD,
                "kind": "CustomResourceDefinition",
                "metadata": {"name": "gateways.networking.istio.io"},
            }
        )


def test_istio_install_ready_and_uninstall_against_fake_clusters(fake_pair: FakePair, monkeypatch):
    monkeypatch.setenv("FAKE_REMOTE_CLUSTERS", "cluster1,cluster2")
    installer = with_timeouts(IstioInstaller(CONFIG))
    installer.cli_poll_interval = 0.05
    ctx = context(CONFIG, "istio")
    with fake_pair.clusters() as clusters:
        summary = run_ops(installer.install_ops(ctx, 1), clusters)
    client, server = fake_pair.apis["client"], fake_pair.apis["server"]

    # One shared root, one intermediate per cluster, only in the Secrets.
    secrets = {
        r: a.objects[("v1", "Secret", "istio-system", "cacerts")]["data"]
        for r, a in fake_pair.apis.items()
    }
    assert secrets["client"]["root-cert.pem"] == secrets["server"]["root-cert.pem"]
    assert secrets["client"]["ca-cert.pem"] != secrets["server"]["ca-cert.pem"]
    assert "PRIVATE KEY" not in json.dumps(summary) and "ca-key" not in json.dumps(summary)

    # Each remote secret holds the credentials of the cluster it is named after.
    remote_in_client = client.objects[
        ("v1", "Secret", "istio-system", "istio-remote-secret-cluster2")
    ]
    remote_in_server = server.objects[
        ("v1", "Secret", "istio-system", "istio-remote-secret-cluster1")
    ]
    assert remote_in_client["stringData"] == {"cluster2": "kubeconfig of context server-ctx"}
    assert remote_in_server["stringData"] == {"cluster1": "kubeconfig of context client-ctx"}
    assert "kubeconfig of context" not in json.dumps(summary)

    # istioctl ran against the right cluster with that cluster's IstioOperator.
    installs = [c for c in fake_pair.calls("istioctl") if c["argv"][:1] == ["install"]]
    control = {
        c["context"]: c["files"]["control-plane.yaml"]
        for c in installs
        if "control-plane.yaml" in c["files"]
    }
    assert (
        "clusterName: cluster1" in control["client-ctx"]
        and "network: network1" in control["client-ctx"]
    )
    assert (
        "clusterName: cluster2" in control["server-ctx"]
        and "network: network2" in control["server-ctx"]
    )
    assert (
        client.objects[("v1", "Namespace", None, "istio-system")]["metadata"]["labels"][
            "topology.istio.io/network"
        ]
        == "network1"
    )
    gateway = client.objects[
        ("networking.istio.io/v1alpha3", "Gateway", "istio-system", "cross-network-gateway")
    ]
    assert gateway["spec"]["servers"][0]["tls"]["mode"] == "AUTO_PASSTHROUGH"

    simulate_istioctl_install(fake_pair)
    with fake_pair.clusters() as clusters:
        ready = run_ops(installer.ready_ops(ctx, 1), clusters)
    assert ready["eastwest_address_server"] == "198.18.0.22"

    # After the workloads: the Fortio sidecar must see nginx behind the server's gateway.
    namespace = ctx.resource_prefix
    client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    client.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "fortio", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "fortio"}},
                "template": {
                    "metadata": {"labels": {"app": "fortio"}},
                    "spec": {"containers": [{"name": "fortio", "image": "fortio/fortio"}]},
                },
            },
        }
    )
    client.get("apps/v1", "Deployment", "fortio", namespace)  # the fake makes its pod
    monkeypatch.setenv("FAKE_ENDPOINT", "10.0.9.9:80")  # raw pod IP: not good enough
    installer.timeouts = installer.timeouts.model_copy(update={"rollout": 0.3})
    with fake_pair.clusters() as clusters, pytest.raises(StepFailed, match="network label"):
        run_ops(installer.workload_ready_ops(ctx, 1), clusters)
    monkeypatch.setenv("FAKE_ENDPOINT", "198.18.0.22:15443")
    with fake_pair.clusters() as clusters:
        seen = run_ops(installer.workload_ready_ops(ctx, 1), clusters)
    assert seen["client_proxy_endpoints"] == ["198.18.0.22:15443"]
    query = [c for c in fake_pair.calls("istioctl") if c["argv"][:1] == ["proxy-config"]][-1]
    assert query["context"] == "client-ctx"
    assert query["argv"][2].startswith("fortio-") and query["argv"][2].endswith(f".{namespace}")
    assert f"outbound|80||nginx.{namespace}.svc.cluster.local" in query["argv"]
    installer.timeouts = installer.timeouts.model_copy(update={"rollout": 2.0})

    # A retried install keeps the CA istiod may already have loaded.
    with fake_pair.clusters() as clusters:
        again = run_ops(
            [op for op in installer.install_ops(ctx, 1) if "plug-in CA" in op.step.description],
            clusters,
        )
    assert again["plugin_ca"] == "kept the CA an earlier try made"
    assert client.objects[("v1", "Secret", "istio-system", "cacerts")]["data"] == secrets["client"]

    # The backend deletes the workload namespace before the mesh's uninstall.
    client.delete("v1", "Namespace", namespace)
    # istioctl uninstall --purge would remove the CRD; the fake CLI does not, so do it here.
    for api in fake_pair.apis.values():
        api.delete(CRD, "CustomResourceDefinition", "gateways.networking.istio.io")
    with fake_pair.clusters() as clusters:
        done = run_ops(installer.uninstall_ops(ctx, 1), clusters)
    assert done["inventory_client_before-iteration-01"] == "as before"
    assert done["inventory_server_before-iteration-01"] == "as before"
    for api in fake_pair.apis.values():
        assert not [k for k in api.objects if k[2] == "istio-system" or k[3] == "istio-system"]
    purges = [
        c["context"]
        for c in fake_pair.calls("istioctl")
        if c["argv"] == ["uninstall", "-y", "--purge"]
    ]
    assert sorted(purges) == ["client-ctx", "server-ctx"]


def test_uninstall_fails_naming_what_was_left_behind(fake_pair: FakePair):
    ctx = context(CONFIG, "istio")
    key = "before-iteration-01"
    with fake_pair.clusters() as clusters:
        run_ops([inventory.record_op("t", "server", ctx, key, "x")], clusters)
    server = fake_pair.apis["server"]
    server.apply(
        {
            "apiVersion": CRD,
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "gateways.networking.istio.io"},
        }
    )
    server.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "istio-sidecar-injector"},
        }
    )
    with fake_pair.clusters() as clusters, pytest.raises(StepFailed) as info:
        run_ops([inventory.verify_op("t", "server", ctx, key, "x", 0.3)], clusters)
    message = str(info.value)
    assert "left behind crds: gateways.networking.istio.io" in message
    assert "left behind mutating_webhooks: istio-sidecar-injector" in message


def test_a_retried_install_compares_with_the_state_before_its_first_try(fake_pair: FakePair):
    ctx = context(CONFIG, "istio")
    with fake_pair.clusters() as clusters:
        run_ops([inventory.record_op("t", "client", ctx, "k", "x")], clusters)
        fake_pair.apis["client"].apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
        )
        run_ops([inventory.record_op("t", "client", ctx, "k", "x")], clusters)
        stored = inventory.stored_snapshot(clusters["client"], ctx, "k")
    assert "istio-system" not in stored["namespaces"]


EKS_COREFILE = (
    ".:53 {\n    errors\n    health\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
    "      pods insecure\n      fallthrough in-addr.arpa ip6.arpa\n    }\n"
    "    forward . /etc/resolv.conf\n    cache 30\n    loop\n    reload\n}\n"
)


def seed_dns(pair: FakePair) -> None:
    for api in pair.apis.values():
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "coredns", "namespace": "kube-system"},
                "data": {"Corefile": EKS_COREFILE},
            }
        )
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system"},
                "spec": {"selector": {"k8s-app": "kube-dns"}, "ports": [{"port": 53}]},
            }
        )


def test_nsm_interdomain_dns_is_set_up_and_the_original_corefile_restored(fake_pair: FakePair):
    seed_dns(fake_pair)
    installer = with_timeouts(NsmInstaller(CONFIG))
    ctx = context(CONFIG, "nsm")
    components = {c.name: c for c in installer.pair_components(ctx)}
    dns = components["interdomain DNS"]
    with fake_pair.clusters() as clusters:
        run_ops(dns.install, clusters)
        # A retried prepare_pair changes nothing and keeps the first original.
        run_ops(dns.install, clusters)
    client, server = fake_pair.apis["client"], fake_pair.apis["server"]
    corefile = client.objects[("v1", "ConfigMap", "kube-system", "coredns")]["data"]["Corefile"]
    assert "k8s_external my.cluster2" in corefile
    # The client forwards the server's zone to the server's exposed kube-dns.
    assert "my.cluster1:53 {" in corefile and "forward . 198.18.0.22:53 {" in corefile
    assert (
        "forward . 198.18.0.11:53 {"
        in server.objects[("v1", "ConfigMap", "kube-system", "coredns")]["data"]["Corefile"]
    )
    exposed = client.objects[("v1", "Service", "kube-system", "exposed-kube-dns")]
    assert exposed["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert exposed["spec"]["ports"] == [
        {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"}
    ]
    saved = installer.saved_corefile_name(ctx)
    assert (
        client.objects[("v1", "ConfigMap", "kube-system", saved)]["data"]["Corefile"]
        == EKS_COREFILE
    )

    with fake_pair.clusters() as clusters:
        run_ops(dns.uninstall, clusters)
    for api in fake_pair.apis.values():
        assert (
            api.objects[("v1", "ConfigMap", "kube-system", "coredns")]["data"]["Corefile"]
            == EKS_COREFILE
        )
        assert ("v1", "ConfigMap", "kube-system", saved) not in api.objects
        assert ("v1", "Service", "kube-system", "exposed-kube-dns") not in api.objects


def test_a_changed_corefile_without_its_original_is_refused(fake_pair: FakePair):
    seed_dns(fake_pair)
    changed = coredns.interdomain_corefile(EKS_COREFILE, "cluster1", "cluster2", "203.0.113.1")
    fake_pair.apis["server"].apply(coredns.coredns_config_map(changed))
    installer = with_timeouts(NsmInstaller(CONFIG))
    ctx = context(CONFIG, "nsm")
    dns = next(c for c in installer.pair_components(ctx) if c.name == "interdomain DNS")
    restore = [
        op
        for op in dns.uninstall
        if "restore the original" in op.step.description and op.step.cluster == "server"
    ]
    with (
        fake_pair.clusters() as clusters,
        pytest.raises(StepFailed, match="restore the Corefile by hand"),
    ):
        run_ops(restore, clusters)


GLOBAL_RENDERING = """
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: kuma-control-plane, namespace: kuma-global}
---
apiVersion: v1
kind: Service
metadata: {name: kuma-global-zone-sync, namespace: kuma-global}
spec:
  type: LoadBalancer
  ports: [{port: 5685, name: global-zone-sync, appProtocol: grpc}]
  selector: {app: kuma-control-plane}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: kuma-control-plane, namespace: kuma-global}
spec:
  replicas: 1
  selector: {matchLabels: {app: kuma-control-plane}}
  template:
    metadata: {labels: {app: kuma-control-plane}}
    spec:
      initContainers:
        - {name: migration, image: kumahq/kuma-cp:2.4.3, args: [migrate, up]}
      containers:
        - {name: control-plane, image: kumahq/kuma-cp:2.4.3}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: kuma-pre-delete-job
  annotations: {"helm.sh/hook": pre-delete}
"""


def test_the_global_rendering_drops_migration_and_hooks_and_refuses_cluster_objects():
    import yaml

    objects = filter_global_objects(
        list(yaml.safe_load_all(GLOBAL_RENDERING)), "kuma-global", "memory"
    )
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Service", "Deployment"]
    pod = objects[2]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    kept = filter_global_objects(
        list(yaml.safe_load_all(GLOBAL_RENDERING)), "kuma-global", "postgres"
    )
    assert kept[2]["spec"]["template"]["spec"]["initContainers"][0]["name"] == "migration"
    with pytest.raises(StepFailed, match="cluster-scoped ClusterRole"):
        filter_global_objects(
            [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": "kuma"},
                }
            ],
            "kuma-global",
            "memory",
        )


class FakeKumaGlobal(http.server.ThreadingHTTPServer):
    """The global control plane's API: zones come Online after a few reads; PUTs kept."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _KumaHandler)
        self.reads = 0
        self.puts: list[tuple[str, dict]] = []
        self.deletes: list[str] = []


class _KumaHandler(http.server.BaseHTTPRequestHandler):
    server: FakeKumaGlobal

    def log_message(self, *args) -> None:
        pass

    def _reply(self, body: object, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/zones+insights":
            self.server.reads += 1
            online = self.server.reads >= 3
            subscription = {"connectTime": "2026-11-26T08:00:00Z"} if online else {}
            self._reply(
                {
                    "items": [
                        {
                            "name": z,
                            "zone": {"enabled": True},
                            "zoneInsight": {"subscriptions": [subscription]},
                        }
                        for z in ("zone1", "zone2")
                    ]
                }
            )
        else:
            self._reply({"message": "not found"}, 404)

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.puts.append((self.path, json.loads(self.rfile.read(length))))
        self._reply({})

    def do_DELETE(self) -> None:
        self.server.deletes.append(self.path)
        self._reply({})


@pytest.fixture
def kuma_global(monkeypatch) -> Iterator[FakeKumaGlobal]:
    server = FakeKumaGlobal()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MESHBENCH_FAKE_FORWARD_TO", f"127.0.0.1:{server.server_address[1]}")
    yield server
    server.shutdown()
    server.server_close()


def test_kuma_global_is_applied_and_configured_and_zones_waited_for(
    fake_pair: FakePair, kuma_global: FakeKumaGlobal, tmp_path: Path, monkeypatch
):
    rendering = tmp_path / "global.yaml"
    rendering.write_text(GLOBAL_RENDERING)
    monkeypatch.setenv("FAKE_HELM_TEMPLATE", str(rendering))
    installer = with_timeouts(KumaInstaller(CONFIG), 5.0)
    installer.api_poll_interval = 0.05
    ctx = context(CONFIG, "kuma")
    components = {c.name: c for c in installer.components(ctx, 1)}
    with fake_pair.clusters() as clusters:
        summary = run_ops(
            components["global control plane"].install + components["mesh"].install, clusters
        )
    server = fake_pair.apis["server"]
    deployment = server.objects[("apps/v1", "Deployment", "kuma-global", "kuma-control-plane")]
    assert "initContainers" not in deployment["spec"]["template"]["spec"]
    assert summary["kuma_global_kds_address"] == "198.18.0.22"
    helm = fake_pair.calls("helm")[0]
    assert helm["context"] == "server-ctx" and helm["argv"][:3] == ["template", "kuma", "kuma"]
    assert "KUMA_STORE_TYPE: memory" in helm["files"]["global-values.yaml"]
    assert kuma_global.puts == [
        (
            "/meshes/default",
            {
                "type": "Mesh",
                "name": "default",
                "mtls": {
                    "enabledBackend": "ca-1",
                    "backends": [
                        {
                            "name": "ca-1",
                            "type": "builtin",
                            "dpCert": {"rotation": {"expiration": "1d"}},
                            "conf": {"caCert": {"RSAbits": 2048, "expiration": "10y"}},
                        }
                    ],
                },
            },
        )
    ]

    zones_op = next(
        op for op in installer.ready_ops(ctx, 1) if "Online in the global" in op.step.description
    )
    with fake_pair.clusters() as clusters:
        online = run_ops([zones_op], clusters)
    assert online["kuma_zones_online"] == ["zone1", "zone2"] and kuma_global.reads >= 3

    with fake_pair.clusters() as clusters:
        run_ops(
            components["mesh"].uninstall + components["global control plane"].uninstall, clusters
        )
    assert kuma_global.puts[-1] == ("/meshes/default", {"type": "Mesh", "name": "default"})
    assert not [k for k in server.objects if k[2] == "kuma-global" or k[3] == "kuma-global"]


def test_kuma_zone_install_points_at_the_globals_kds_address(fake_pair: FakePair):
    installer = with_timeouts(KumaInstaller(CONFIG))
    ctx = context(CONFIG, "kuma")
    fake_pair.apis["server"].apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kuma-global"}}
    )
    fake_pair.apis["server"].apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kuma-global-zone-sync", "namespace": "kuma-global"},
            "spec": {"type": "LoadBalancer"},
        }
    )
    fake_pair.apis["server"].get("v1", "Service", "kuma-global-zone-sync", "kuma-global")
    zones = next(c for c in installer.components(ctx, 1) if c.name == "zone control planes")
    with fake_pair.clusters() as clusters:
        run_ops(zones.install, clusters)
    calls = {c["context"]: c["argv"] for c in fake_pair.calls("helm")}
    for context_name, zone in (("client-ctx", "zone1"), ("server-ctx", "zone2")):
        argv = calls[context_name]
        assert argv[:2] == ["upgrade", "--install"]
        assert f"controlPlane.zone={zone}" in argv
        assert "controlPlane.kdsGlobalAddress=grpcs://198.18.0.22:5685" in argv
        assert "controlPlane.envVars.KUMA_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_CPU=1" in argv
    assert (
        fake_pair.apis["client"].objects[("v1", "Namespace", None, "kuma-system")]["metadata"][
            "labels"
        ]["kuma.io/sidecar-injection"]
        == "disabled"
    )


def test_a_failing_teardown_step_does_not_stop_the_others(fake_pair: FakePair, monkeypatch):
    installer = with_timeouts(IstioInstaller(CONFIG))
    ctx = context(CONFIG, "istio")
    with fake_pair.clusters() as clusters:
        run_ops(installer.install_ops(ctx, 1), clusters)
    monkeypatch.setenv("FAKE_CLI_EXIT", "1")  # every istioctl call fails from now on
    with fake_pair.clusters() as clusters, pytest.raises(StepFailed) as info:
        run_ops(installer.uninstall_ops(ctx, 1), clusters)
    message = str(info.value)
    assert message.startswith("teardown: fail if any step above failed")
    # istioctl uninstall --purge in both clusters (the east-west gateway is removed through
    # the API, not by istioctl)
    assert "2 teardown step(s) failed" in message
    assert "control plane: istioctl uninstall --purge" in message
    # The steps after the failed ones still ran: istio-system is gone in both clusters.
    for api in fake_pair.apis.values():
        assert ("v1", "Namespace", None, "istio-system") not in api.objects


# ------------------------------------------------- defects a real cluster would show


def test_istio_east_west_teardown_leaves_nothing_of_the_gateway_at_that_step(fake_pair: FakePair):
    """istioctl 1.19's `uninstall -f eastwest.yaml` deletes only Pilot's manifest, which that
    IstioOperator disables: the gateway must be gone after its own teardown step."""
    installer = with_timeouts(IstioInstaller(CONFIG))
    ctx = context(CONFIG, "istio")
    with fake_pair.clusters() as clusters:
        run_ops(installer.install_ops(ctx, 1), clusters)
    simulate_istioctl_install(fake_pair)
    eastwest = [
        op
        for op in installer.uninstall_ops(ctx, 1)
        if op.step.description.startswith("east-west gateway:")
    ]
    with fake_pair.clusters() as clusters:
        done = run_ops(eastwest, clusters)
    for role, api in fake_pair.apis.items():
        left = [
            key
            for key, obj in api.objects.items()
            # (the gateway's pod goes with its Deployment on a real cluster; the fake has no
            # garbage collector)
            if key[2] == "istio-system"
            and key[1] != "Pod"
            and (obj["metadata"].get("labels") or {}).get("operator.istio.io/component")
            == "IngressGateways"
        ]
        assert left == [], role
        assert done[f"eastwest_left_{role}"] == "none left"
        # The control plane is not the east-west step's to remove.
        assert ("apps/v1", "Deployment", "istio-system", "istiod") in api.objects
    assert sorted(done["eastwest_deleted_client"]) == [
        "Deployment/istio-eastwestgateway",
        "Role/istio-eastwestgateway-sds",
        "RoleBinding/istio-eastwestgateway-sds",
        "Service/istio-eastwestgateway",
        "ServiceAccount/istio-eastwestgateway-service-account",
    ]


def test_istio_refuses_a_remote_secret_for_an_in_cluster_connection(fake_pair: FakePair):
    from meshbench.kube.access import KubeconfigAccess
    from meshbench.kube.cluster import Clusters

    from .conftest import kubeconfig

    class InClusterAccess(KubeconfigAccess):
        def describe(self):
            return {**super().describe(), "kubeconfig_source": "in_cluster"}

    def clusters_with_server_in_cluster() -> Clusters:
        accesses = {
            "client": KubeconfigAccess("client", kubeconfig("client-ctx"), "test"),
            "server": InClusterAccess("server", kubeconfig("server-ctx"), "test"),
        }
        return Clusters(
            accesses,
            fake_pair.runner,
            lambda access, path: fake_pair.apis[access.role],
            poll_interval=0.01,
        )

    for api in fake_pair.apis.values():
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})

    def remote_secret_ops(installer: IstioInstaller, ctx):
        return [
            op
            for op in installer.install_ops(ctx, 1)
            if op.step.description.startswith("remote secrets:")
        ]

    installer = with_timeouts(IstioInstaller(CONFIG))
    ctx = context(CONFIG, "istio")
    with (
        clusters_with_server_in_cluster() as clusters,
        pytest.raises(StepFailed, match=r"in_cluster.*meshes\.istio\.remote_api_servers\.server"),
    ):
        run_ops(remote_secret_ops(installer, ctx), clusters)
    assert not [c for c in fake_pair.calls("istioctl") if c["context"] == "server-ctx"]

    # With the server's API address as the client cluster reaches it, the secret is made.
    configured = config_with_mesh("istio", remote_api_servers={"server": "https://203.0.113.5"})
    installer = with_timeouts(IstioInstaller(configured))
    with clusters_with_server_in_cluster() as clusters:
        run_ops(remote_secret_ops(installer, context(configured, "istio")), clusters)
    (call,) = [c for c in fake_pair.calls("istioctl") if c["context"] == "server-ctx"]
    assert "--server=https://203.0.113.5" in call["argv"]


def nsm_current():
    """NSM 1.18.0 (the current profile), whose SPIRE claims a volume."""
    config = config_with(version_profile="current", kubernetes_version="1.32")
    installer = with_timeouts(NsmInstaller(config))
    installer.dns_interval = 0.01
    return installer, context(config, "nsm")


def storage_class(name: str, default: bool) -> dict:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": "ebs.csi.aws.com",
    }


def test_nsm_spire_is_not_applied_where_its_claim_has_no_storage(
    fake_pair: FakePair, tmp_path: Path, monkeypatch
):
    log = tmp_path / "kubectl.jsonl"
    monkeypatch.setenv("MESHBENCH_FAKE_KUBECTL_LOG", str(log))
    installer, ctx = nsm_current()
    spire = next(c for c in installer.pair_components(ctx) if c.name == "SPIRE")
    server_ops = [op for op in spire.install if op.step.cluster == "server"]
    # EKS from 1.30: gp2 exists but is not the default.
    fake_pair.apis["server"].apply(storage_class("gp2", default=False))
    with (
        fake_pair.clusters() as clusters,
        pytest.raises(StepFailed, match=r"no default StorageClass.*spire-data.*gp2"),
    ):
        run_ops(server_ops, clusters)
    assert not log.exists()  # kubectl apply -k of SPIRE never ran

    fake_pair.apis["server"].apply(storage_class("gp3", default=True))
    storage = [
        op for op in server_ops if "storage for the spire-server claim" in op.step.description
    ]
    with fake_pair.clusters() as clusters:
        found = run_ops(storage, clusters)
    assert found["spire_storage_class_server"] == "gp3 (default)"


def test_nsm_a_configured_spire_storage_class_must_exist(fake_pair: FakePair):
    config = config_with_mesh(
        "nsm",
        existing={"version_profile": "current", "kubernetes_version": "1.32"},
        spire_storage_class="fast-ssd",
    )
    installer = with_timeouts(NsmInstaller(config))
    ctx = context(config, "nsm")
    assert ctx.mesh_version == "1.18.0"
    storage = [
        op
        for op in next(c for c in installer.pair_components(ctx) if c.name == "SPIRE").install
        if "storage for the spire-server claim" in op.step.description
    ]
    fake_pair.apis["client"].apply(storage_class("gp3", default=True))
    with (
        fake_pair.clusters() as clusters,
        pytest.raises(StepFailed, match=r"no StorageClass 'fast-ssd'.*StorageClasses there: gp3"),
    ):
        run_ops(storage, clusters)


def test_nsm_waits_for_a_fresh_load_balancer_hostname_to_resolve(fake_pair: FakePair, monkeypatch):
    """A new ELB has a hostname before it resolves; CoreDNS needs its address."""
    import socket

    from meshbench.meshes.nsm import dns as nsm_dns

    seed_dns(fake_pair)
    for role, api in fake_pair.apis.items():
        api.lb_address, api.lb_hostname = None, f"{role}-dns.elb.example"
    answers = {"client-dns.elb.example": "203.0.113.11", "server-dns.elb.example": "203.0.113.22"}
    tries: dict[str, int] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        tries[host] = tries.get(host, 0) + 1
        if tries[host] <= 2:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(nsm_dns.socket, "getaddrinfo", getaddrinfo)
    installer = with_timeouts(NsmInstaller(CONFIG))
    installer.dns_interval = 0.01
    ctx = context(CONFIG, "nsm")
    dns = next(c for c in installer.pair_components(ctx) if c.name == "interdomain DNS")
    with fake_pair.clusters() as clusters:
        run_ops(dns.install, clusters)
    client = fake_pair.apis["client"].objects[("v1", "ConfigMap", "kube-system", "coredns")]
    assert "forward . 203.0.113.22:53 {" in client["data"]["Corefile"]
    assert tries == {"server-dns.elb.example": 3, "client-dns.elb.example": 3}


def set_up_interdomain_dns(pair: FakePair):
    """prepare_pair's interdomain DNS steps, run against the fake pair."""
    seed_dns(pair)
    installer = with_timeouts(NsmInstaller(CONFIG))
    ctx = context(CONFIG, "nsm")
    dns = next(c for c in installer.pair_components(ctx) if c.name == "interdomain DNS")
    with pair.clusters() as clusters:
        run_ops(dns.install, clusters)
    return installer, ctx, dns


def test_nsm_probes_the_edited_corefile_from_a_pod_until_it_answers(
    fake_pair: FakePair, tmp_path: Path, monkeypatch
):
    log = tmp_path / "kubectl.jsonl"
    monkeypatch.setenv("MESHBENCH_FAKE_KUBECTL_LOG", str(log))
    installer, _ctx, dns = set_up_interdomain_dns(fake_pair)
    runs = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    probes = [argv for argv in runs if argv[:1] == ["run"]]
    assert len(probes) == 2
    scripts = sorted(argv[-1] for argv in probes)
    assert "getent hosts exposed-kube-dns.kube-system.my.cluster1" in scripts[0]
    assert "getent hosts exposed-kube-dns.kube-system.my.cluster2" in scripts[1]
    for argv in probes:
        assert {"--rm", "--restart=Never", "--image=nginx:1.23.3"} <= set(argv)
        # Bounded: the probe timeout in tries of the interval.
        assert f"seq {int(installer.timeouts.probe // installer.dns_interval)}" in argv[-1]
    # The probes come after both Corefiles were edited.
    edits = [
        i for i, op in enumerate(dns.install) if "keep the original Corefile" in op.step.description
    ]
    probe_ops = [
        i for i, op in enumerate(dns.install) if "probed from a pod" in op.step.description
    ]
    assert max(edits) < min(probe_ops)

    monkeypatch.setenv("MESHBENCH_FAKE_KUBECTL_FAIL_VERB", "run")
    with fake_pair.clusters() as clusters, pytest.raises(StepFailed, match="dns-probe"):
        run_ops([dns.install[probe_ops[0]]], clusters)


def test_nsm_repins_a_moved_dns_address_before_an_iteration(fake_pair: FakePair, monkeypatch):
    installer, ctx, _dns = set_up_interdomain_dns(fake_pair)
    preflight = next(c for c in installer.components(ctx, 1) if c.name == "preflight")
    with fake_pair.clusters() as clusters:
        unchanged = run_ops(preflight.install, clusters)
    assert unchanged["coredns_pinned_client"] == "my.cluster1 -> 198.18.0.22 (unchanged)"

    fake_pair.apis["server"].lb_address = "198.18.0.99"  # the server's DNS load balancer moved
    with fake_pair.clusters() as clusters:
        moved = run_ops(preflight.install, clusters)
    assert moved["coredns_pinned_client"] == "my.cluster1 moved 198.18.0.22 -> 198.18.0.99"
    assert moved["coredns_pinned_server"] == "my.cluster2 -> 198.18.0.11 (unchanged)"
    corefile = fake_pair.apis["client"].objects[("v1", "ConfigMap", "kube-system", "coredns")]
    text = corefile["data"]["Corefile"]
    assert "forward . 198.18.0.99:53 {" in text and "198.18.0.22" not in text
    assert text.count(coredns.MARKER) == 2  # re-edited from the kept original, not stacked

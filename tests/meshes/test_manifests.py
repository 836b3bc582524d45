"""Every manifest the mesh installers generate, checked offline.

Built-in kinds validate strictly with kubernetes-validate for each Kubernetes version the
configuration names (and 1.34, the EKS version of the aws environment). Kustomize patches
are partial objects: they are completed with the fields upstream's manifests carry and
then validated, so a misspelt field in a patch fails too. Mesh custom resources have no
bundled schema; they are checked against the field names their documentation publishes
(mesh-recipes.md sections 1.4-1.6, 2.5, 3.4-3.7; Kuma's MeshTrafficPermission from the
kuma.io policy docs and UPGRADE.md 2.6).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes_validate import SchemaNotFoundError, ValidationError, validate

from meshbench.backend import StepFailed
from meshbench.config import ENVIRONMENT_NAMES, load_config
from meshbench.kube.load_balancers import NO_POLICY
from meshbench.meshes import coredns, inventory
from meshbench.meshes.istio import IstioInstaller
from meshbench.meshes.kuma import KumaInstaller, allow_all_permission, mesh_resource
from meshbench.meshes.nsm import NsmInstaller
from meshbench.meshes.pki import cacerts_secret, issue_chains

from .conftest import MESHES, config_with, context, documents, plan_of

CONFIG = load_config()
CHAINS = issue_chains({"client": "cluster1", "server": "cluster2"})
BUILT_IN = {"Namespace", "Secret", "Service", "ConfigMap", "Deployment", "DaemonSet"}


def versions() -> list[str]:
    found = {"1.34"}
    for name in ENVIRONMENT_NAMES:
        version = CONFIG.environment(name).kubernetes_version
        if version:
            found.add(".".join(version.lstrip("v").split(".")[:2]))
    return sorted(found)


PROFILES = ("study-2023", "current")


@functools.cache
def profile_config(profile: str) -> Any:
    return config_with(version_profile=profile, kubernetes_version="1.34")


def configs() -> Iterator[tuple[str, Any]]:
    for profile in PROFILES:
        yield profile, profile_config(profile)


def complete_patch(patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch of a Deployment/DaemonSet made whole enough to validate:
    the selector, labels and images that upstream's manifests carry."""
    full = copy.deepcopy(patch)
    name = full["metadata"]["name"]
    full["metadata"].setdefault("namespace", "nsm-system")
    spec = full.setdefault("spec", {})
    spec.setdefault("selector", {"matchLabels": {"app": name}})
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("labels", {"app": name})
    pod = template.setdefault("spec", {})
    containers = pod.setdefault("containers", [{"name": name}])
    for container in containers:
        container.setdefault("image", f"ghcr.io/networkservicemesh/{name}:v0")
    return full


@functools.cache
def generated_for(mesh: str, profile: str) -> tuple[dict[str, Any], ...]:
    return tuple(generated(mesh, profile_config(profile)))


def generated(mesh: str, config: Any) -> list[dict[str, Any]]:
    """Every object a mesh's plan shows or its steps build at run time."""
    ctx = context(config, mesh)
    objects: list[dict[str, Any]] = []
    plan = plan_of(mesh, config)
    for step in plan.steps:
        if step.kind == "manifest":
            objects += documents(step.detail)
    objects.append(inventory._config_map(ctx, {"before-iteration-01": "{}"}))
    if mesh == "istio":
        installer = IstioInstaller(config)
        objects.append(cacerts_secret(CHAINS["client"], {"app": "x"}))
        for role in ("client", "server"):
            objects += [installer.system_namespace(ctx, role)]
    if mesh == "kuma":
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "kuma-global-postgres", "namespace": "kuma-global"},
                "type": "Opaque",
                "stringData": {
                    "host": "db",
                    "port": "5432",
                    "user": "u",
                    "password": "p",
                    "db": "k",
                },
            }
        )
    if mesh == "nsm":
        installer = NsmInstaller(config)
        version = ctx.mesh_version or ""
        objects.append(installer.exposed_dns_service(ctx, "client", {"k8s-app": "kube-dns"}))
        objects.append(coredns.coredns_config_map(".:53 {\n    errors\n}\n"))
        objects.append(installer._saved_corefile(ctx, ".:53 {\n    errors\n}\n"))
        for files in (
            installer.nsm_kustomization(ctx, "client", version),
            installer.vl3_kustomization(ctx, version),
        ):
            for item in files:
                for document in documents(item.text):
                    if document.get("kind") in ("Deployment", "DaemonSet"):
                        document = complete_patch(document)
                    objects.append(document)
    return objects


@pytest.mark.parametrize("version", versions())
@pytest.mark.parametrize("mesh", MESHES)
def test_built_in_kinds_validate_strictly(mesh: str, version: str):
    kinds: set[str] = set()
    for profile in PROFILES:
        for manifest in generated_for(mesh, profile):
            if manifest.get("kind") not in BUILT_IN or "apiVersion" not in manifest:
                continue
            try:
                validate(manifest, version, strict=True)
            except SchemaNotFoundError:  # pragma: no cover - built-in kinds have schemas
                raise AssertionError(f"no schema for built-in {manifest['kind']}") from None
            kinds.add(manifest["kind"])
    expected = {
        "istio": {"Namespace", "Secret", "ConfigMap", "Deployment", "Service"},
        "kuma": {"Namespace", "Secret", "ConfigMap", "Deployment", "Service"},
        "nsm": {"Namespace", "Service", "ConfigMap", "Deployment", "DaemonSet"},
    }[mesh]
    assert expected <= kinds


def test_the_patch_completion_still_catches_a_misspelt_field():
    installer = NsmInstaller(CONFIG)
    ctx = context(CONFIG, "nsm")
    forwarder = next(
        documents(f.text)[0]
        for f in installer.nsm_kustomization(ctx, "client", "1.11.1")
        if f.name.endswith("patch-forwarder.yaml")
    )
    broken = complete_patch(forwarder)
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(ValidationError, match="resource"):
        validate(broken, "1.28", strict=True)


# ---------------------------------------------------------------- custom resources


def keys(mapping: dict[str, Any]) -> set[str]:
    return set(mapping)


ISTIO_OPERATOR_SPEC = {"profile", "components", "values"}
ISTIO_GLOBAL_VALUES = {"meshID", "multiCluster", "network"}
INGRESS_GATEWAY = {"name", "label", "enabled", "k8s"}
GATEWAY_K8S = {"env", "resources", "service"}
SERVICE_PORT = {"name", "port", "targetPort"}
GATEWAY_SPEC = {"selector", "servers"}
GATEWAY_SERVER = {"port", "tls", "hosts"}
GATEWAY_PORT = {"number", "name", "protocol"}


@pytest.mark.parametrize("profile", PROFILES)
def test_istio_operators_use_the_documented_fields(profile: str):
    config = dict(configs())[profile]
    installer = IstioInstaller(config)
    for role, cluster, network in (
        ("client", "cluster1", "network1"),
        ("server", "cluster2", "network2"),
    ):
        control = installer.control_plane_operator(role, NO_POLICY)
        assert control["apiVersion"] == "install.istio.io/v1alpha1"
        assert control["kind"] == "IstioOperator"
        assert keys(control["spec"]) <= ISTIO_OPERATOR_SPEC
        values = control["spec"]["values"]["global"]
        assert keys(values) == ISTIO_GLOBAL_VALUES
        assert values == {
            "meshID": "mesh1",
            "multiCluster": {"clusterName": cluster},
            "network": network,
        }

        eastwest = installer.eastwest_operator(role, NO_POLICY)
        assert eastwest["spec"]["profile"] == "empty"
        assert keys(eastwest["spec"]) <= ISTIO_OPERATOR_SPEC
        (gateway,) = eastwest["spec"]["components"]["ingressGateways"]
        assert keys(gateway) == INGRESS_GATEWAY
        assert gateway["name"] == "istio-eastwestgateway"
        assert gateway["label"] == {
            "istio": "eastwestgateway",
            "app": "istio-eastwestgateway",
            "topology.istio.io/network": network,
        }
        assert keys(gateway["k8s"]) <= GATEWAY_K8S
        assert gateway["k8s"]["env"] == [
            {"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": network}
        ]
        ports = gateway["k8s"]["service"]["ports"]
        assert all(keys(port) == SERVICE_PORT for port in ports)
        assert {(p["name"], p["port"]) for p in ports} == {
            ("status-port", 15021),
            ("tls", 15443),
            ("tls-istiod", 15012),
            ("tls-webhook", 15017),
        }
        assert eastwest["spec"]["values"] == {
            "gateways": {"istio-ingressgateway": {"injectionTemplate": "gateway"}},
            "global": {"network": network},
        }


@pytest.mark.parametrize(
    ("profile", "api_version"),
    [("study-2023", "networking.istio.io/v1alpha3"), ("current", "networking.istio.io/v1")],
)
def test_istio_cross_network_gateway_uses_the_documented_fields(profile: str, api_version: str):
    config = dict(configs())[profile]
    gateway = IstioInstaller(config).cross_network_gateway(context(config, "istio"))
    assert gateway["apiVersion"] == api_version and gateway["kind"] == "Gateway"
    assert gateway["metadata"]["name"] == "cross-network-gateway"
    assert gateway["metadata"]["namespace"] == "istio-system"
    assert keys(gateway["spec"]) == GATEWAY_SPEC
    assert gateway["spec"]["selector"] == {"istio": "eastwestgateway"}
    (server,) = gateway["spec"]["servers"]
    assert keys(server) == GATEWAY_SERVER and keys(server["port"]) == GATEWAY_PORT
    assert server["port"] == {"number": 15443, "name": "tls", "protocol": "TLS"}
    assert server["tls"] == {"mode": "AUTO_PASSTHROUGH"}
    assert server["hosts"] == ["*.local"]


def test_kuma_mesh_and_permission_use_the_documented_fields():
    mesh = mesh_resource(mtls=True)
    assert keys(mesh) == {"type", "name", "mtls"} and mesh["type"] == "Mesh"
    assert mesh["name"] == "default"
    assert keys(mesh["mtls"]) == {"enabledBackend", "backends"}
    (backend,) = mesh["mtls"]["backends"]
    assert keys(backend) == {"name", "type", "dpCert", "conf"}
    assert backend["type"] == "builtin" and backend["name"] == mesh["mtls"]["enabledBackend"]
    assert keys(backend["dpCert"]) == {"rotation"} and keys(backend["dpCert"]["rotation"]) == {
        "expiration"
    }
    assert keys(backend["conf"]) == {"caCert"} and keys(backend["conf"]["caCert"]) == {
        "RSAbits",
        "expiration",
    }
    assert keys(mesh_resource(mtls=False)) == {"type", "name"}

    permission = allow_all_permission()
    assert keys(permission) == {"type", "name", "mesh", "spec"}
    assert permission["type"] == "MeshTrafficPermission" and permission["mesh"] == "default"
    assert keys(permission["spec"]) == {"targetRef", "from"}
    assert permission["spec"]["targetRef"] == {"kind": "Mesh"}
    (rule,) = permission["spec"]["from"]
    assert keys(rule) == {"targetRef", "default"} and rule["default"] == {"action": "Allow"}


def test_kuma_helm_values_are_fields_of_the_kuma_chart():
    # Keys of kumahq/kuma deployments/charts/kuma/values.yaml at 2.4.3 and v2.14.3.
    control_plane = {"mode", "environment", "envVars", "secrets", "zone", "kdsGlobalAddress"}
    installer = KumaInstaller(CONFIG)
    assert keys(installer.global_values()) == {"controlPlane"}
    assert keys(installer.global_values()["controlPlane"]) <= control_plane
    args = installer.zone_install_args("2.4.3", "client", "198.51.100.7")
    settings = [args[i + 1] for i, a in enumerate(args) if a in ("--set", "--set-string")]
    roots = {s.split("=", 1)[0] for s in settings}
    allowed = re.compile(
        r"^(controlPlane\.(mode|zone|kdsGlobalAddress|tls\.kdsZoneClient\.skipVerify|"
        r"envVars\.KUMA_INJECTOR_SIDECAR_CONTAINER_RESOURCES_(REQUESTS|LIMITS)_(CPU|MEMORY))|"
        r"ingress\.(enabled|resources\.(requests|limits)\.(cpu|memory)))$"
    )
    assert all(allowed.match(root) for root in roots), roots
    assert "controlPlane.kdsGlobalAddress=grpcs://198.51.100.7:5685" in settings


def test_nsm_network_service_and_spiffe_ids_use_the_documented_fields():
    for _, config in configs():
        installer = NsmInstaller(config)
        ctx = context(config, "nsm")
        service = installer.network_service(ctx)
        assert service["apiVersion"] == "networkservicemesh.io/v1"
        assert service["kind"] == "NetworkService"
        assert keys(service["spec"]) <= {"payload", "matches"}
        assert service["spec"]["payload"] == "IP"
        assert service["metadata"]["name"] == "my-vl3-network"
        for role, own, peer in (
            ("client", "nsm.cluster2", "nsm.cluster1"),
            ("server", "nsm.cluster1", "nsm.cluster2"),
        ):
            ids = installer.cluster_spiffe_ids(ctx, role, ctx.mesh_version)
            for item in ids:
                assert item["apiVersion"] == "spire.spiffe.io/v1alpha1"
                assert item["kind"] == "ClusterSPIFFEID"
                assert keys(item["spec"]) <= {
                    "spiffeIDTemplate",
                    "podSelector",
                    "namespaceSelector",
                    "federatesWith",
                    "dnsNameTemplates",
                }
                assert item["spec"]["spiffeIDTemplate"].startswith(f"spiffe://{own}/ns/")
            workloads = ids[0]
            assert workloads["metadata"]["name"] == "nsm-workloads"
            assert workloads["spec"]["federatesWith"] == [peer]
            assert workloads["spec"]["podSelector"] == {
                "matchLabels": {"spiffe.io/spiffe-id": "true"}
            }
            # From v1.12 the admission webhook's certificate comes from SPIRE too.
            assert len(ids) == (2 if ctx.mesh_version == "1.18.0" else 1)


def test_nsm_kustomizations_pin_upstream_at_the_configured_tag():
    for profile, config in configs():
        installer = NsmInstaller(config)
        ctx = context(config, "nsm")
        tag = "v" + ctx.mesh_version
        for files in (
            installer.nsm_kustomization(ctx, "server", ctx.mesh_version),
            installer.vl3_kustomization(ctx, ctx.mesh_version),
        ):
            kustomization = documents(files[0].text)[0]
            assert files[0].name.endswith("kustomization.yaml")
            assert keys(kustomization) <= {
                "apiVersion",
                "kind",
                "namespace",
                "resources",
                "patches",
            }
            remote = [r for r in kustomization["resources"] if r.startswith("https://")]
            assert remote and all(r.endswith(f"?ref={tag}") for r in remote), profile
            names = {f.name.rsplit("/", 1)[1] for f in files}
            for patch in kustomization["patches"]:
                assert keys(patch) <= {"path", "target"} and patch["path"] in names


@pytest.mark.parametrize("mesh", MESHES)
def test_plans_reference_no_floating_version(mesh: str):
    for _, config in configs():
        text = "\n".join(f"{s.description}\n{s.detail}" for s in plan_of(mesh, config).steps)
        assert "latest" not in text
        for url in re.findall(r"https://github\.com/networkservicemesh/[^\s']+", text):
            assert re.search(r"\?ref=v\d+\.\d+\.\d+$", url), url
        for match in re.findall(r"--version (\S+)", text):
            assert re.fullmatch(r"\d+\.\d+\.\d+", match), match


def test_the_coredns_change_keeps_the_clusters_own_corefile():
    eks = (
        ".:53 {\n    errors\n    health {\n        lameduck 5s\n      }\n    ready\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n      pods insecure\n"
        "      fallthrough in-addr.arpa ip6.arpa\n    }\n    prometheus :9153\n"
        "    forward . /etc/resolv.conf\n    cache 30\n    loop\n    reload\n    loadbalance\n}\n"
    )
    edited = coredns.interdomain_corefile(eks, "cluster1", "cluster2", "203.0.113.9")
    assert edited.startswith(".:53 {\n    k8s_external my.cluster1  # meshbench interdomain\n")
    assert "    kubernetes cluster.local in-addr.arpa ip6.arpa {" in edited
    assert edited.endswith(
        "my.cluster2:53 {  # meshbench interdomain\n    forward . 203.0.113.9:53 {\n"
        "        force_tcp\n    }\n}\n"
    )
    # What remains once meshbench's lines are taken out is the cluster's own Corefile.
    mine = [line for line in edited.splitlines() if "meshbench" in line]
    assert len(mine) == 2
    with pytest.raises(StepFailed, match="already carries"):
        coredns.interdomain_corefile(edited, "cluster1", "cluster2", "203.0.113.9")
    with pytest.raises(StepFailed, match=r"no '\.:53"):
        coredns.interdomain_corefile("example.org {\n}\n", "cluster1", "cluster2", "203.0.113.9")
    assert "forward . [2001:db8::1]:53" in coredns.interdomain_corefile(
        eks, "a", "b", "2001:db8::1"
    )


def test_generated_yaml_round_trips():
    for mesh in MESHES:
        for manifest in generated(mesh, CONFIG):
            assert yaml.safe_load(yaml.safe_dump(manifest)) == manifest

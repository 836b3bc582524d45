"""Every LoadBalancer Service a run makes carries its environment's load-balancer settings.

aws needs the internet-facing annotation (the AWS Load Balancer Controller would make
internal NLBs otherwise) and ``loadBalancerSourceRanges`` limited to the cluster(s) that
use the Service, never 0.0.0.0/0 (mesh-recipes.md sections 4.5 and 4.6). The settings reach
meshbench's own manifests, the meshes' helm values and istioctl overlays, and the Services
only upstream's manifests describe through a server-side apply patch right after they are
created. The ``existing`` environment sets nothing unless configured.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes_validate import validate

from meshbench.backend import Plan, StepFailed
from meshbench.cli.plan import placeholder_context
from meshbench.config import BenchmarkConfig, load_config
from meshbench.kube.load_balancers import (
    POLICY_FIELD_MANAGER,
    LoadBalancerPolicy,
    policy_patch_op,
)
from meshbench.kube.ops import run_ops
from meshbench.meshes.istio import IstioInstaller
from meshbench.meshes.kuma import KumaInstaller
from meshbench.registry import get_backend
from meshbench.testing.fake_kube import FakeKubeApi

from .conftest import FakePair, config_with, context

SCHEME = "service.beta.kubernetes.io/aws-load-balancer-scheme"
ROLES = ("client", "server")
PEER = {"client": "server", "server": "client"}


def expected_services(mesh: str, prefix: str) -> dict[tuple[str, str, str], tuple[str, ...]]:
    """(cluster, namespace, Service) -> the clusters that must be able to reach it, for
    every LoadBalancer Service the mesh's run makes (mesh-recipes.md section 7)."""
    per_role: dict[str, list[tuple[str, str]]] = {
        "baseline": [],
        "istio": [("istio-system", "istio-eastwestgateway")],
        "kuma": [("kuma-system", "kuma-ingress")],
        "nsm": [
            ("kube-system", "exposed-kube-dns"),
            ("spire", "spire-server"),
            ("nsm-system", "nsmgr-proxy"),
            ("nsm-system", "registry"),
        ],
    }[mesh]
    found = {
        (role, namespace, name): (PEER[role],) for role in ROLES for namespace, name in per_role
    }
    if mesh == "baseline":
        found[("server", prefix, "nginx")] = ("client",)
    else:
        # The paired baseline's nginx, the no-mesh path between the same clusters.
        found[("server", f"{prefix}-nomesh", "nginx")] = ("client",)
    if mesh == "kuma":
        # Both zones' control planes connect to the global's KDS, one from its own cluster.
        found[("server", "kuma-global", "kuma-global-zone-sync")] = ("client", "server")
    return found


# ------------------------------------------------------------------ reading a plan


def yaml_documents(text: str) -> list[Any]:
    """The YAML documents in a step's detail: the manifests, and each CLI file shown after
    its ``# <tmp>/<name>`` line (a command line before the first file is skipped)."""
    chunks: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("# <tmp>/"):
            chunks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    chunks.append("\n".join(current))
    found: list[Any] = []
    for chunk in chunks:
        try:
            found += [d for d in yaml.safe_load_all(chunk) if d is not None]
        except yaml.YAMLError:
            continue  # a command line, not a file
    return found


def service_settings(plan: Plan) -> Iterator[tuple[str | None, str | None, str, dict, list]]:
    """(cluster, namespace, Service name, annotations, source ranges) for every place in
    the plan that creates or patches a Service of type LoadBalancer."""
    for step in plan.steps:
        documents = yaml_documents(step.detail)
        kustomize_namespace = next(
            (
                d.get("namespace")
                for d in documents
                if isinstance(d, dict) and d.get("kind") == "Kustomization"
            ),
            None,
        )
        for document in documents:
            if not isinstance(document, dict):
                continue
            kind = document.get("kind")
            metadata = document.get("metadata") or {}
            spec = document.get("spec") or {}
            if kind == "Service" and (
                spec.get("type") == "LoadBalancer" or "type" not in spec  # a full one, a patch
            ):
                yield (
                    step.cluster,
                    metadata.get("namespace") or kustomize_namespace,
                    metadata["name"],
                    metadata.get("annotations") or {},
                    spec.get("loadBalancerSourceRanges") or [],
                )
            if kind == "IstioOperator":
                for gateway in (spec.get("components") or {}).get("ingressGateways") or []:
                    k8s = gateway.get("k8s") or {}
                    yield (
                        step.cluster,
                        "istio-system",
                        gateway["name"],
                        k8s.get("serviceAnnotations") or {},
                        (k8s.get("service") or {}).get("loadBalancerSourceRanges") or [],
                    )


def aws_plan(mesh: str, config: BenchmarkConfig) -> Plan:
    return get_backend(config, "aws", mesh).plan(placeholder_context(config, "aws", mesh))


@pytest.fixture
def no_network(monkeypatch):
    """Planning must not reach any cloud: refuse every outgoing connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while planning: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ------------------------------------------------------------------ aws plans


@pytest.mark.parametrize("mesh", ["baseline", "istio", "kuma", "nsm"])
def test_every_load_balancer_in_an_aws_plan_is_internet_facing_and_limited_to_its_peer(
    mesh: str, no_network
):
    config = load_config()
    plan = aws_plan(mesh, config)
    prefix = placeholder_context(config, "aws", mesh).resource_prefix
    expected = expected_services(mesh, prefix)
    seen: dict[tuple[str, str, str], list[list[str]]] = {}
    for cluster, namespace, name, service_annotations, ranges in service_settings(plan):
        where = f"{cluster}: {namespace}/{name}"
        assert service_annotations.get(SCHEME) == "internet-facing", where
        assert ranges, f"{where} is open to everyone"
        assert "0.0.0.0/0" not in ranges, where
        seen.setdefault((str(cluster), str(namespace), name), []).append(ranges)
    # Every LoadBalancer Service of the mesh is there, in the right cluster, admitting
    # the clusters that use it and no other.
    assert set(seen) == set(expected)
    for key, clients in expected.items():
        wanted = [f"<public IPv4 of each node of {prefix}-{client}>/32" for client in clients]
        assert all(sorted(ranges) == sorted(wanted) for ranges in seen[key]), (key, seen[key])
    assert "0.0.0.0/0" not in plan.render()


def test_aws_load_balancer_settings_are_valid_service_fields(no_network):
    """Full Services and the partial ones the patches send validate strictly (the
    placeholders stand where addresses go at run time)."""
    config = load_config()
    services = [
        document
        for mesh in ("baseline", "kuma", "nsm")
        for step in aws_plan(mesh, config).steps
        for document in yaml_documents(step.detail)
        if isinstance(document, dict) and document.get("kind") == "Service"
    ]
    assert len(services) >= 8
    for service in services:
        validate(service, "1.35", strict=True)


def test_upstream_services_are_patched_right_after_they_are_created(no_network):
    config = load_config()
    kuma = aws_plan("kuma", config).steps
    for role in ROLES:
        steps = [s for s in kuma if s.cluster == role and s.phase.endswith(".install_mesh")]
        helm = next(
            i for i, s in enumerate(steps) if s.description.startswith("zone control planes: zone ")
        )
        patch = steps[helm + 1]
        assert "Service kuma-system/kuma-ingress gets the environment's" in patch.description
        assert POLICY_FIELD_MANAGER in patch.detail
        # helm does not wait for the load balancer before the patch narrows it.
        assert " --wait " not in steps[helm].detail and "--values" in steps[helm].detail
    nsm = aws_plan("nsm", config).steps
    for role in ROLES:
        steps = [s for s in nsm if s.cluster == role and s.phase == "prepare_pair"]
        apply = next(i for i, s in enumerate(steps) if s.description.startswith("SPIRE: SPIRE for"))
        assert steps[apply + 1].description.startswith(
            "SPIRE: Service spire/spire-server gets the environment's"
        )


def test_istio_aws_plan_no_longer_warns_about_support():
    config = load_config()
    assert config.version_profile_name_for("aws") == "current"
    plan = aws_plan("istio", config)
    assert not [w for w in plan.warnings if "UNSUPPORTED" in w]
    assert "istioctl on the worker is version 1.31.1" in plan.render()


# ------------------------------------------------------------------ existing


@pytest.mark.parametrize("mesh", ["baseline", "istio", "kuma", "nsm"])
def test_existing_sets_nothing_unless_configured(mesh: str):
    config = load_config()
    plan = get_backend(config, "existing", mesh).plan(context(config, mesh))
    text = plan.render()
    assert "loadBalancerSourceRanges" not in text
    assert SCHEME not in text and "serviceAnnotations" not in text
    assert POLICY_FIELD_MANAGER not in text

    configured = config_with(
        load_balancer_annotations={SCHEME: "internet-facing"},
        egress_cidrs={"client": ["203.0.113.0/28"], "server": ["198.51.100.7/32"]},
    )
    plan = get_backend(configured, "existing", mesh).plan(context(configured, mesh))
    prefix = context(configured, mesh).resource_prefix
    networks = {"client": "203.0.113.0/28", "server": "198.51.100.7/32"}
    expected = expected_services(mesh, prefix)
    seen = set()
    for cluster, namespace, name, service_annotations, ranges in service_settings(plan):
        clients = expected[(str(cluster), str(namespace), name)]
        assert service_annotations.get(SCHEME) == "internet-facing"
        assert sorted(ranges) == sorted(networks[client] for client in clients)
        seen.add((cluster, namespace, name))
    assert seen == set(expected)


def test_existing_egress_networks_are_for_both_clusters_and_never_everyone():
    with pytest.raises(ValueError, match="both clusters"):
        config_with(egress_cidrs={"client": ["203.0.113.0/28"]})
    with pytest.raises(ValueError, match="admits everyone"):
        config_with(egress_cidrs={"client": ["0.0.0.0/0"], "server": ["198.51.100.7/32"]})
    with pytest.raises(ValueError, match="not a network"):
        config_with(egress_cidrs={"client": ["203.0.113.1/28"], "server": ["198.51.100.7/32"]})


# ------------------------------------------------------------------ steps against fakes


POLICY = LoadBalancerPolicy({SCHEME: "internet-facing"}, ("198.51.100.7/32",))


def upstream_service(api: FakeKubeApi, service_type: str) -> None:
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "spire"}})
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "spire-server", "namespace": "spire", "labels": {"app": "x"}},
            "spec": {"type": service_type, "ports": [{"port": 8081}]},
        },
        field_manager="kubectl-client-side-apply",
    )


def test_the_patch_adds_the_settings_and_keeps_what_upstream_made(fake_pair: FakePair):
    api = fake_pair.apis["server"]
    upstream_service(api, "LoadBalancer")
    op = policy_patch_op("prepare_pair", "server", "spire", "spire-server", POLICY, "SPIRE: x")
    with fake_pair.clusters() as clusters:
        summary = run_ops([op], clusters)
    service = api.get("v1", "Service", "spire-server", "spire")
    assert (
        service["spec"]["ports"] == [{"port": 8081}] and service["spec"]["type"] == "LoadBalancer"
    )
    assert service["metadata"]["labels"] == {"app": "x"}
    assert service["metadata"]["annotations"] == {SCHEME: "internet-facing"}
    assert service["spec"]["loadBalancerSourceRanges"] == ["198.51.100.7/32"]
    manager, force, _ = api.applied[-1]
    assert manager == POLICY_FIELD_MANAGER and force
    assert summary["load_balancer_policy_server_spire_spire-server"]["source_ranges"] == [
        "198.51.100.7/32"
    ]


def test_the_patch_leaves_other_service_types_alone_and_needs_the_service(fake_pair: FakePair):
    api = fake_pair.apis["client"]
    op = policy_patch_op("prepare_pair", "client", "spire", "spire-server", POLICY, "SPIRE: x")
    with fake_pair.clusters() as clusters, pytest.raises(StepFailed, match="does not exist"):
        run_ops([op], clusters)
    upstream_service(api, "ClusterIP")
    with fake_pair.clusters() as clusters:
        summary = run_ops([op], clusters)
    assert "not a LoadBalancer" in summary["load_balancer_policy_client_spire_spire-server"]
    assert (
        "loadBalancerSourceRanges" not in api.get("v1", "Service", "spire-server", "spire")["spec"]
    )


def test_kumas_rendered_kds_service_is_applied_with_the_settings(
    fake_pair: FakePair, tmp_path, monkeypatch
):
    from .test_steps_against_fakes import GLOBAL_RENDERING, with_timeouts

    rendering = tmp_path / "global.yaml"
    rendering.write_text(GLOBAL_RENDERING)
    monkeypatch.setenv("FAKE_HELM_TEMPLATE", str(rendering))
    config = load_config()
    installer = with_timeouts(KumaInstaller(config), 5.0)
    asked: list[tuple[str, tuple[str, ...] | None]] = []

    def lookup(ctx, role, clients=None):
        asked.append((role, tuple(clients) if clients else None))
        return POLICY

    installer.use_load_balancer_policy(lookup)
    ctx = context(config, "kuma")
    components = {c.name: c for c in installer.components(ctx, 1)}
    with fake_pair.clusters() as clusters:
        run_ops(components["global control plane"].install, clusters)
    service = fake_pair.apis["server"].objects[
        ("v1", "Service", "kuma-global", "kuma-global-zone-sync")
    ]
    assert service["metadata"]["annotations"] == {SCHEME: "internet-facing"}
    assert service["spec"]["loadBalancerSourceRanges"] == ["198.51.100.7/32"]
    assert service["spec"]["ports"][0]["port"] == 5685
    # The global's KDS is asked for as used by both clusters, each zone ingress by its peer.
    assert ("server", ("client", "server")) in asked
    assert {("client", None), ("server", None)} <= set(asked)


def test_istio_gateways_carry_the_settings_and_keep_their_ports():
    config = load_config()
    installer = IstioInstaller(config)
    eastwest = installer.eastwest_operator("client", POLICY)
    (gateway,) = eastwest["spec"]["components"]["ingressGateways"]
    assert gateway["k8s"]["serviceAnnotations"] == {SCHEME: "internet-facing"}
    service = gateway["k8s"]["service"]
    assert service["loadBalancerSourceRanges"] == ["198.51.100.7/32"]
    assert [p["port"] for p in service["ports"]] == [15021, 15443, 15012, 15017]
    # The minimal profile has no other gateway; the default profile's ingress gateway is
    # one more LoadBalancer and gets the same settings.
    assert "components" not in installer.control_plane_operator("client", POLICY)["spec"]
    default = config.model_copy(
        update={
            "meshes": config.meshes.model_copy(
                update={
                    "istio": config.meshes.istio.model_copy(
                        update={"control_plane_profile": "default"}
                    )
                }
            )
        }
    )
    control = IstioInstaller(default).control_plane_operator("client", POLICY)
    (ingress,) = control["spec"]["components"]["ingressGateways"]
    assert ingress["name"] == "istio-ingressgateway" and ingress["enabled"] is True
    assert ingress["k8s"] == {
        "serviceAnnotations": {SCHEME: "internet-facing"},
        "service": {"loadBalancerSourceRanges": ["198.51.100.7/32"]},
    }
    assert (
        "components"
        not in IstioInstaller(default).control_plane_operator("client", LoadBalancerPolicy())[
            "spec"
        ]
    )


def test_kuma_zone_values_use_the_charts_ingress_service_annotations():
    # kumahq/kuma deployments/charts/kuma/templates/ingress-service.yaml ranges over
    # .Values.ingress.service.annotations (2.4.3 to 2.14); it has no source-range value.
    installer = KumaInstaller(load_config())
    assert installer.zone_values(LoadBalancerPolicy()) == {}
    assert installer.zone_values(LoadBalancerPolicy({}, ("198.51.100.7/32",))) == {}
    assert installer.zone_values(POLICY) == {
        "ingress": {"service": {"annotations": {SCHEME: "internet-facing"}}}
    }
    args = installer.zone_install_args("2.14.3", "client", "198.51.100.9", "/tmp/v.yaml", False)
    assert "--wait" not in args and args[-2:] == ["--values", "/tmp/v.yaml"]
    assert "--wait" in installer.zone_install_args("2.14.3", "client", "198.51.100.9")

"""Every manifest meshbench renders validates offline, strictly, against the Kubernetes
versions the configuration names (kubernetes-validate's bundled schemas)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes_validate import SchemaNotFoundError, ValidationError, validate

from meshbench.cli.plan import placeholder_context
from meshbench.config import ENVIRONMENT_NAMES, load_config
from meshbench.kube.metrics import SampleScope
from meshbench.local.nginx import KEEPALIVE_REQUESTS
from meshbench.registry import get_backend
from meshbench.workloads.kubernetes import WorkloadProfile, render_workloads

CONFIG = load_config()


def configured_versions() -> list[str]:
    versions = set()
    for name in ENVIRONMENT_NAMES:
        version = CONFIG.environment(name).kubernetes_version
        if version:
            versions.add(".".join(version.lstrip("v").split(".")[:2]))
    return sorted(versions)


VERSIONS = configured_versions()

PROFILES = {
    "baseline": WorkloadProfile(service_type="LoadBalancer"),
    # What issue 6's installers will ask for: injection labels, appProtocol, the Service in
    # both clusters, NSM's annotation, extra scopes.
    "l7-mesh": WorkloadProfile(
        namespace_labels={"istio-injection": "enabled", "topology.istio.io/network": "network1"},
        service_app_protocol="http",
        service_in_client_cluster=True,
        service_annotations={"ingress.kubernetes.io/service-upstream": "true"},
        extra_sample_scopes=(SampleScope("server", "istio-system", "istio=eastwestgateway"),),
    ),
    "l3-mesh": WorkloadProfile(
        server_pod_annotations={
            "networkservicemesh.io": "kernel://my-vl3-network/nsm-1?dnsName=nginx"
        },
        client_pod_annotations={
            "networkservicemesh.io": "kernel://my-vl3-network@my.cluster1/nsm-1"
        },
        protocol="ip",
    ),
}


def rendered_sets():
    for name, profile in PROFILES.items():
        manifests = render_workloads(
            "mb-0123abcd",
            "0123abcd",
            CONFIG.kubernetes,
            profile,
            node_selector={"node-role.kubernetes.io/worker": ""},
            environment_service_annotations={
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"
            },
            load_balancer_source_ranges=["203.0.113.0/24"],
        )
        yield name, [*manifests.server, *manifests.client]


def kubernetes_objects(text: str) -> list[dict]:
    """The Kubernetes objects in a step's detail. Some manifest steps are rendered only at
    run time (a helm template) and show the command instead: those hold no objects."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []
    return [d for d in documents if isinstance(d, dict) and "apiVersion" in d and "kind" in d]


def plan_manifests() -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for environment, mesh in CONFIG.matrix:
        if environment == "local":
            continue
        backend = get_backend(CONFIG, environment, mesh)
        plan = backend.plan(placeholder_context(CONFIG, environment, mesh))
        found[(environment, mesh)] = [
            obj
            for step in plan.steps
            if step.kind == "manifest"
            for obj in kubernetes_objects(step.detail)
        ]
    return found


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_workload_manifests_validate_strictly(version: str, profile_name: str):
    manifests = dict(rendered_sets())[profile_name]
    assert {m["kind"] for m in manifests} >= {"Namespace", "ConfigMap", "Deployment", "Service"}
    for manifest in manifests:
        validate(manifest, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_in_the_enabled_kubernetes_plans_validates(version: str):
    """Built-in kinds validate strictly; custom resources (no bundled schema) are checked
    by their installers' own tests against the published field names."""
    plans = plan_manifests()
    baseline = {m["kind"] for m in plans[("existing", "baseline")]}
    assert baseline == {"Namespace", "ConfigMap", "Deployment", "Service"}
    validated = 0
    for (environment, mesh), manifests in plans.items():
        for manifest in manifests:
            try:
                validate(manifest, version, strict=True)
            except SchemaNotFoundError:
                continue
            except ValidationError as exc:
                name = manifest.get("metadata", {}).get("name")
                raise AssertionError(
                    f"{environment} × {mesh}: {manifest['kind']} {name}: {exc}"
                ) from None
            validated += 1
    assert validated >= 6  # the server and client sets of existing × baseline at least


def test_the_validator_does_catch_a_misspelt_field():
    manifests = dict(rendered_sets())["baseline"]
    broken = yaml.safe_load(yaml.safe_dump(manifests[2]))  # the nginx Deployment
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(ValidationError):
        validate(broken, VERSIONS[0], strict=True)


def test_equal_requests_and_limits_and_the_keepalive_setting():
    manifests = dict(rendered_sets())["l7-mesh"]
    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    resources = [d["spec"]["template"]["spec"]["containers"][0]["resources"] for d in deployments]
    assert resources[0] == resources[1]
    assert resources[0]["requests"] == resources[0]["limits"]
    conf = next(m for m in manifests if m["kind"] == "ConfigMap")["data"]["nginx.conf"]
    assert f"keepalive_requests {KEEPALIVE_REQUESTS};" in conf
    services = [m for m in manifests if m["kind"] == "Service"]
    assert [s["spec"]["ports"][0]["appProtocol"] for s in services] == ["http", "http"]
    assert {s["metadata"]["labels"]["meshbench.io/role"] for s in services} == {"client", "server"}


def test_the_pods_nginx_conf_is_accepted_by_nginx(tmp_path):
    """``nginx -t`` on the ConfigMap's file, its run folder moved to a temporary one."""
    import shutil
    import subprocess

    from meshbench.workloads.kubernetes import NGINX_RUN_DIR

    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip("nginx is not installed (scripts/install-system-packages.sh installs it)")
    manifests = dict(rendered_sets())["baseline"]
    conf = next(m for m in manifests if m["kind"] == "ConfigMap")["data"]["nginx.conf"]
    (tmp_path / "nginx-temp").mkdir()
    path = tmp_path / "nginx.conf"
    path.write_text(conf.replace(NGINX_RUN_DIR, str(tmp_path)))
    checked = subprocess.run([binary, "-t", "-c", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_a_load_balancer_service_needs_no_annotations_from_its_environment() -> None:
    profile = WorkloadProfile(service_type="LoadBalancer")
    manifests = render_workloads("mb-0123abcd", "0123abcd", CONFIG.kubernetes, profile)
    service = next(m for m in manifests.server if m["kind"] == "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    validate(service, VERSIONS[0], strict=True)

"""What `meshbench plan --env existing --mesh istio|kuma|nsm` shows, and what it must."""

from __future__ import annotations

import re

import pytest

from meshbench.cli import main
from meshbench.meshes.common import component_of

from .conftest import MESHES, config_with, documents, index_of, plan_of


@pytest.mark.parametrize("mesh", MESHES)
def test_the_plan_command_prints_every_task_in_order(mesh: str, capsys):
    assert main(["plan", "--env", "existing", "--mesh", mesh]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"Plan for environment 'existing', mesh '{mesh}'")
    tasks = [
        "create_clusters",
        "prepare_pair",
        "iteration_01.install_mesh",
        "iteration_01.wait_mesh_ready",
        "iteration_01.deploy_workloads",
        "iteration_01.wait_workloads_ready",
        "iteration_01.warmup",
        "iteration_01.measured_01",
        "iteration_01.uninstall_mesh",
        "delete_clusters",
    ]
    positions = [printed.index(f". {task}") for task in tasks]
    assert positions == sorted(positions)
    numbers = [int(n) for n in re.findall(r"(?m)^\s*(\d+)\. ", printed)]
    assert numbers == list(range(1, len(numbers) + 1))


def test_istio_remote_secrets_are_named_after_the_cluster_they_describe():
    steps = plan_of("istio").steps
    remote = [s for s in steps if component_of(s.description) == "remote secrets"]
    installs = [s for s in remote if s.phase.endswith(".install_mesh")]
    assert {(s.cluster, s.detail.splitlines()[0]) for s in installs} == {
        # The client cluster's istiod gets the server's credentials, named cluster2 ...
        (
            "client",
            "[server] istioctl create-remote-secret --name=cluster2   "
            "(output is a credential: never logged)",
        ),
        # ... and the server's istiod the client's, named cluster1 (the study: cluster2 twice).
        (
            "server",
            "[client] istioctl create-remote-secret --name=cluster1   "
            "(output is a credential: never logged)",
        ),
    }
    assert "istio-remote-secret-cluster2 in the client cluster" in installs[0].description
    assert "istio-remote-secret-cluster1 in the server cluster" in installs[1].description
    checks = [s for s in steps if "describes cluster" in s.description]
    assert {(s.cluster, s.description.split(" describes")[0]) for s in checks} == {
        ("client", "Secret istio-system/istio-remote-secret-cluster2"),
        ("server", "Secret istio-system/istio-remote-secret-cluster1"),
    }


def test_istio_installs_the_ca_and_network_label_before_istiod():
    steps = plan_of("istio").steps
    for role, network in (("client", "network1"), ("server", "network2")):
        label = index_of(
            steps,
            lambda s, r=role, n=network: (
                s.cluster == r and "labelled with network " + n in s.description
            ),
        )
        istiod = index_of(
            steps,
            lambda s, r=role: s.cluster == r and component_of(s.description) == "control plane",
        )
        ca = index_of(steps, lambda s: component_of(s.description) == "plug-in CA")
        assert label < istiod and ca < istiod
    detail = next(s.detail for s in steps if component_of(s.description) == "plug-in CA")
    assert "PRIVATE KEY" not in detail and "<generated at run time, not shown>" in detail


def test_istio_and_nginx_service_exists_in_both_clusters_with_injection():
    steps = plan_of("istio").steps
    deploys = [s for s in steps if s.phase.endswith("deploy_workloads") and s.kind == "manifest"]
    paired = [s for s in deploys if "paired baseline" in s.description]
    assert {s.cluster for s in paired} == {"client", "server"}
    for step in paired:  # the no-mesh path: its own namespace, never injected
        namespace = next(o for o in documents(step.detail) if o["kind"] == "Namespace")
        assert namespace["metadata"]["name"].endswith("-nomesh")
        assert "istio-injection" not in namespace["metadata"]["labels"]
    for step in [s for s in deploys if s not in paired]:
        objects = documents(step.detail)
        services = [
            o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "nginx"
        ]
        assert len(services) == 1, step.cluster
        namespace = next(o for o in objects if o["kind"] == "Namespace")
        assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"


def test_kuma_nginx_service_declares_app_protocol_http():
    steps = plan_of("kuma").steps
    server = next(
        s
        for s in steps
        if s.phase.endswith("deploy_workloads") and s.cluster == "server" and s.kind == "manifest"
    )
    service = next(o for o in documents(server.detail) if o["kind"] == "Service")
    assert service["spec"]["ports"][0]["appProtocol"] == "http"
    namespace = next(o for o in documents(server.detail) if o["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["kuma.io/sidecar-injection"] == "enabled"


def test_kuma_readiness_checks_zones_and_ingresses_online_through_the_api():
    steps = plan_of("kuma").steps
    ready = [s for s in steps if s.phase.endswith("wait_mesh_ready")]
    assert any("GET /zones+insights" in s.detail for s in ready)
    assert any(
        "GET /zoneingresses+insights" in s.detail and "advertisedAddress" in s.detail for s in ready
    )
    kds = next(s for s in steps if "zone zone1 with zone ingress" in s.description)
    assert "controlPlane.kdsGlobalAddress=grpcs://<global KDS address>:5685" in kds.detail
    assert "ingress.enabled=true" in kds.detail


def test_nsm_federation_comes_before_nsm_is_installed():
    steps = plan_of("nsm").steps
    spire = [
        i
        for i, s in enumerate(steps)
        if component_of(s.description) == "SPIRE" and s.phase == "prepare_pair"
    ]
    federation = [
        i
        for i, s in enumerate(steps)
        if component_of(s.description) == "SPIFFE federation" and s.phase == "prepare_pair"
    ]
    nsm = [
        i
        for i, s in enumerate(steps)
        if component_of(s.description) == "NSM" and s.phase.endswith(".install_mesh")
    ]
    dns = [
        i
        for i, s in enumerate(steps)
        if component_of(s.description) == "interdomain DNS" and s.phase == "prepare_pair"
    ]
    assert spire and federation and nsm and dns
    assert max(dns) < min(spire)  # SPIRE's federation URL is a cross-cluster DNS name
    assert max(spire) < min(federation) < max(federation) < min(nsm)


def test_nsm_workloads_join_by_annotation_and_mechanism_is_recorded():
    steps = plan_of("nsm").steps
    deploys = {
        s.cluster: documents(s.detail)
        for s in steps
        if s.phase.endswith("deploy_workloads")
        and s.kind == "manifest"
        and "paired baseline" not in s.description
    }
    server_pod = next(o for o in deploys["server"] if o["kind"] == "Deployment")
    client_pod = next(o for o in deploys["client"] if o["kind"] == "Deployment")
    annotations = lambda d: d["spec"]["template"]["metadata"]["annotations"]  # noqa: E731
    assert annotations(server_pod)["networkservicemesh.io"] == (
        "kernel://my-vl3-network/nsm-1?dnsName=nginx"
    )
    assert annotations(client_pod)["networkservicemesh.io"] == (
        "kernel://my-vl3-network@my.cluster1/nsm-1?dnsName=fortio"
    )
    install = next(s for s in steps if s.description.startswith("NSM: interdomain NSM v1.11.1"))
    assert "inter-node mechanism wireguard" in install.description
    assert "NSM_MECHANISM_PRIORITY" not in install.detail


def test_nsm_ipsec_sets_the_mechanism_priority_on_the_forwarders():
    config = config_with()
    config = config.model_copy(
        update={
            "meshes": config.meshes.model_copy(
                update={
                    "nsm": config.meshes.nsm.model_copy(update={"inter_node_mechanism": "ipsec"})
                }
            )
        }
    )
    steps = plan_of("nsm", config).steps
    install = next(s for s in steps if s.description.startswith("NSM: interdomain NSM"))
    assert "name: NSM_MECHANISM_PRIORITY\n" in install.detail
    assert "value: ipsec" in install.detail
    assert any("UDP 500 and 4500" in w for w in plan_of("nsm", config).warnings)


@pytest.mark.parametrize("mesh", MESHES)
def test_a_probe_comes_before_every_measurement(mesh: str):
    steps = plan_of(mesh).steps
    probe = index_of(steps, lambda s: s.description.startswith("probe: "))
    assert steps[probe].phase == "iteration_01.wait_workloads_ready"
    last_install = max(i for i, s in enumerate(steps) if s.phase.endswith(".install_mesh"))
    ready = [i for i, s in enumerate(steps) if s.phase.endswith("wait_mesh_ready")]
    runs = [i for i, s in enumerate(steps) if s.kind == "http" and "Fortio run" in s.description]
    assert runs and last_install < min(ready) and max(ready) < probe < min(runs)
    # Nothing is installed, removed or re-deployed between the probe and the runs.
    between = steps[probe + 1 : max(runs)]
    assert not [s for s in between if s.kind in ("manifest", "command")]


@pytest.mark.parametrize("mesh", MESHES)
def test_uninstall_mirrors_install(mesh: str):
    steps = plan_of(mesh).steps

    def components(phase_suffix: str) -> list[str]:
        seen: list[str] = []
        for step in steps:
            if step.phase.endswith(f".{phase_suffix}") and ": " in step.description:
                name = component_of(step.description)
                if name not in ("preflight", "teardown") and (not seen or seen[-1] != name):
                    seen.append(name)
        return seen

    installed = components("install_mesh")
    removed = components("uninstall_mesh")
    assert installed[0] == "inventory" and len(installed) >= 3
    assert removed == list(reversed(installed))
    # Each install step of a component has a teardown in the same cluster.
    for name in installed:
        roles_in = {
            s.cluster
            for s in steps
            if s.phase.endswith(".install_mesh") and component_of(s.description) == name
        }
        roles_out = {
            s.cluster
            for s in steps
            if s.phase.endswith(".uninstall_mesh") and component_of(s.description) == name
        }
        assert roles_in - {None} <= roles_out | {None}, name


def test_nsm_pair_cleanup_mirrors_prepare_and_restores_coredns():
    steps = plan_of("nsm").steps
    prepared = []
    for step in steps:
        if step.phase == "prepare_pair" and ": " in step.description:
            name = component_of(step.description)
            if name in ("metrics API answers (install metrics-server v0.7.2 if missing)",):
                continue
            if not prepared or prepared[-1] != name:
                prepared.append(name)
    cleaned = []
    for step in steps:
        if step.phase == "delete_clusters" and step.kind != "note" and ": " in step.description:
            name = component_of(step.description)
            if not cleaned or cleaned[-1] != name:
                cleaned.append(name)
    assert prepared == ["inventory", "interdomain DNS", "SPIRE", "SPIFFE federation"]
    assert cleaned == list(reversed(prepared))
    restore = [s for s in steps if "restore the original Corefile" in s.description]
    assert {s.cluster for s in restore} == {"client", "server"}
    verify = [s for s in steps if s.phase == "delete_clusters" and "as before" in s.description]
    assert {s.cluster for s in verify} == {"client", "server"}


@pytest.mark.parametrize("mesh", MESHES)
def test_uninstall_ends_by_comparing_namespaces_crds_and_webhooks(mesh: str):
    steps = plan_of(mesh).steps
    uninstall = [s for s in steps if s.phase.endswith(".uninstall_mesh")]
    assert uninstall[-1].description == (
        "teardown: fail if any step above failed (each one was attempted)"
    )
    uninstall = uninstall[:-1]
    assert [s.cluster for s in uninstall[-2:]] == ["client", "server"]
    for step in uninstall[-2:]:
        assert step.description == (
            f"inventory: namespaces, CRDs and webhooks are as before {dict(istio='Istio', kuma='Kuma', nsm='NSM')[mesh]} was installed"
        )
    record = [
        s
        for s in steps
        if s.phase.endswith(".install_mesh") and s.description.startswith("inventory: list")
    ]
    assert [s.cluster for s in record] == ["client", "server"]
    assert "CustomResourceDefinition, MutatingWebhookConfiguration" in record[0].detail


def test_supported_combinations_plan_without_a_support_warning():
    plan = plan_of("istio", config_with(kubernetes_version="1.28"))
    assert not [w for w in plan.warnings if "UNSUPPORTED" in w]


@pytest.mark.parametrize(
    ("mesh", "version", "profile", "unsupported"),
    [
        ("istio", "1.34", "study-2023", True),  # 1.19 supports 1.25-1.28
        ("kuma", "1.28", "study-2023", True),  # 2.4 was validated up to 1.27
        ("nsm", "1.34", "current", True),  # no NSM range reaches 1.34
        ("istio", "1.34", "current", False),
        ("kuma", "1.34", "current", False),
    ],
)
def test_an_unsupported_combination_warns_at_the_top_of_the_plan(
    mesh, version, profile, unsupported
):
    config = config_with(kubernetes_version=version, version_profile=profile)
    plan = plan_of(mesh, config)
    text = plan.render()
    second_line = text.splitlines()[1]
    if unsupported:
        assert second_line.startswith("WARNING: UNSUPPORTED COMBINATION")
        assert f"this environment runs {version}" in second_line
    else:
        assert "UNSUPPORTED" not in text


def test_a_version_without_a_known_range_says_so():
    import yaml

    from meshbench.config import BenchmarkConfig

    from .conftest import ROOT

    document = yaml.safe_load((ROOT / "include/meshbench/benchmarks.yaml").read_text())
    document["version_profiles"]["odd"] = {"istio": "1.22.1", "kuma": "2.4.3", "nsm": "1.11.1"}
    document["environments"]["existing"]["version_profile"] = "odd"
    plan = plan_of("istio", BenchmarkConfig.model_validate(document))
    assert any(
        "istio 1.22.1: no supported Kubernetes range is configured for release line 1.22" in w
        for w in plan.warnings
    )


def test_kuma_global_placement_and_store_are_recorded_and_warned_about():
    plan = plan_of("kuma")
    assert any("in-memory store (the study's placement)" in w for w in plan.warnings)
    render = next(s for s in plan.steps if "rendered by helm" in s.description)
    assert "KUMA_STORE_TYPE: memory" in render.detail
    assert "drop the 'migration' init container (memory store)" in render.detail


def test_kuma_postgres_store_takes_its_credentials_from_an_airflow_connection():
    config = config_with()
    kuma = config.meshes.kuma
    config = config.model_copy(
        update={
            "meshes": config.meshes.model_copy(
                update={
                    "kuma": kuma.model_copy(
                        update={
                            "global_control_plane": kuma.global_control_plane.model_copy(
                                update={"store": "postgres", "postgres_conn_id": "kuma_global_db"}
                            )
                        }
                    )
                }
            )
        }
    )
    plan = plan_of("kuma", config)
    assert not any("in-memory store" in w for w in plan.warnings)
    secret = next(
        s for s in plan.steps if "from Airflow connection 'kuma_global_db'" in s.description
    )
    assert "values never shown" in secret.detail
    render = next(s for s in plan.steps if "rendered by helm" in s.description)
    values = documents(render.detail.split("# <tmp>/global-values.yaml\n", 1)[1])[0]
    assert values["controlPlane"]["secrets"]["password"] == {
        "Secret": "kuma-global-postgres",
        "Key": "password",
        "Env": "KUMA_STORE_POSTGRES_PASSWORD",
    }
    assert values["controlPlane"]["envVars"] == {"KUMA_STORE_TYPE": "postgres"}
    assert "migration" not in render.detail


def test_kuma_from_2_6_allows_traffic_before_turning_on_mtls():
    old = plan_of("kuma")
    assert not any("MeshTrafficPermission" in s.detail for s in old.steps)
    new = plan_of("kuma", config_with(version_profile="current", kubernetes_version="1.34"))
    mesh = next(s for s in new.steps if s.description.startswith("mesh: Mesh default with"))
    assert mesh.detail.index("meshtrafficpermissions/allow-all") < mesh.detail.index(
        "PUT /meshes/default\n"
    )


# ---------------------------------------------------------------- real-cluster defects


def aws_plan(mesh: str):
    from meshbench.config import load_config
    from meshbench.registry import get_backend

    from .conftest import context

    config = load_config()
    return get_backend(config, "aws", mesh).plan(context(config, mesh, "aws"))


def test_aws_nsm_checks_storage_for_the_spire_claim_before_spire_is_applied():
    plan = aws_plan("nsm")
    steps = plan.steps
    for role in ("client", "server"):
        storage = index_of(
            steps,
            lambda s, r=role: (
                s.cluster == r and "storage for the spire-server claim" in s.description
            ),
        )
        apply = index_of(
            steps,
            lambda s, r=role: s.cluster == r and s.description.startswith("SPIRE: SPIRE for"),
        )
        assert storage < apply
        assert "StorageClass" in steps[storage].detail
        assert "default" in steps[storage].description
    # The plan says at the top that EKS gives no default StorageClass.
    assert any("aws-ebs-csi-driver" in w and "StorageClass" in w for w in plan.warnings)


def test_nsm_spire_from_v1_14_pins_upstreams_untagged_postgres_image():
    plan = aws_plan("nsm")  # the current profile: NSM 1.18.0
    applies = [s for s in plan.steps if s.description.startswith("SPIRE: SPIRE for")]
    assert len(applies) == 2
    for step in applies:
        kustomization = next(
            d for d in documents(step.detail.split("\n", 2)[2]) if d.get("kind") == "Kustomization"
        )
        assert kustomization["images"] == [{"name": "postgres", "newTag": "17.6"}]
        assert kustomization["resources"][0].endswith("?ref=v1.18.0")
        assert "kubectl apply -k '<tmp>/spire'" in step.detail
    # The study's v1.11.1 has neither the claim nor postgres: upstream's URL as before.
    legacy = [s for s in plan_of("nsm").steps if s.description.startswith("SPIRE: SPIRE for")]
    assert all("examples/spire/cluster" in s.detail and "?ref=v1.11.1'" in s.detail for s in legacy)
    assert not [s for s in plan_of("nsm").steps if "spire-server claim" in s.description]


def test_a_configured_spire_storage_class_is_patched_into_the_claim():
    from meshbench.meshes.nsm import NsmInstaller

    from .conftest import config_with_mesh

    config = config_with_mesh("nsm", spire_storage_class="gp3")
    files = {f.name: f.text for f in NsmInstaller(config).spire_files("server", "1.18.0")}
    assert "patch-spire-data-storage-class.yaml" in files["spire/kustomization.yaml"]
    import yaml

    assert yaml.safe_load(files["spire/patch-spire-data-storage-class.yaml"]) == [
        {
            "op": "add",
            "path": "/spec/volumeClaimTemplates/0/spec/storageClassName",
            "value": "gp3",
        }
    ]


def test_nsm_vpp_containers_get_no_cpu_limit_and_the_plan_says_why():
    import yaml

    steps = plan_of("nsm").steps
    for file_name in ("nsm/patch-vpp-resources.yaml", "vl3/patch-vpp-resources.yaml"):
        step = next(s for s in steps if f"# <tmp>/{file_name}" in s.detail)
        text = step.detail.split(f"# <tmp>/{file_name}\n", 1)[1].split("\n# <tmp>/", 1)[0]
        (op,) = yaml.safe_load(text)
        assert op["path"] == "/spec/template/spec/containers/0/resources"
        assert op["value"] == {
            "requests": {"cpu": "1", "memory": "512Mi"},
            "limits": {"memory": "512Mi"},
        }


def test_aws_picks_the_metrics_server_release_for_its_kubernetes_version():
    steps = aws_plan("baseline").steps
    install = [s for s in steps if s.description.startswith("metrics API answers")]
    assert len(install) == 2
    assert all("metrics-server v0.9.0" in s.description for s in install)  # EKS 1.35
    assert all("download/v0.9.0/components.yaml" in s.detail for s in install)
    existing = [s for s in plan_of("istio").steps if s.description.startswith("metrics API")]
    assert all("v0.7.2" in s.description for s in existing)  # existing: Kubernetes 1.28


def test_istio_east_west_teardown_deletes_the_gateway_objects_and_checks_them_gone():
    steps = plan_of("istio").steps
    teardown = [
        s
        for s in steps
        if s.phase.endswith(".uninstall_mesh")
        and component_of(s.description) == "east-west gateway"
    ]
    assert not [s for s in teardown if "istioctl uninstall" in s.detail]
    assert any("owning-resource=eastwest" in s.detail and "DELETE" in s.detail for s in teardown)
    assert teardown[-1].description.endswith("nothing of istio-eastwestgateway is left")


def test_istio_on_existing_clusters_warns_about_in_cluster_connections():
    plan = plan_of("istio")
    assert any("in_cluster" in w and "remote_api_servers" in w for w in plan.warnings)
    from .conftest import config_with_mesh

    quiet = config_with_mesh(
        "istio", remote_api_servers={"client": "https://a:6443", "server": "https://b:6443"}
    )
    assert not [w for w in plan_of("istio", quiet).warnings if "in_cluster" in w]

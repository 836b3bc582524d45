"""The capi environment: manifests against the documented fields, the plan, and the
create / prepare / delete steps against a simulated management cluster (capi_world)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import yaml

from meshbench.backend import StepFailed
from meshbench.config import ConfigError, load_config, parse_config
from meshbench.environments import capi_manifests as manifests
from meshbench.environments.capi import MANAGEMENT, CapiProvider, Credentials
from meshbench.environments.provider import isoformat, utcnow
from meshbench.environments.reaper import reap
from meshbench.kube.redact import MASK
from meshbench.registry import get_backend
from tests.cloud import capi_fields
from tests.cloud.capi_world import World
from tests.cloud.conftest import run_context, with_environment

API_KEY = "equinix-token-that-must-never-be-logged"
CREDENTIALS = Credentials(API_KEY, "project-1234", ("ssh-ed25519 AAAAC3Nza meshbench@test",))


@pytest.fixture
def config():
    return with_environment(load_config(), "capi", enabled=True, poll_interval=0.01)


def make_provider(config, world: World) -> CapiProvider:
    return CapiProvider(
        config,
        runner=world.runner(),
        api_factory=world.api_factory,
        credentials=lambda: CREDENTIALS,
        management_access=world.management_access(),
    )


def rendered(config, role: str = "client") -> list[dict]:
    provider = CapiProvider(config, credentials=lambda: CREDENTIALS)
    ctx = run_context(config, "capi")
    return provider.render(ctx, role, CREDENTIALS, "2026-11-26T00:00:00Z")


# -- manifests ------------------------------------------------------------------------


def test_every_rendered_kind_has_only_documented_fields(config) -> None:
    documents = rendered(config)
    kinds = [document["kind"] for document in documents]
    assert kinds == [
        "Cluster",
        "PacketCluster",
        "PacketMachineTemplate",
        "KubeadmControlPlane",
        "PacketMachineTemplate",
        "KubeadmConfigTemplate",
        "MachineDeployment",
    ]
    for document in documents:
        assert capi_fields.check(document) == [], document["kind"]


def test_the_field_check_catches_mistakes() -> None:
    bad = {
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
        "kind": "PacketCluster",
        "metadata": {"name": "x"},
        "spec": {"facility": "da11", "vipManager": "METALLB", "projectId": "p"},
    }
    problems = capi_fields.check(bad)
    assert "PacketCluster.spec.projectID: required field is missing" in problems
    assert "PacketCluster.spec.projectId: not a field of this kind" in problems
    assert any("vipManager" in problem for problem in problems)


def test_the_objects_reference_each_other_and_follow_the_settings(config) -> None:
    ctx = run_context(config, "capi")
    name = f"{ctx.resource_prefix}-client"
    by_kind = {}
    for document in rendered(config):
        by_kind.setdefault(document["kind"], []).append(document)
        assert document["metadata"]["namespace"] == "meshbench"
    cluster = by_kind["Cluster"][0]
    assert cluster["metadata"]["name"] == name
    assert cluster["metadata"]["labels"][manifests.LABEL_SLUG] == ctx.slug
    assert cluster["metadata"]["annotations"][manifests.ANNOTATION_RUN_ID] == ctx.run_id
    assert cluster["spec"]["clusterNetwork"]["pods"]["cidrBlocks"] == ["192.168.0.0/16"]
    assert cluster["spec"]["clusterNetwork"]["services"]["cidrBlocks"] == ["172.26.0.0/16"]
    assert (
        cluster["spec"]["infrastructureRef"]["name"]
        == by_kind["PacketCluster"][0]["metadata"]["name"]
    )
    control_plane = by_kind["KubeadmControlPlane"][0]
    assert cluster["spec"]["controlPlaneRef"]["name"] == control_plane["metadata"]["name"]
    assert control_plane["spec"]["version"] == "v1.28.3"
    assert control_plane["spec"]["replicas"] == 1
    packet = by_kind["PacketCluster"][0]["spec"]
    assert packet == {"projectID": "project-1234", "metro": "da", "vipManager": "CPEM"}
    templates = {
        t["metadata"]["name"]: t["spec"]["template"]["spec"]
        for t in by_kind["PacketMachineTemplate"]
    }
    assert set(templates) == {f"{name}-control-plane", f"{name}-worker-a"}
    for machine in templates.values():
        assert machine["machineType"] == "c3.medium.x86"
        assert machine["billingCycle"] == "hourly"
        assert machine["os"] == "ubuntu_20_04"
        assert machine["sshKeys"] == list(CREDENTIALS.ssh_keys)
    workers = by_kind["MachineDeployment"][0]["spec"]
    assert workers["replicas"] == 1 and workers["clusterName"] == name
    assert workers["template"]["spec"]["infrastructureRef"]["name"] == f"{name}-worker-a"
    assert workers["template"]["spec"]["bootstrap"]["configRef"]["name"] == f"{name}-worker-a"
    assert (
        workers["selector"]["matchLabels"].items()
        <= workers["template"]["metadata"]["labels"].items()
    )
    # No taints given: kubeadm keeps the control plane NoSchedule, workloads go to the worker.
    registration = control_plane["spec"]["kubeadmConfigSpec"]["initConfiguration"][
        "nodeRegistration"
    ]
    assert "taints" not in registration
    assert registration["kubeletExtraArgs"]["cloud-provider"] == "external"


def test_nodes_install_kubernetes_from_pkgs_k8s_io_and_cpem_drives_metallb(config) -> None:
    documents = rendered(config)
    text = yaml.safe_dump_all(documents)
    assert "apt.kubernetes.io" not in text and "packages.cloud.google.com" not in text
    control_plane = next(d for d in documents if d["kind"] == "KubeadmControlPlane")
    files = {f["path"]: f["content"] for f in control_plane["spec"]["kubeadmConfigSpec"]["files"]}
    bootstrap = files[manifests.BOOTSTRAP_SCRIPT]
    assert "https://pkgs.k8s.io/core:/stable:/v1.28/deb/" in bootstrap
    assert "/^1\\.28\\.3-/" in bootstrap  # the exact patch release is installed and held
    assert bootstrap.startswith("#!/bin/bash\nset -euo pipefail\n")
    cpem = files[manifests.CPEM_SCRIPT]
    assert '"loadbalancer":"metallb:///metallb-system?crdConfiguration=true"' in cpem
    assert "{{ .apiKey }}" in cpem and API_KEY not in text  # filled in by the provider
    assert "releases/download/v3.6.1/deployment.yaml" in cpem


def test_built_in_kinds_validate_strictly_against_the_kubernetes_schema(config) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    provider = CapiProvider(config, credentials=lambda: CREDENTIALS)
    namespace = provider._namespace()
    kubernetes_validate.validate(namespace, "1.28", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**namespace, "spec": {"bogus": 1}}, "1.28", strict=True)


def test_metallb_layer2_configuration_uses_the_crds(config) -> None:
    pools = manifests.metallb_l2_config(["10.0.0.240-10.0.0.250"])
    assert [p["kind"] for p in pools] == ["IPAddressPool", "L2Advertisement"]
    for document in pools:
        assert capi_fields.check(document) == []
    assert pools[1]["spec"]["ipAddressPools"] == [pools[0]["metadata"]["name"]]


def test_capi_settings_are_validated_with_field_paths() -> None:
    text = (load_config.__globals__["DEFAULT_CONFIG_PATH"]).read_text()
    document = yaml.safe_load(text)
    document["environments"]["capi"]["metallb_version"] = "v0.12.1"
    with pytest.raises(ConfigError, match=r"environments\.capi\.metallb_version: .*v0\.13\.0"):
        parse_config(yaml.safe_dump(document))
    document = yaml.safe_load(text)
    document["environments"]["capi"]["kubernetes_version"] = "1.28"
    with pytest.raises(ConfigError, match=r"environments\.capi\.kubernetes_version: .*'1\.28'"):
        parse_config(yaml.safe_dump(document))
    document = yaml.safe_load(text)
    document["environments"]["capi"]["metallb_mode"] = "l2"
    with pytest.raises(ConfigError, match="metallb_addresses"):
        parse_config(yaml.safe_dump(document))


# -- the plan -------------------------------------------------------------------------


def test_plan_lists_clusterctl_metallb_and_deletion_through_the_cluster_object(config) -> None:
    ctx = run_context(config, "capi")
    plan = get_backend(config, "capi", "baseline").plan(ctx)
    text = plan.render()
    assert (
        "clusterctl init --core cluster-api:v1.5.2 --bootstrap kubeadm:v1.5.2 --control-plane "
        "kubeadm:v1.5.2 --infrastructure packet:v0.7.2 --wait-providers" in text
    )
    assert f"PACKET_API_KEY={MASK}" in text
    for role in ("client", "server"):
        name = f"{ctx.resource_prefix}-{role}"
        assert f"clusterctl describe cluster {name} -n meshbench --show-conditions all" in text
        assert f"kubectl wait --for=condition=ControlPlaneInitialized cluster/{name}" in text
        assert f"kubectl delete cluster {name} -n meshbench" in text
        assert f"Secret meshbench/{name}-kubeconfig" in text
    assert "metallb/v0.15.2/config/manifests/metallb-native.yaml" in text
    assert "calico/v3.26.3/manifests/calico.yaml" in text
    assert "kubectl delete -f" not in text
    phases = [step.phase for step in plan.steps]
    assert phases.index("create_clusters") < phases.index("prepare_pair")
    assert phases[-1] == "estimate" and "ESTIMATE" in plan.steps[-1].detail
    assert any("Equinix Metal closed" in warning for warning in plan.warnings)


def test_plan_with_a_template_url_uses_clusterctl_generate(config) -> None:
    url = "https://example.test/cluster-template.yaml"
    config = with_environment(config, "capi", cluster_template=url)
    ctx = run_context(config, "capi")
    text = get_backend(config, "capi", "baseline").plan(ctx).render()
    assert (
        f"clusterctl generate cluster {ctx.resource_prefix}-client --kubernetes-version v1.28.3"
        in text
    )
    assert f"--from {url}" in text
    assert "METRO=da" in text and "WORKER_NODE_TYPE=c3.medium.x86" in text


def test_plan_for_layer2_metallb_applies_an_address_pool(config) -> None:
    config = with_environment(
        config,
        "capi",
        infrastructure_provider="hetzner",
        infrastructure_version="v1.0.0",
        credentials_env_var="HCLOUD_TOKEN",
        cluster_template="https://example.test/hetzner.yaml",
        metallb_mode="l2",
        metallb_addresses={"client": ["10.1.0.240/28"], "server": ["10.2.0.240/28"]},
    )
    text = get_backend(config, "capi", "baseline").plan(run_context(config, "capi")).render()
    assert "kind: IPAddressPool" in text and "- 10.1.0.240/28" in text and "- 10.2.0.240/28" in text
    assert "kind: L2Advertisement" in text
    assert "--infrastructure hetzner:v1.0.0" in text and f"HCLOUD_TOKEN={MASK}" in text
    assert "cloud-provider-equinix-metal" not in text


# -- the tasks against a simulated management cluster ---------------------------------


def test_create_prepare_delete_through_the_management_cluster(config) -> None:
    world = World()
    provider = make_provider(config, world)
    ctx = run_context(config, "capi")
    names = provider.cluster_names(ctx)

    created = provider.create(ctx)
    assert created["providers"] == "installed"
    init = world.commands("clusterctl")[0]
    assert init.cluster == MANAGEMENT and init.args[0] == "init"
    assert init.env["PACKET_API_KEY"] == API_KEY  # handed over in the environment only
    assert API_KEY not in init.logged
    applied = {(d["kind"], d["metadata"]["name"]) for d in world.management.applied}
    assert ("Cluster", names["client"]) in applied and ("Cluster", names["server"]) in applied
    cni = [c for c in world.commands("kubectl") if "calico.yaml" in " ".join(c.args)]
    assert sorted(call.cluster for call in cni) == sorted(names.values())
    assert all(not created["clusters"][role]["adopted"] for role in ("client", "server"))

    again = provider.create(ctx)  # a retry adopts, re-applying the same objects
    assert again["providers"] == "present"
    assert all(again["clusters"][role]["adopted"] for role in ("client", "server"))
    assert len(world.commands("clusterctl")) > 1  # describe only; init ran once
    assert [c.args[0] for c in world.commands("clusterctl")].count("init") == 1

    prepared = provider.prepare(ctx)
    assert prepared["metallb"] == "cpem-bgp"
    metallb = [c for c in world.commands("kubectl") if "metallb-native.yaml" in " ".join(c.args)]
    assert sorted(c.cluster for c in metallb) == sorted(names.values())
    restarts = [c for c in world.commands("kubectl") if "rollout" in c.args]
    assert len(restarts) == 2

    used = provider.delete(ctx)
    deleted = [(kind, name) for _, kind, _, name in world.deleted]
    assert deleted == [("Cluster", names["client"]), ("Cluster", names["server"])]
    assert world.management.list("cluster.x-k8s.io/v1beta1", "Cluster") == []
    assert used["complete"] is True and used["cluster_minutes"] >= 0
    assert set(used["clusters"]) == set(names.values())
    assert not any("delete" in c.args and "-f" in c.args for c in world.calls)


def test_workload_kubeconfig_comes_from_the_cluster_api_secret(config) -> None:
    world = World(providers_installed=True)
    provider = make_provider(config, world)
    ctx = run_context(config, "capi")
    access = provider.access(ctx, "server")
    from meshbench.kube.access import ClusterAccessError

    with pytest.raises(ClusterAccessError, match="does not exist yet"):
        access.kubeconfig()
    provider.create(ctx)
    document = access.kubeconfig()
    assert document["clusters"][0]["cluster"]["server"].startswith(
        f"https://{ctx.resource_prefix}-server."
    )
    assert "token" not in str(access.describe())


def test_other_provider_versions_on_the_management_cluster_stop_the_run(config) -> None:
    world = World()
    world.install_providers("v1.6.0", "packet", "v0.8.0")
    provider = make_provider(config, world)
    with pytest.raises(StepFailed, match="other provider versions"):
        provider.create(run_context(config, "capi"))
    assert world.commands("clusterctl") == []


def test_a_cluster_of_another_run_with_the_same_name_is_not_adopted(config) -> None:
    world = World(providers_installed=True)
    provider = make_provider(config, world)
    ctx = run_context(config, "capi")
    foreign = rendered(config)[0]
    foreign["metadata"]["labels"][manifests.LABEL_SLUG] = "someone"
    world.management.apply(foreign)
    with pytest.raises(StepFailed, match="not this run's"):
        provider.create(ctx)


def test_reaper_deletes_old_cluster_objects_and_keeps_fresh_ones(config) -> None:
    world = World(providers_installed=True)
    provider = make_provider(config, world)
    old = run_context(config, "capi", run_id="scheduled__2026-11-20T00:00:00+00:00")
    fresh = run_context(config, "capi")
    provider.create(old)
    provider.create(fresh)
    stale = isoformat(utcnow() - timedelta(days=2))
    for name in provider.cluster_names(old).values():
        key = ("cluster.x-k8s.io/v1beta1", "Cluster", "meshbench", name)
        world.management.objects[key]["metadata"]["annotations"][
            manifests.ANNOTATION_CREATED_AT
        ] = stale

    dry = reap(provider, dry_run=True)
    assert len(dry.to_delete) == 2 and world.deleted == []
    report = reap(provider, dry_run=False)
    gone = sorted(name for _, _, _, name in world.deleted)
    assert gone == sorted(provider.cluster_names(old).values())
    left = [
        c["metadata"]["name"] for c in world.management.list("cluster.x-k8s.io/v1beta1", "Cluster")
    ]
    assert sorted(left) == sorted(provider.cluster_names(fresh).values())
    assert all(result == "deleted" for result in report.outcome.values())


def test_secret_value_decodes_to_the_workload_kubeconfig(config) -> None:
    world = World(providers_installed=True)
    provider = make_provider(config, world)
    ctx = run_context(config, "capi")
    provider.create(ctx)
    name = provider.cluster_name(ctx, "client")
    secret = world.management.get("v1", "Secret", f"{name}-kubeconfig", "meshbench")
    decoded = yaml.safe_load(base64.b64decode(secret["data"]["value"]))
    assert decoded["current-context"] == name

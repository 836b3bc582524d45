"""A stand-in for a Cluster API management cluster and the workload clusters it makes.

No cluster exists on the build machines, so the capi provider runs against this: an
in-memory Kubernetes API per cluster (the ``KubeApi`` interface the kube layer uses) and a
``CommandRunner`` that records every kubectl/clusterctl call instead of running it. The
"controllers" here do the least a real management cluster would: applying a ``Cluster``
makes its conditions True and its ``<name>-kubeconfig`` Secret appear; ``clusterctl init``
registers the providers; MetalLB's manifest brings its pods. Clusters are told apart by
the API server URL in the kubeconfig a call is given, as a real kubectl would.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from meshbench.environments import capi_manifests as manifests
from meshbench.environments.capi import PROVIDER_API
from meshbench.kube.access import KubeconfigAccess
from meshbench.kube.redact import format_command
from meshbench.kube.runner import CommandResult, CommandRunner

MANAGEMENT_SERVER = "https://management.test:6443"


def kubeconfig_for(server: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {"token": f"token-of-{name}"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def _server_of(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    return document["clusters"][0]["cluster"]["server"]


def _ready(kind: str) -> list[dict[str, str]]:
    names = {
        "Cluster": ("ControlPlaneInitialized", "ControlPlaneReady", "InfrastructureReady", "Ready"),
        "MachineDeployment": ("Available", "Ready"),
    }[kind]
    return [{"type": name, "status": "True"} for name in names]


class FakeApi:
    """One cluster's objects, keyed by (apiVersion, kind, namespace, name)."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name
        self.objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []

    def server_version(self) -> str:
        return "v1.28.3"

    def apply(self, manifest: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        document = copy.deepcopy(dict(manifest))
        metadata = document.setdefault("metadata", {})
        key = (
            document["apiVersion"],
            document["kind"],
            metadata.get("namespace"),
            metadata["name"],
        )
        existing = self.objects.get(key)
        metadata["creationTimestamp"] = (
            existing["metadata"]["creationTimestamp"]
            if existing
            else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        if existing and "status" in existing:
            document.setdefault("status", existing["status"])
        self.objects[key] = document
        self.applied.append(copy.deepcopy(document))
        self.world.react(self, document)
        return copy.deepcopy(document)

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in (label_selector or "").split(",") if part)
        items = []
        for (version, item_kind, item_namespace, _), document in self.objects.items():
            if (version, item_kind) != (api_version, kind):
                continue
            if namespace is not None and item_namespace != namespace:
                continue
            labels = document["metadata"].get("labels") or {}
            if all(labels.get(key) == value for key, value in wanted.items()):
                items.append(copy.deepcopy(document))
        return items

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        self.world.deleted.append((self.name, kind, namespace, name))
        return self.objects.pop((api_version, kind, namespace, name), None) is not None


@dataclass(frozen=True)
class Call:
    cluster: str
    tool: str
    args: list[str]
    env: dict[str, str]
    logged: str  # the redacted command line the runner would log


@dataclass(frozen=True)
class FakeRunner(CommandRunner):
    world: Any = None

    def run(  # type: ignore[override]
        self,
        tool: str,
        args: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        check: bool = True,
        secrets: Sequence[str] = (),
        secret_output: bool = False,
    ) -> CommandResult:
        cluster = self.world.cluster_at(self.env.get("KUBECONFIG"))
        logged = format_command([tool, *args], (*self.secrets, *secrets))
        extra = {key: value for key, value in self.env.items() if key != "KUBECONFIG"}
        self.world.calls.append(Call(cluster, tool, list(args), extra, logged))
        output = self.world.simulate(cluster, tool, list(args), extra)
        return CommandResult(logged, 0, output, "", 0.0)


@dataclass
class World:
    """The management cluster and every workload cluster it has made."""

    namespace: str = "meshbench"
    providers_installed: bool = False
    calls: list[Call] = field(default_factory=list)
    deleted: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    apis: dict[str, FakeApi] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.apis["management"] = FakeApi(self, "management")
        if self.providers_installed:
            self.install_providers("v1.5.2", "packet", "v0.7.2")

    # -- wiring for the provider -------------------------------------------------------
    @property
    def management(self) -> FakeApi:
        return self.apis["management"]

    def management_access(self) -> KubeconfigAccess:
        return KubeconfigAccess(
            "management", kubeconfig_for(MANAGEMENT_SERVER, "management"), "test"
        )

    def api_factory(self, access: Any, path: str) -> FakeApi:
        return self.apis[self.cluster_at(path)]

    def runner(self) -> FakeRunner:
        return FakeRunner(world=self)

    def cluster_at(self, kubeconfig_path: str | None) -> str:
        if not kubeconfig_path:
            return "none"
        server = _server_of(kubeconfig_path)
        if server == MANAGEMENT_SERVER:
            return "management"
        return server.removeprefix("https://").split(".")[0]

    # -- the controllers ---------------------------------------------------------------
    def install_providers(self, core: str, infrastructure: str, version: str) -> None:
        for kind, name, release in (
            ("CoreProvider", "cluster-api", core),
            ("BootstrapProvider", "kubeadm", core),
            ("ControlPlaneProvider", "kubeadm", core),
            ("InfrastructureProvider", infrastructure, version),
        ):
            self.management.objects[(PROVIDER_API, "Provider", "x", f"{kind}-{name}")] = {
                "apiVersion": PROVIDER_API,
                "kind": "Provider",
                "metadata": {"name": f"{kind}-{name}", "namespace": "x"},
                "type": kind,
                "providerName": name,
                "version": release,
            }

    def react(self, api: FakeApi, document: dict[str, Any]) -> None:
        if api.name != "management":
            return
        kind = document["kind"]
        if kind in ("Cluster", "MachineDeployment"):
            document["status"] = {"conditions": _ready(kind)}
        if kind == "Cluster":
            name = document["metadata"]["name"]
            namespace = document["metadata"]["namespace"]
            config = kubeconfig_for(f"https://{name}.test:6443", name)
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-kubeconfig", "namespace": namespace},
                "data": {"value": base64.b64encode(yaml.safe_dump(config).encode()).decode()},
            }
            api.objects[("v1", "Secret", namespace, f"{name}-kubeconfig")] = secret
            workload = self.apis.setdefault(name, FakeApi(self, name))
            for node in ("control-plane", "worker"):
                workload.objects[("v1", "Node", None, f"{name}-{node}")] = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": f"{name}-{node}"},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }

    def simulate(self, cluster: str, tool: str, args: list[str], env: dict[str, str]) -> str:
        if tool == "clusterctl" and args[:1] == ["init"]:
            core = args[args.index("--core") + 1].split(":")[1]
            name, version = args[args.index("--infrastructure") + 1].split(":")
            self.install_providers(core, name, version)
        elif tool == "kubectl" and "metallb-native.yaml" in " ".join(args):
            api = self.apis[cluster]
            for pod in ("controller", "speaker-a", "speaker-b"):
                api.objects[("v1", "Pod", manifests.METALLB_NAMESPACE, pod)] = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod,
                        "namespace": manifests.METALLB_NAMESPACE,
                        "labels": {"app": "metallb"},
                    },
                    "status": {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
        elif tool == "kubectl" and "rollout" in args:
            api = self.apis[cluster]
            api.objects[
                ("apps/v1", "Deployment", "kube-system", "cloud-provider-equinix-metal")
            ] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "cloud-provider-equinix-metal",
                    "namespace": "kube-system",
                    "generation": 2,
                },
                "spec": {"replicas": 1},
                "status": {
                    "observedGeneration": 2,
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                    "conditions": [{"type": "Available", "status": "True"}],
                },
            }
        return ""

    # -- what the tests look at ----------------------------------------------------------
    def commands(self, tool: str | None = None) -> list[Call]:
        return [call for call in self.calls if tool is None or call.tool == tool]

"""Plans for the three meshes, and fake clusters to run their steps against.

There is no cluster and no mesh CLI on the build machines. The Kubernetes API is faked
in-process (``FakeKubeApi``); ``istioctl`` and ``helm`` are a small stand-in program run as
a real subprocess through the real ``CommandRunner`` with a real 0600 kubeconfig per
cluster, so the tests see which cluster each CLI call went to.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshbench.backend import Plan, RunContext, Step
from meshbench.cli.plan import placeholder_context
from meshbench.config import BenchmarkConfig, load_config
from meshbench.kube.access import KubeconfigAccess
from meshbench.kube.cluster import Clusters
from meshbench.kube.runner import CommandRunner
from meshbench.registry import get_backend
from meshbench.testing import fake_kubectl
from meshbench.testing.fake_kube import FakeKubeApi

MESHES = ("istio", "kuma", "nsm")
ROOT = Path(__file__).parents[2]

# Kinds the fake API server serves on top of its built-ins: what the meshes touch.
EXTRA_KINDS = {
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): False,
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): False,
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"): False,
    ("networking.istio.io/v1alpha3", "Gateway"): True,
    ("networking.istio.io/v1", "Gateway"): True,
    ("spire.spiffe.io/v1alpha1", "ClusterSPIFFEID"): False,
}

# A stand-in for istioctl and helm. It appends every call (argv and the current context
# of the kubeconfig it was given) to $FAKE_CLI_LOG and answers the few calls whose output
# the installers read.
FAKE_CLI = r"""
import json, os, sys, yaml
argv = sys.argv[1:]
tool = os.path.basename(sys.argv[0]).split(".")[0]
context = None
if os.environ.get("KUBECONFIG"):
    with open(os.environ["KUBECONFIG"]) as handle:
        context = (yaml.safe_load(handle) or {}).get("current-context")
files = {}
for arg in argv:
    if os.path.isfile(arg) and arg != os.environ.get("KUBECONFIG"):
        files[os.path.basename(arg)] = open(arg).read()
with open(os.environ["FAKE_CLI_LOG"], "a") as handle:
    entry = {"tool": tool, "argv": argv, "context": context, "files": files}
    handle.write(json.dumps(entry) + "\n")
if argv[:1] == ["version"]:
    print("client version: " + os.environ.get("FAKE_ISTIO_VERSION", "1.19.3"))
elif argv[:1] == ["create-remote-secret"]:
    name = [a.split("=", 1)[1] for a in argv if a.startswith("--name=")][0]
    print(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "istio-remote-secret-" + name, "namespace": "istio-system",
                     "labels": {"istio/multiCluster": "true"},
                     "annotations": {"networking.istio.io/cluster": name}},
        "stringData": {name: "kubeconfig of context " + str(context)},
    }))
elif argv[:1] == ["remote-clusters"]:
    print("NAME     SECRET                                       STATUS     ISTIOD")
    for name in os.environ.get("FAKE_REMOTE_CLUSTERS", "").split(","):
        if name:
            print(f"{name}   istio-system/istio-remote-secret-{name}   synced     istiod-1")
elif argv[:1] == ["proxy-config"]:
    address, port = os.environ["FAKE_ENDPOINT"].rsplit(":", 1)
    print(json.dumps([{"name": argv[argv.index("--cluster") + 1], "hostStatuses": [
        {"address": {"socketAddress": {"address": address, "portValue": int(port)}}}]}]))
elif argv[:1] == ["template"]:
    sys.stdout.write(open(os.environ["FAKE_HELM_TEMPLATE"]).read())
sys.exit(int(os.environ.get("FAKE_CLI_EXIT", "0")))
"""


def install_fake_cli(folder: Path, tool: str) -> str:
    program = folder / f"{tool}.py"
    program.write_text(FAKE_CLI)
    wrapper = folder / tool
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{program}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def kubeconfig(context: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "bench", "user": {"token": "fake-token-not-a-secret"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": "bench"}}],
        "current-context": context,
    }


@dataclass
class FakePair:
    apis: dict[str, FakeKubeApi]
    runner: CommandRunner
    log: Path

    def clusters(self) -> Clusters:
        accesses = {
            role: KubeconfigAccess(role, kubeconfig(f"{role}-ctx"), "test") for role in self.apis
        }
        return Clusters(
            accesses, self.runner, lambda access, path: self.apis[access.role], poll_interval=0.01
        )

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e for e in entries if tool is None or e["tool"] == tool]


@pytest.fixture
def fake_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePair]:
    log = tmp_path / "cli.jsonl"
    monkeypatch.setenv("FAKE_CLI_LOG", str(log))
    # Distinct load balancer addresses, so a test sees which cluster's address was used.
    apis = {
        role: FakeKubeApi(
            role, lb_after=1, terminating_reads=1, extra_kinds=EXTRA_KINDS, lb_address=address
        )
        for role, address in (("client", "198.18.0.11"), ("server", "198.18.0.22"))
    }
    for api in apis.values():
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
    executables = {tool: install_fake_cli(tmp_path, tool) for tool in ("istioctl", "helm")}
    executables["kubectl"] = fake_kubectl.install(tmp_path)
    runner = CommandRunner(executables=executables, default_timeout=60)
    yield FakePair(apis, runner, log)


# ------------------------------------------------------------------------ plans


def config_with(**changes: Any) -> BenchmarkConfig:
    """The packaged configuration with the existing environment changed."""
    document = yaml.safe_load((ROOT / "include/meshbench/benchmarks.yaml").read_text())
    document["environments"]["existing"].update(changes)
    from meshbench.config import BenchmarkConfig as Model

    return Model.model_validate(document)


def config_with_mesh(
    mesh: str, existing: dict[str, Any] | None = None, **changes: Any
) -> BenchmarkConfig:
    """The packaged configuration with settings of ``meshes.<mesh>`` (and of the existing
    environment) changed."""
    document = yaml.safe_load((ROOT / "include/meshbench/benchmarks.yaml").read_text())
    document["meshes"][mesh].update(changes)
    document["environments"]["existing"].update(existing or {})
    return BenchmarkConfig.model_validate(document)


def context(config: BenchmarkConfig, mesh: str, environment: str = "existing") -> RunContext:
    return placeholder_context(config, environment, mesh)


def plan_of(mesh: str, config: BenchmarkConfig | None = None) -> Plan:
    config = config or load_config()
    return get_backend(config, "existing", mesh).plan(context(config, mesh))


def index_of(steps: list[Step], predicate) -> int:
    for number, step in enumerate(steps):
        if predicate(step):
            return number
    raise AssertionError("no step matches")


def documents(text: str) -> list[dict[str, Any]]:
    """The mappings in a step detail or CLI file (comments and prose lines skipped)."""
    try:
        found = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []
    return [d for d in found if isinstance(d, dict)]

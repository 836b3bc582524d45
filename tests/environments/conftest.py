"""Two fake clusters behind real Airflow connections, a fake kubectl and a fake Fortio.

The Kubernetes API is the only thing faked in-process (there is no cluster here): the
Airflow connections, the KubernetesHook, the kubeconfig files, the CLI runner, the
port-forward subprocess handling, the Fortio REST client and the sampling code are real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshbench.backend import RunContext
from meshbench.config import LoadProfile, MetricsServerSettings, ResourceCostSettings, load_config
from meshbench.environments.existing import ExistingClusters
from meshbench.environments.kubernetes import KubernetesBackend
from meshbench.kube.runner import CommandRunner
from meshbench.meshes import get_installer
from meshbench.meshes.base import MeshInstaller
from meshbench.testing import fake_kubectl
from meshbench.testing.fake_fortio import FakeFortio
from meshbench.testing.fake_kube import FakeKubeApi

SEED = Path(__file__).parents[1] / "data" / "seed-results" / "equinix-metal-2023-11-16"
# A credential that must never show up in anything a task returns or logs.
TOKEN = "meshbench-test-token-0123456789abcdef"

KUBECONFIG = f"""
apiVersion: v1
kind: Config
clusters:
- name: one
  cluster: {{server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}
- name: two
  cluster: {{server: "https://127.0.0.1:6444", insecure-skip-tls-verify: true}}
users:
- name: bench
  user: {{token: "{TOKEN}"}}
contexts:
- name: client-ctx
  context: {{cluster: one, user: bench}}
- name: server-ctx
  context: {{cluster: two, user: bench}}
current-context: server-ctx
"""


def seed_documents(mesh_folder: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted((SEED / mesh_folder).glob("*.json"))]


@pytest.fixture(scope="session")
def study_results() -> list[dict]:
    return seed_documents("imp")


@dataclass
class World:
    backend: KubernetesBackend
    ctx: RunContext
    apis: dict[str, FakeKubeApi]
    fortio: FakeFortio
    kubectl_log: Path

    def kubectl_calls(self) -> list[dict]:
        if not self.kubectl_log.exists():
            return []
        return [json.loads(line) for line in self.kubectl_log.read_text().splitlines()]


def connection(context: str) -> str:
    return json.dumps(
        {
            "conn_type": "kubernetes",
            "extra": {"kube_config": KUBECONFIG, "cluster_context": context},
        }
    )


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, study_results: list[dict], request
) -> Iterator[World]:
    """``request.param`` may give: ``client``/``server`` (FakeKubeApi options),
    ``run_seconds``, ``installer`` (config -> MeshInstaller, default the baseline's) and
    ``results_by_url`` (FakeFortio's)."""
    options = getattr(request, "param", {}) or {}
    monkeypatch.setenv("AIRFLOW_CONN_MESHBENCH_CLIENT_CLUSTER", connection("client-ctx"))
    monkeypatch.setenv("AIRFLOW_CONN_MESHBENCH_SERVER_CLUSTER", connection("server-ctx"))
    log = tmp_path / "kubectl.jsonl"
    monkeypatch.setenv("MESHBENCH_FAKE_KUBECTL_LOG", str(log))
    apis = {
        "client": FakeKubeApi("client", **options.get("client", {})),
        "server": FakeKubeApi("server", **options.get("server", {})),
    }
    config = load_config()
    load = LoadProfile(
        qps=6000,
        connections=1,
        duration=0.4,
        warmup_duration=0.2,
        runs_per_iteration=2,
        iterations=2,
        min_positive=0,
    )
    installer: MeshInstaller = options.get("installer", lambda c: get_installer(c, "baseline"))(
        config
    )
    ctx = RunContext(
        config=config,
        environment="existing",
        mesh=installer.name,
        dag_id=f"meshbench_existing_{installer.name}",
        run_id="manual__2026-11-26T08:00:00+00:00",
        load=load,
    )
    runner = CommandRunner(executables={"kubectl": fake_kubectl.install(tmp_path)})
    api_factory = lambda access, kubeconfig_path: apis[access.role]  # noqa: E731
    backend = KubernetesBackend(
        config,
        ExistingClusters(config, runner=runner, api_factory=api_factory),
        installer,
        runner=runner,
        api_factory=api_factory,
        metrics_server=MetricsServerSettings(sample_interval=0.05),
        resource_cost=ResourceCostSettings(idle_seconds=0.05, fresh_stats_timeout=2),
        poll_interval=0.01,
        probe_interval=0.05,
        fortio_poll_interval=0.05,
        fortio_grace=3.0,
    )
    with FakeFortio(
        study_results,
        run_seconds=options.get("run_seconds", 0.4),
        results_by_url=options.get("results_by_url"),
    ) as fortio:
        monkeypatch.setenv("MESHBENCH_FAKE_FORWARD_TO", f"127.0.0.1:{fortio.port}")
        yield World(backend, ctx, apis, fortio, log)

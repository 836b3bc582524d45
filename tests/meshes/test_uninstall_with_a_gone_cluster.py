"""uninstall_mesh when one cluster is gone: its ops are built without asking the environment
anything (on aws, the load-balancer settings need the other cluster's nodes), and the
reachable cluster's teardown runs in full while the unreachable one's steps fail alone."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pytest

from meshbench.backend import RunContext, StepFailed
from meshbench.config import load_config
from meshbench.kube.access import ClusterAccessError, KubeconfigAccess
from meshbench.kube.cluster import Clusters
from meshbench.kube.load_balancers import LoadBalancerPolicy
from meshbench.kube.ops import run_ops
from meshbench.meshes.common import ComponentMeshInstaller
from meshbench.meshes.istio import IstioInstaller
from meshbench.meshes.kuma import KumaInstaller

from .conftest import FakePair, context, kubeconfig

CONFIG = load_config()
GONE = "client"


class UnreachableAccess(KubeconfigAccess):
    def open(self) -> contextlib.AbstractContextManager[str]:
        raise ClusterAccessError(f"{self.role} cluster: the API server does not answer")


def peer_nodes_gone(
    ctx: RunContext, role: str, clients: Sequence[str] | None = None
) -> LoadBalancerPolicy:
    """What the aws environment answers once the other cluster's nodes are gone."""
    raise StepFailed("EKS cluster mb-test-client has no running nodes")


def one_cluster_gone(pair: FakePair) -> Clusters:
    accesses = {
        role: (UnreachableAccess if role == GONE else KubeconfigAccess)(
            role, kubeconfig(f"{role}-ctx"), "test"
        )
        for role in pair.apis
    }
    return Clusters(accesses, pair.runner, lambda access, path: pair.apis[access.role], 0.01)


def short_timeouts(installer: ComponentMeshInstaller) -> ComponentMeshInstaller:
    installer.timeouts = installer.timeouts.model_copy(
        update={name: 2.0 for name in ("rollout", "load_balancer", "namespace_deletion")}
    )
    return installer


def uninstall_with_the_client_gone(
    installer: ComponentMeshInstaller, ctx: RunContext, pair: FakePair
) -> str:
    installer.use_load_balancer_policy(peer_nodes_gone)
    ops = installer.uninstall_ops(ctx, 1)  # builds although the environment cannot answer
    with one_cluster_gone(pair) as clusters, pytest.raises(StepFailed) as failed:
        run_ops(ops, clusters)
    message = str(failed.value)
    assert message.startswith("teardown: fail if any step above failed")
    failures = message.split(" teardown step(s) failed: ", 1)[1].split(" | ")
    client_steps = [op for op in ops if op.step.cluster == GONE]
    assert len(failures) == len(client_steps)
    assert all(f"[{GONE}]: " in failure for failure in failures)
    return message


def test_istio_uninstall_runs_in_the_cluster_that_is_still_there(fake_pair: FakePair) -> None:
    installer = short_timeouts(IstioInstaller(CONFIG))
    ctx = context(CONFIG, "istio")
    with fake_pair.clusters() as clusters:
        run_ops(installer.install_ops(ctx, 1), clusters)
    server = fake_pair.apis["server"]
    assert ("v1", "Namespace", None, "istio-system") in server.objects

    uninstall_with_the_client_gone(installer, ctx, fake_pair)

    assert ("v1", "Namespace", None, "istio-system") not in server.objects
    assert ("v1", "Namespace", None, "istio-system") in fake_pair.apis[GONE].objects
    purges = [call for call in fake_pair.calls("istioctl") if call["argv"][:1] == ["uninstall"]]
    assert [call["context"] for call in purges] == ["server-ctx"]


def test_kuma_uninstall_runs_in_the_cluster_that_is_still_there(fake_pair: FakePair) -> None:
    installer = short_timeouts(KumaInstaller(CONFIG))
    ctx = context(CONFIG, "kuma")
    inventory = next(c for c in installer.components(ctx, 1) if c.name == "inventory")
    with fake_pair.clusters() as clusters:
        run_ops(inventory.install, clusters)

    uninstall_with_the_client_gone(installer, ctx, fake_pair)

    helm = [call for call in fake_pair.calls("helm") if call["argv"][:1] == ["uninstall"]]
    assert [call["context"] for call in helm] == ["server-ctx"]


@pytest.mark.parametrize("installer_type", [IstioInstaller, KumaInstaller])
def test_building_the_uninstall_asks_the_environment_nothing(installer_type) -> None:
    installer = installer_type(CONFIG)
    installer.use_load_balancer_policy(peer_nodes_gone)
    ctx = context(CONFIG, installer.name)
    assert installer.uninstall_ops(ctx, 1)
    assert installer.cleanup_pair_ops(ctx)
    with pytest.raises(StepFailed, match="no running nodes"):
        installer.install_ops(ctx, 1)

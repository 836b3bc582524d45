"""The aws plan is what an aws run does: create_clusters, prepare_pair and delete_clusters,
run against moto, carry out exactly the steps ``meshbench plan`` lists for them, in order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from meshbench.backend import Step
from meshbench.environments.aws import AwsProvider
from meshbench.kube.access import ClusterAccess
from meshbench.testing.fake_kube import FakeKubeApi
from tests.cloud.conftest import run_context
from tests.cloud.test_aws_moto import fake_cluster_security_group, fake_nodes

NODE = ("v1", "Node")


def as_run_reports_them(steps: Sequence[Step]) -> list[str]:
    """The plan's steps as ``run_ops`` records each one it carried out."""
    return [
        f"{step.description} [{step.cluster}]" if step.cluster else step.description
        for step in steps
    ]


def add_ready_node(api: FakeKubeApi, name: str) -> None:
    api.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    # A kubelet reports status; an apply never sets it.
    api.objects[(*NODE, None, name)]["status"] = {
        "conditions": [{"type": "Ready", "status": "True"}]
    }


@pytest.mark.parametrize("mesh", ["baseline", "nsm"])
def test_an_aws_run_carries_out_the_steps_of_its_plan(moto, aws_config, mesh: str) -> None:
    # EKS clusters in moto have no Kubernetes API behind them: each one's is a fake with
    # its Ready node.
    apis = {role: FakeKubeApi(role, extra_kinds={NODE: False}) for role in ("client", "server")}
    for role, api in apis.items():
        add_ready_node(api, f"{role}-node-1")

    def api_factory(access: ClusterAccess, kubeconfig_path: str) -> FakeKubeApi:
        return apis[access.role]

    provider = AwsProvider(aws_config, api_factory=api_factory)
    ctx = run_context(aws_config, "aws", mesh)

    created = provider.create(ctx)
    assert created["steps"] == as_run_reports_them(provider.plan_create(ctx))

    names = provider.cluster_names(ctx)
    for name in names.values():
        fake_nodes(moto, provider, name)
        fake_cluster_security_group(moto, provider, name)
    prepared = provider.prepare(ctx)
    assert prepared["steps"] == as_run_reports_them(provider.plan_prepare(ctx))
    assert prepared["nodes_ready"] == {"client": 1, "server": 1}
    assert set(prepared["rules"]) == ({"client", "server"} if mesh == "nsm" else set())

    deleted = provider.delete(ctx)
    assert deleted["steps"] == as_run_reports_them(provider.plan_delete(ctx))
    assert deleted["deleted"] == {name: "deleted" for name in names.values()}

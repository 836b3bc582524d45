"""The reaper against moto: a leaked cluster goes, a fresh one stays, the shared network
stays, and every decision carries its reason."""

from __future__ import annotations

from datetime import timedelta

import pytest

from meshbench.environments.aws import TAG_CREATED_AT, TAG_KEEP, TAG_MANAGED, AwsProvider
from meshbench.environments.provider import isoformat, utcnow
from meshbench.environments.reaper import reap
from tests.cloud.conftest import run_context

LEAKED_RUN = "scheduled__2026-11-25T00:00:00+00:00"
FRESH_RUN = "scheduled__2026-11-26T00:00:00+00:00"
EMPTY_TEMPLATE = '{"Resources": {"Handle": {"Type": "AWS::SNS::Topic"}}}'


@pytest.fixture
def world(moto, aws_config):
    """Two runs' clusters (one 10 h old), a leaked stack, an orphaned load balancer and a
    cluster that is not meshbench's."""
    provider = AwsProvider(aws_config)
    leaked = run_context(aws_config, "aws", run_id=LEAKED_RUN)
    fresh = run_context(aws_config, "aws", run_id=FRESH_RUN)
    provider.create(leaked)
    provider.create(fresh)
    eks = moto.client("eks")
    old = isoformat(utcnow() - timedelta(hours=10))
    for name in provider.cluster_names(leaked).values():
        arn = eks.describe_cluster(name=name)["cluster"]["arn"]
        eks.tag_resource(resourceArn=arn, tags={TAG_CREATED_AT: old})

    network = provider.describe_network()
    eks.create_cluster(
        name="someone-elses",
        roleArn=network.cluster_role_arn,
        resourcesVpcConfig={"subnetIds": list(network.public_subnets)},
    )
    moto.client("cloudformation").create_stack(
        StackName="mb-leaked-stack",
        TemplateBody=EMPTY_TEMPLATE,
        Tags=[{"Key": TAG_MANAGED, "Value": "true"}, {"Key": TAG_CREATED_AT, "Value": old}],
    )
    moto.client("elb").create_load_balancer(
        LoadBalancerName="orphan",
        Listeners=[{"Protocol": "TCP", "LoadBalancerPort": 80, "InstancePort": 30080}],
        Subnets=[network.public_subnets[0]],
        Tags=[{"Key": "kubernetes.io/cluster/mb-0ldrun00-server", "Value": "owned"}],
    )
    return provider, leaked, fresh


def clusters(moto) -> set[str]:
    return set(moto.client("eks").list_clusters()["clusters"])


def test_dry_run_judges_everything_and_deletes_nothing(moto, world) -> None:
    provider, leaked, fresh = world
    before = clusters(moto)
    report = reap(provider, dry_run=True)
    assert clusters(moto) == before
    verdicts = {(v.leftover.kind, v.leftover.name): v for v in report.verdicts}
    for name in provider.cluster_names(leaked).values():
        verdict = verdicts[("eks-cluster", name)]
        assert verdict.delete and "older than the TTL of 8h00m" in verdict.reason
        nodegroup = verdicts[("eks-nodegroup", f"{name}-nodes")]
        assert nodegroup.delete and nodegroup.reason.startswith("goes with its cluster")
    for name in provider.cluster_names(fresh).values():
        verdict = verdicts[("eks-cluster", name)]
        assert not verdict.delete and verdict.reason.startswith("fresh:")
    assert not verdicts[("cloudformation-stack", "meshbench-network")].delete
    assert "keep" in verdicts[("cloudformation-stack", "meshbench-network")].reason
    assert verdicts[("cloudformation-stack", "mb-leaked-stack")].delete
    orphan = verdicts[("load-balancer", "orphan")]
    assert orphan.delete and "mb-0ldrun00-server is gone" in orphan.reason
    assert not any(v.leftover.name == "someone-elses" for v in report.verdicts)
    items = report.as_dict()["items"]
    assert {item["result"] for item in items} == {"would delete", "kept"}


def test_reaper_removes_the_leaked_cluster_and_spares_the_fresh_one(moto, world) -> None:
    provider, leaked, fresh = world
    report = reap(provider, dry_run=False)

    remaining = clusters(moto)
    assert remaining == {*provider.cluster_names(fresh).values(), "someone-elses"}
    assert report.failures == {}
    for name in provider.cluster_names(leaked).values():
        assert report.outcome[f"eks-cluster {name}"] == "deleted"
    stacks = {
        stack["StackName"]: {tag["Key"]: tag["Value"] for tag in stack.get("Tags", [])}
        for stack in moto.client("cloudformation").describe_stacks()["Stacks"]
        if stack["StackStatus"] != "DELETE_COMPLETE"
    }
    assert set(stacks) == {"meshbench-network"} and stacks["meshbench-network"][TAG_KEEP] == "true"
    assert moto.client("elb").describe_load_balancers()["LoadBalancerDescriptions"] == []
    # The fresh run goes on undisturbed: a second pass finds nothing more to do.
    again = reap(provider, dry_run=False)
    assert again.to_delete == [] and again.outcome == {}


def test_clusters_of_a_finished_dag_run_go_even_when_young(moto, world) -> None:
    provider, _leaked, fresh = world
    states = {("meshbench_aws_baseline", FRESH_RUN): "failed"}
    report = reap(provider, dry_run=False, run_state=lambda dag, run: states.get((dag, run)))
    verdicts = {v.leftover.name: v for v in report.verdicts if v.leftover.kind == "eks-cluster"}
    for name in provider.cluster_names(fresh).values():
        assert verdicts[name].delete
        assert verdicts[name].reason == (
            f"its DAG run meshbench_aws_baseline/{FRESH_RUN} is failed, so its teardown already ran"
        )
    assert clusters(moto) == {"someone-elses"}


def test_a_running_dag_run_keeps_its_clusters_and_lookup_errors_fall_back_to_age(
    moto, world
) -> None:
    provider, leaked, fresh = world

    def lookup(dag_id: str, run_id: str) -> str:
        if run_id == LEAKED_RUN:
            raise RuntimeError("DAG run not found")
        return "running"

    report = reap(provider, dry_run=True, run_state=lookup)
    verdicts = {v.leftover.name: v for v in report.verdicts if v.leftover.kind == "eks-cluster"}
    for name in provider.cluster_names(fresh).values():
        assert not verdicts[name].delete and "is running" in verdicts[name].reason
    for name in provider.cluster_names(leaked).values():
        assert verdicts[name].delete and "older than the TTL" in verdicts[name].reason

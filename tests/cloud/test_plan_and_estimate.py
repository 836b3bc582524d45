"""`meshbench plan` for the cloud environments (no cloud is touched), the security-group
rules in it, `meshbench estimate` and `meshbench reap` from the command line."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from meshbench.backend import StepFailed
from meshbench.cli import main
from meshbench.config import load_config
from meshbench.environments.aws import AwsProvider, ip_permissions, node_rules
from meshbench.environments.estimate import estimate_dag, estimate_environment
from tests.cloud.conftest import AWS_CONN_ID, run_context, with_environment


@pytest.fixture
def no_network(monkeypatch):
    """Planning must not reach any cloud: refuse every outgoing connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while planning: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_meshbench_plan_prints_the_whole_aws_run(capsys, no_network) -> None:
    assert main(["plan", "--env", "aws", "--mesh", "baseline"]) == 0
    text = capsys.readouterr().out
    names = re.findall(r"Create EKS cluster (mb-[a-z0-9]+-(?:client|server))", text)
    assert len(names) == 2 and names[0].endswith("-client") and names[1].endswith("-server")
    prefix = names[0].removesuffix("-client")
    expected_in_order = [
        "Use the shared network stack meshbench-network",
        f"Create EKS cluster {prefix}-client",
        f"Create EKS cluster {prefix}-server",
        "Wait until both clusters are ACTIVE",
        f"Create managed node group {prefix}-client-nodes: 1 x m5.2xlarge, "
        "AL2023_x86_64_STANDARD, ON_DEMAND",
        "Wait until both node groups are ACTIVE",
        "EksHook.generate_config_file_with_credentials",
        "No node-to-node security-group rules: baseline crosses",
        f"reachable from {prefix}-client's node addresses only",
        "metrics API answers",
        "iteration_01.deploy_workloads",
        "iteration_01.measured_01",
        "iteration_01.uninstall_mesh",
        "Wait up to 900s for the load balancers",
        "Delete the node groups of both clusters",
        f"Delete both clusters ({prefix}-client, {prefix}-server)",
        "Keep the shared network stack meshbench-network",
        "ESTIMATE",
    ]
    positions = [text.index(fragment) for fragment in expected_in_order]
    assert positions == sorted(positions)
    assert '"version": "1.35"' in text
    assert '"authenticationMode": "API"' in text
    assert "service.beta.kubernetes.io/aws-load-balancer-scheme: internet-facing" in text
    assert f"- <public IPv4 of each node of {prefix}-client>/32" in text  # nginx Service
    assert "0.0.0.0/0" not in text


def test_nsm_security_group_rules_in_the_plan_come_from_the_peer_only() -> None:
    config = load_config()
    provider = AwsProvider(config)
    ctx = run_context(config, "aws", "nsm")
    steps = [
        s for s in provider.plan_prepare(ctx) if "authorize_security_group_ingress" in s.detail
    ]
    assert [step.cluster for step in steps] == ["client", "server"]
    for step in steps:
        peer = ctx.resource_prefix + ("-server" if step.cluster == "client" else "-client")
        body = step.detail.split("IpPermissions=", 1)[1].split(")\nInvalidPermission", 1)[0]
        permissions = json.loads(body)
        assert permissions == [
            {
                "IpProtocol": "udp",
                "FromPort": 51820,
                "ToPort": 51820,
                "IpRanges": [{"CidrIp": f"<public IPv4 of each node of {peer}>/32"}],
            }
        ]
        assert "0.0.0.0/0" not in step.detail
        assert f"to {peer}'s nodes only" in step.description


def test_rules_per_mesh_and_no_open_world() -> None:
    assert [rule.label() for rule in node_rules("nsm")] == ["udp/51820"]
    assert [rule.label() for rule in node_rules("nsm", "ipsec")] == ["udp/4500", "udp/500"]
    for mesh in ("baseline", "istio", "kuma"):
        assert node_rules(mesh) == ()
    with pytest.raises(StepFailed, match="refusing"):
        ip_permissions(node_rules("nsm"), ["0.0.0.0/0"], "test")
    allowed = ip_permissions(node_rules("nsm"), ["203.0.113.7/32"], "test")
    assert allowed[0]["IpRanges"][0]["CidrIp"] == "203.0.113.7/32"


def test_estimate_is_the_sum_of_its_parts_at_the_configured_prices() -> None:
    config = load_config()
    aws = config.environments.aws
    load = config.load_profile_for("aws")
    estimate = estimate_dag(config, "aws", "istio")
    t = aws.timings
    run = (load.duration + t.run_overhead_seconds) / 60
    warmup = (load.effective_warmup_duration + t.run_overhead_seconds) / 60
    # Each measured run follows a paired no-mesh run on the same clusters.
    assert config.paired_baseline("aws", "istio")
    iteration = (
        t.mesh_install_minutes["istio"]
        + t.workload_minutes
        + warmup
        + 2 * load.runs_per_iteration * run
        + t.uninstall_minutes
    )
    minutes = t.create_minutes + t.prepare_minutes + load.iterations * iteration + t.delete_minutes
    assert estimate.minutes == pytest.approx(minutes)
    hours = minutes / 60
    lb_hours = load.iterations * (iteration - t.uninstall_minutes) / 60
    expected = (
        2 * hours * aws.prices.cluster_hour
        + 2 * aws.node_count * hours * aws.prices.node_hour
        + aws.load_balancers_per_mesh["istio"] * lb_hours * aws.prices.load_balancer_hour
    )
    assert estimate.cost_usd == pytest.approx(expected)

    doubled = with_environment(
        config, "aws", prices=aws.prices.model_copy(update={"node_hour": 2 * aws.prices.node_hour})
    )
    assert estimate_dag(doubled, "aws", "istio").cost_usd > estimate.cost_usd

    matrix = estimate_environment(config, "aws")
    assert [dag.mesh for dag in matrix.dags] == aws.meshes
    assert matrix.cost_usd == pytest.approx(sum(dag.cost_usd for dag in matrix.dags))
    assert matrix.cost_per_month == pytest.approx(matrix.cost_usd * 30)
    assert matrix.wall_minutes == pytest.approx(
        max(max(d.minutes for d in matrix.dags), matrix.busy_minutes / aws.pool.slots)
    )
    capi = estimate_dag(config, "capi", "baseline")
    # The baseline is its own no-mesh path: it has no paired runs.
    assert not config.paired_baseline("capi", "baseline")
    capi_load, ct = config.load_profile_for("capi"), config.environments.capi.timings
    capi_iteration = (
        ct.mesh_install_minutes["baseline"]
        + ct.workload_minutes
        + (capi_load.effective_warmup_duration + ct.run_overhead_seconds) / 60
        + capi_load.runs_per_iteration * (capi_load.duration + ct.run_overhead_seconds) / 60
        + ct.uninstall_minutes
    )
    assert capi.breakdown["iterations"] == pytest.approx(capi_load.iterations * capi_iteration)
    assert capi.cost_usd == pytest.approx(2 * 2 * capi.minutes / 60 * 1.50)
    assert estimate_dag(config, "existing", "baseline").cost_usd is None


def test_meshbench_estimate_prints_every_environment(capsys) -> None:
    assert main(["estimate"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ESTIMATES from config prices")
    for environment in ("local", "existing", "aws", "capi"):
        assert f"\n{environment} (" in text
    assert "meshbench_aws_nsm" in text and "per month at @daily" in text
    assert main(["estimate", "--env", "aws", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document[0]["environment"] == "aws" and document[0]["cost_usd_per_matrix"] > 0


def test_meshbench_reap_dry_run_from_the_shell(moto, aws_config, tmp_path, capsys) -> None:
    from meshbench.environments.aws import TAG_CREATED_AT
    from meshbench.environments.provider import isoformat, utcnow

    provider = AwsProvider(aws_config)
    ctx = run_context(aws_config, "aws")
    provider.create(ctx)
    eks = moto.client("eks")
    client = provider.cluster_name(ctx, "client")
    arn = eks.describe_cluster(name=client)["cluster"]["arn"]
    eks.tag_resource(resourceArn=arn, tags={TAG_CREATED_AT: isoformat(utcnow() - timedelta(1))})

    document = yaml.safe_load(load_config.__globals__["DEFAULT_CONFIG_PATH"].read_text())
    document["environments"]["aws"]["aws_conn_id"] = AWS_CONN_ID
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["reap", "--env", "aws", "--dry-run", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "dry run: nothing deleted" in text
    assert re.search(rf"would delete\s+eks-cluster {client}: created .* older than the TTL", text)
    assert "kept" in text and "cloudformation-stack meshbench-network" in text
    assert "judged by age only" in text
    assert len(eks.list_clusters()["clusters"]) == 2

    assert main(["reap", "--env", "aws", "--ttl", "2h", "--config", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # logs and notes go to stderr
    assert "judged by age only" in captured.err
    assert report["ttl_seconds"] == 7200 and report["failures"] == 0
    assert eks.list_clusters()["clusters"] == [provider.cluster_name(ctx, "server")]


def meshbench_in_a_new_process(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it: a fresh process in which Airflow sets up
    its logging when a command first imports it."""
    command = Path(sys.executable).with_name("meshbench")
    return subprocess.run(
        [str(command), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "AIRFLOW_HOME": str(home)},
        check=False,
    )


def test_json_output_is_all_of_stdout(moto, aws_config, tmp_path) -> None:
    provider = AwsProvider(aws_config)
    ctx = run_context(aws_config, "aws")
    provider.create(ctx)
    document = yaml.safe_load(load_config.__globals__["DEFAULT_CONFIG_PATH"].read_text())
    document["environments"]["aws"]["aws_conn_id"] = AWS_CONN_ID
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))

    reap = meshbench_in_a_new_process(
        ["reap", "--env", "aws", "--dry-run", "--json", "--config", str(path)],
        tmp_path / "airflow",
    )
    assert reap.returncode == 0, reap.stderr
    report = json.loads(reap.stdout)
    names = {item["name"] for item in report["items"]}
    assert set(provider.cluster_names(ctx).values()) <= names
    # Airflow's hooks did log (to stderr), and the note about DAG run states went there too.
    assert "airflow.providers.amazon" in reap.stderr
    assert "judged by age only" in reap.stderr

    estimate = meshbench_in_a_new_process(
        ["estimate", "--env", "aws", "--json", "--config", str(path)], tmp_path / "airflow"
    )
    assert estimate.returncode == 0, estimate.stderr
    (aws,) = json.loads(estimate.stdout)
    assert aws["environment"] == "aws" and aws["cost_usd_per_matrix"] > 0


def test_a_ladder_is_estimated_with_every_step_and_its_paired_runs(monkeypatch) -> None:
    from meshbench.config import LOAD_PROFILE_ENV_VAR
    from meshbench.environments.estimate import dag_minutes

    monkeypatch.setenv(LOAD_PROFILE_ENV_VAR, "ladder")
    config = load_config()
    load = config.load_profile_for("aws")
    t = config.environments.aws.timings
    assert len(load.ladder()) == 10
    run = (load.duration + t.run_overhead_seconds) / 60
    warmup = (load.effective_warmup_duration + t.run_overhead_seconds) / 60
    # Every step's runs, each after its paired no-mesh run.
    measured = 2 * len(load.ladder()) * load.runs_per_iteration * run
    iteration = (
        t.mesh_install_minutes["istio"] + t.workload_minutes + warmup + measured
    ) + t.uninstall_minutes
    minutes = dag_minutes(config, "aws", "istio")
    assert minutes["iterations"] == pytest.approx(load.iterations * iteration)

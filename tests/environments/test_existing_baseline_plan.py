"""The plan of existing × baseline: every step, in order, rendered without a cluster."""

from __future__ import annotations

import pytest

from meshbench.backend import Plan, RunContext
from meshbench.cli import main as cli_main
from meshbench.cli.plan import placeholder_context
from meshbench.config import load_config
from meshbench.local.nginx import KEEPALIVE_REQUESTS
from meshbench.registry import get_backend


@pytest.fixture(scope="module")
def plan() -> Plan:
    config = load_config()
    ctx = placeholder_context(config, "existing", "baseline")
    # No Airflow connection exists here: building the plan must not need one.
    return get_backend(config, "existing", "baseline").plan(ctx)


def first(plan: Plan, predicate, after: int = -1) -> int:
    for index, step in enumerate(plan.steps):
        if index > after and predicate(step):
            return index
    raise AssertionError("no such step in the plan:\n" + plan.render())


def test_plan_steps_are_in_run_order(plan: Plan):
    ns = placeholder_context(load_config(), "existing", "baseline").resource_prefix
    adopt = first(plan, lambda s: s.phase == "create_clusters")
    metrics = first(plan, lambda s: s.phase == "prepare_pair" and "metrics" in s.description)
    namespace = first(
        plan,
        lambda s: s.kind == "manifest" and f"kind: Namespace\nmetadata:\n  name: {ns}" in s.detail,
    )
    nginx = first(
        plan,
        lambda s: (
            s.kind == "manifest"
            and "kind: Deployment" in s.detail
            and "image: nginx:1.23.3" in s.detail
        ),
    )
    fortio = first(
        plan, lambda s: s.kind == "manifest" and "image: fortio/fortio:1.40.0" in s.detail
    )
    rollout = first(plan, lambda s: s.kind == "wait" and "rolled out" in s.description)
    balancer = first(plan, lambda s: s.kind == "wait" and "LoadBalancer address" in s.description)
    probe = first(plan, lambda s: s.description.startswith("probe:"))
    forward = first(plan, lambda s: s.kind == "process" and "port-forward" in s.description, probe)
    warmup = first(plan, lambda s: s.phase == "iteration_01.warmup" and s.kind == "http")
    measured = [
        first(plan, lambda s, n=n: s.phase == f"iteration_01.measured_{n:02d}" and s.kind == "http")
        for n in (1, 2, 3)
    ]
    sampling = first(plan, lambda s: "metrics-server" in s.description and s.kind == "api", warmup)
    cleanup = first(
        plan,
        lambda s: s.phase == "iteration_01.uninstall_mesh" and "delete namespace" in s.description,
    )
    final = first(
        plan, lambda s: s.phase == "delete_clusters" and "delete namespace" in s.description
    )
    assert adopt < metrics < namespace <= nginx < fortio < rollout < balancer < probe
    assert probe < forward < warmup < sampling < measured[0] < measured[1] < measured[2]
    assert measured[2] < cleanup < final
    # Workload manifests go to the right clusters.
    assert plan.steps[nginx].cluster == "server" and plan.steps[fortio].cluster == "client"
    assert plan.steps[forward].detail == (
        f"kubectl port-forward --namespace {ns} --address 127.0.0.1 deployment/fortio :8080"
    )


def test_measured_runs_send_the_study_settings_as_strings(plan: Plan):
    http = [s for s in plan.steps if s.kind == "http" and "measured" in s.phase]
    assert len(http) == 3
    for step in http:
        assert '"qps": "6000"' in step.detail and '"c": "1"' in step.detail
        assert '"t": "60s"' in step.detail and '"r": "0.00005"' in step.detail
        assert '"p": "50,75,90,99,99.9,99.99"' in step.detail
        assert '"async": "on"' in step.detail and '"save": "on"' in step.detail
        assert "GET /fortio/data/<ResultID>.json" in step.detail


def test_every_iteration_is_accounted_for(plan: Plan):
    note = [s for s in plan.steps if s.phase == "iterations"]
    assert note and "iterations 2 to 5 repeat" in note[0].description


def test_plan_renders_as_text_and_markdown(plan: Plan):
    text = plan.render()
    markdown = plan.render_markdown()
    assert text.startswith("Plan for environment 'existing', mesh 'baseline'")
    assert f"keepalive_requests {KEEPALIVE_REQUESTS};" in text
    assert markdown.startswith("### Plan: `existing` × `baseline`")
    assert "```" in markdown


def test_plan_command_prints_it(capsys: pytest.CaptureFixture[str]):
    assert cli_main(["plan", "--env", "existing", "--mesh", "baseline"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan for environment 'existing', mesh 'baseline'")
    assert "port-forward" in out and "delete namespace" in out


def test_plan_command_refuses_a_local_only_mesh_on_kubernetes(
    capsys: pytest.CaptureFixture[str],
):
    assert cli_main(["plan", "--env", "existing", "--mesh", "wireguard"]) == 2
    assert "mesh 'wireguard' has no Kubernetes installer" in capsys.readouterr().err


def test_placeholder_context_uses_the_dag_id():
    ctx: RunContext = placeholder_context(load_config(), "existing", "baseline")
    assert ctx.dag_id == "meshbench_existing_baseline" and ctx.run_id == "plan"


def test_each_measured_run_plans_its_cost_windows_around_the_load(plan: Plan):
    forward = first(plan, lambda s: s.phase == "iteration_01.measured_01" and s.kind == "process")
    idle = first(
        plan, lambda s: s.phase == "iteration_01.measured_01" and "idle window" in s.description
    )
    run = first(plan, lambda s: s.phase == "iteration_01.measured_01" and s.kind == "http")
    cost = first(
        plan, lambda s: s.phase == "iteration_01.measured_01" and "run's cost" in s.description
    )
    assert forward < idle < run < cost
    assert "/api/v1/nodes/<node>/proxy/stats/summary" in plan.steps[idle].detail
    assert "once stamped after the run's end" in plan.steps[cost].detail
    # The warm-up's cost is not measured.
    assert not [
        s for s in plan.steps if s.phase == "iteration_01.warmup" and "cost" in s.description
    ]


@pytest.mark.parametrize("environment", ["existing", "aws", "capi"])
def test_a_ladder_plans_every_step_with_its_load_and_sampling(environment: str, capsys):
    config = load_config()
    ladder = config.load_profiles["ladder"]
    assert cli_main(["plan", "--env", environment, "--mesh", "istio", "--profile", "ladder"]) == 0
    text = capsys.readouterr().out
    for number, step in enumerate(ladder.steps, start=1):
        assert f"load step {number} of {len(ladder.steps)} ({step.key})" in text
        qps = -1 if step.qps == "max" else step.qps
        request = f'"qps": "{qps}", "c": "{step.connections}"'
        runs = [
            line
            for line in text.splitlines()
            if request in line and "phase=measured" in line and f"step={step.key}" in line
        ]
        assert len(runs) == ladder.runs_per_iteration, step.key
        assert f"iteration_01.{step.key}.measured_01: idle window" in text
        assert f"iteration_01.{step.key}.measured_01: sample metrics-server" in text
        assert f"iteration_01.{step.key}.measured_01: the run's cost" in text


def test_an_unknown_profile_is_named_with_the_known_ones(capsys):
    from meshbench.cli import CommandError

    with pytest.raises(CommandError, match=r"--profile 'steep'.*defined: .*ladder"):
        placeholder_context(load_config(), "existing", "istio", "steep")

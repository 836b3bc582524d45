"""The local plan is what a local run does: a real run's executed steps, each once in the
order first seen, are the plan's steps (which shows one iteration and one run per phase)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from meshbench.local.backend import LocalBackend
from meshbench.local.meshes import LOCAL_MESHES
from meshbench.local.runner import run_local
from tests.local.conftest import local_config, make_context, needs_netns, short_profile


@needs_netns
@pytest.mark.parametrize("mesh", LOCAL_MESHES)
def test_a_local_run_executes_the_steps_of_its_plan(mesh: str, state_root: Path) -> None:
    config = local_config(network_mode="netns", paired_baseline=True)
    backend = LocalBackend(config, mesh, state_root=state_root)
    ctx = make_context(config, mesh, short_profile(duration=1.0, warmup=True, warmup_duration=1.0))
    plan = backend.plan(ctx)

    run = run_local(backend, ctx)

    assert not run.failures and not run.teardown_problems
    executed_once = list(dict.fromkeys(backend.executed_steps))
    assert [step.render() for step in executed_once] == [step.render() for step in plan.steps]
    assert executed_once == list(plan.steps)
    measured = [step for step in backend.executed_steps if step.phase == "measure"]
    assert len(measured) == (3 if backend.plane.adds_path else 2)


def test_a_loopback_run_executes_its_plan_with_the_addresses_it_chose(state_root: Path) -> None:
    # Loopback addresses and ports are chosen when the clusters are made: the plan shows
    # placeholders there, so only the steps' details may differ.
    config = local_config(network_mode="loopback")
    backend = LocalBackend(config, "baseline", state_root=state_root)
    ctx = make_context(config, "baseline", short_profile(duration=1.0))
    plan = backend.plan(ctx)

    run = run_local(backend, ctx)

    assert not run.failures and not run.teardown_problems
    executed_once = list(dict.fromkeys(backend.executed_steps))
    assert [dataclasses.replace(step, detail="") for step in executed_once] == [
        dataclasses.replace(step, detail="") for step in plan.steps
    ]

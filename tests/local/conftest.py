"""Fixtures for the local environment: configs with chosen local settings, a private state
folder per test, and the root check the namespace tests need."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshbench.backend import RunContext
from meshbench.config import BenchmarkConfig, LoadProfile, load_config
from meshbench.local import netns

needs_netns = pytest.mark.skipif(
    not netns.can_create_namespaces(),
    reason="network namespaces need root and iproute2 (ip); the loopback fallback is tested "
    "separately",
)


def local_config(**local_settings: Any) -> BenchmarkConfig:
    """The packaged configuration with some local-environment settings replaced."""
    config = load_config()
    local = config.environments.local.model_copy(update=local_settings)
    environments = config.environments.model_copy(update={"local": local})
    return config.model_copy(update={"environments": environments})


def short_profile(**updates: Any) -> LoadProfile:
    # 3 s runs: wrk stops on a 100 ms tick, so a run lasts up to 0.1 s longer than asked
    # (3.3 % here, inside the 5 % validity tolerance; a 1 s run can be 10 % long).
    settings: dict[str, Any] = {
        "qps": 6000,
        "connections": 1,
        "duration": 3.0,
        "warmup": False,
        "runs_per_iteration": 1,
        "iterations": 1,
        "min_positive": 0,
    }
    settings.update(updates)
    return LoadProfile.model_validate(settings)


def make_context(config: BenchmarkConfig, mesh: str, load: LoadProfile) -> RunContext:
    return RunContext(
        config=config,
        environment="local",
        mesh=mesh,
        dag_id=f"test_local_{mesh}",
        run_id=f"pytest-{os.getpid()}-{time.monotonic_ns()}",
        load=load,
        labels={"environment": "local", "mesh": mesh, "source": "pytest"},
    )


@pytest.fixture
def state_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "local-state"
    yield root

"""A `meshbench local run` killed with SIGKILL mid-run (an OOM kill, a lost worker) leaves
its namespaces and processes; the next run reaps them before it measures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshbench.local import netns
from meshbench.local.processes import ProcessRecord
from tests.local.conftest import needs_netns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

MESHBENCH = str(Path(sys.executable).with_name("meshbench"))


def local_run(state: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [MESHBENCH, "local", "run", "--mesh", "envoy-mtls", "--iterations", "1", *extra],
        env={**os.environ, "MESHBENCH_STATE": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_measuring(state: Path, timeout: float = 120) -> tuple[str, list[ProcessRecord]]:
    """The run's prefix and recorded processes once its nginx, the last component before
    the load, has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in (state / "local").glob("mb-*/state.json"):
            try:
                document = json.loads(path.read_text())
            except ValueError:
                continue  # being replaced
            records = [ProcessRecord.from_dict(r) for r in document.get("history", [])]
            if any(r.name == "nginx" for r in records):
                time.sleep(3)  # into the measurement
                return document["prefix"], records
        time.sleep(0.2)
    raise AssertionError(f"no run under {state} started its nginx in {timeout} s")


def namespaces_of(prefix: str) -> list[str]:
    return [name for name in netns.list_namespaces() if name.startswith(prefix)]


@needs_netns
def test_the_next_run_reaps_a_run_whose_owner_was_killed(tmp_path: Path) -> None:
    killed = local_run(tmp_path, "--duration", "20s", "--no-warmup")
    try:
        prefix, records = wait_for_measuring(tmp_path)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    left = [r for r in records if r.is_running()]
    assert namespaces_of(prefix), "the killed run left its namespaces (nothing tore it down)"
    assert left, "the killed run left its Envoys and nginx running"

    began = time.monotonic()
    following = local_run(tmp_path, "--duration", "1s", "--no-warmup", "--runs", "1")
    output, _ = following.communicate(timeout=300)
    assert following.returncode == 0, output[-3000:]
    assert f"reaped runs whose owner is gone: {prefix}" in output
    assert namespaces_of(prefix) == []
    assert [r.name for r in records if r.is_running()] == []
    assert not (tmp_path / "local" / prefix).exists()
    print(f"next run with the reap: {time.monotonic() - began:.1f} s")

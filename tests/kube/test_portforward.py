"""Port-forwards are owned and ended by their handle, never by process name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from meshbench.kube.portforward import PortForwardError, start_port_forward
from meshbench.kube.runner import CommandRunner
from meshbench.testing import fake_kubectl
from meshbench.testing.fake_fortio import FakeFortio

SEED = Path(__file__).parents[1] / "data" / "seed-results" / "equinix-metal-2023-11-16"


@pytest.fixture
def fortio(monkeypatch):
    results = [json.loads(p.read_text()) for p in sorted((SEED / "kmz").glob("*.json"))[:1]]
    with FakeFortio(results) as server:
        monkeypatch.setenv("MESHBENCH_FAKE_FORWARD_TO", f"127.0.0.1:{server.port}")
        yield server


@pytest.fixture
def runner(tmp_path: Path) -> CommandRunner:
    return CommandRunner(executables={"kubectl": fake_kubectl.install(tmp_path)})


def test_a_port_forward_relays_and_stops_by_its_handle_only(runner, fortio):
    first = start_port_forward(runner, "ns", "deployment/fortio", 8080, ready_timeout=10)
    second = start_port_forward(runner, "ns", "deployment/fortio", 8080, ready_timeout=10)
    try:
        assert first.local_port != second.local_port
        for forward in (first, second):
            reply = requests.get(f"{forward.url}/fortio/rest/status", timeout=5)
            assert reply.json() == {"Statuses": {}}
        first.stop()
        assert not first.alive()
        assert second.alive(), "stopping one port-forward must leave the other running"
        assert requests.get(f"{second.url}/fortio/rest/status", timeout=5).status_code == 200
        first.stop()  # idempotent
    finally:
        second.stop()


def test_many_connections_do_not_stall_the_forward(runner, fortio):
    # kubectl prints a line per connection; the handle drains them.
    with start_port_forward(runner, "ns", "deployment/fortio", 8080, ready_timeout=10) as forward:
        for _ in range(200):
            with requests.Session() as session:
                session.get(f"{forward.url}/fortio/rest/status", timeout=5)
        assert forward.alive()


def test_a_dying_port_forward_says_why(runner, fortio, monkeypatch):
    monkeypatch.setenv("MESHBENCH_FAKE_FORWARD_LIFETIME", "0.2")
    forward = start_port_forward(runner, "ns", "deployment/fortio", 8080, ready_timeout=10)
    forward.process.wait(timeout=5)
    loss = forward.describe_loss()
    forward.stop()
    assert loss == (
        "port-forward to ns/deployment/fortio:8080 exited with code 1: "
        "error: lost connection to pod"
    )


def test_a_port_forward_that_never_listens_fails_with_its_output(runner, monkeypatch):
    monkeypatch.delenv("MESHBENCH_FAKE_FORWARD_TO", raising=False)
    with pytest.raises(PortForwardError, match="did not start within"):
        start_port_forward(runner, "ns", "deployment/fortio", 8080, ready_timeout=5)

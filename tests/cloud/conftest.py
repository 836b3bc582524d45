"""Fixtures for the cloud environments: a moto server on loopback and an Airflow AWS
connection pointing at it, and a configuration with fast waiters."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from meshbench.backend import RunContext
from meshbench.config import BenchmarkConfig, load_config

# Airflow reads its home on first import; keep it out of the user's home folder.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="meshbench-cloud-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

AWS_CONN_ID = "meshbench_aws_test"
# A distinctive secret, so tests can check it never leaks into files or results.
AWS_SECRET = "moto-secret-key-do-not-print-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Moto:
    endpoint_url: str

    def reset(self) -> None:
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()

    def client(self, service: str, region: str = "us-east-1"):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key=AWS_SECRET,
        )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    """moto in server mode: a real AWS-shaped HTTP endpoint on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield Moto(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """A clean moto and the Airflow connection ``AIRFLOW_CONN_MESHBENCH_AWS_TEST``."""
    moto_server.reset()
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": AWS_SECRET,
        "extra": {"endpoint_url": moto_server.endpoint_url, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}", json.dumps(connection))
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    return moto_server


def with_environment(config: BenchmarkConfig, name: str, **changes: object) -> BenchmarkConfig:
    environments = config.environments
    updated = getattr(environments, name).model_copy(update=changes)
    return config.model_copy(
        update={"environments": environments.model_copy(update={name: updated})}
    )


@pytest.fixture
def aws_config() -> BenchmarkConfig:
    """The packaged configuration, aws pointed at moto with one-second waiters."""
    return with_environment(
        load_config(),
        "aws",
        enabled=True,
        aws_conn_id=AWS_CONN_ID,
        waiter_delay=1,
        waiter_max_attempts=5,
        load_balancer_wait=2.0,
    )


def run_context(
    config: BenchmarkConfig,
    environment: str,
    mesh: str = "baseline",
    run_id: str = "scheduled__2026-11-26T00:00:00+00:00",
) -> RunContext:
    return RunContext(
        config=config,
        environment=environment,
        mesh=mesh,
        dag_id=f"meshbench_{environment}_{mesh}",
        run_id=run_id,
        load=config.load_profile_for(environment),
    )

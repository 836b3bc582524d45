"""The compose stack of docker-compose.yaml, brought up with local stand-in images.

Machines without a container registry cannot pull apache/airflow, postgres or redis, so the
stand-ins are built from Debian's packages (tests/compose/standins/): a debootstrap base
(scripts/debian-base-image), Postgres and Redis from Debian, Airflow from the project's lock.
The meshbench image itself is built from docker/Dockerfile on the Airflow stand-in, and
docker-compose.standins.yaml names the stand-ins; docker-compose.yaml is used unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).parents[2]
HERE = Path(__file__).parent
STANDINS = HERE / "standins"
OVERRIDE = HERE / "docker-compose.standins.yaml"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BENCHMARK_LOCK = Path("/tmp/meshbench-benchmark.lock")

POSTGRES_IMAGE = "meshbench-standin/postgres:16"
REDIS_IMAGE = "meshbench-standin/redis:7.2-bookworm"
AIRFLOW_BASE_IMAGE = "meshbench-standin/airflow:3.3.2-python3.11"
MESHBENCH_IMAGE = "meshbench-airflow:compose-check"
BUILD_TIMEOUT = 1800
PASSWORDS_FILE = "/opt/airflow/simple_auth_manager_passwords.json.generated"


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=60)
    return probe.returncode == 0


def _run(args: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), capture_output=True, text=True, check=False, timeout=timeout, **kwargs
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {result.returncode}:\n{(result.stdout + result.stderr)[-4000:]}"
        )
    return result


def _docker_build(image: str, dockerfile: Path | str, context: Path | str, build_arg: str) -> None:
    _run(
        ["docker", "build", "-q", "--build-arg", build_arg, "-t", image,
         "-f", str(dockerfile), str(context)],
        BUILD_TIMEOUT,
    )  # fmt: skip


def build_images() -> None:
    """The stand-ins and the meshbench image; Docker's layer cache makes a rebuild quick."""
    base = _run([str(ROOT / "scripts/debian-base-image")], BUILD_TIMEOUT).stdout.strip()
    for image, dockerfile in (
        (POSTGRES_IMAGE, "postgres.Dockerfile"),
        (REDIS_IMAGE, "redis.Dockerfile"),
    ):
        _docker_build(image, STANDINS / dockerfile, STANDINS, f"BASE_IMAGE={base}")
    with tempfile.TemporaryDirectory(prefix="meshbench-airflow-standin-") as context:
        for name in ("airflow.Dockerfile", "airflow-entrypoint.sh"):
            shutil.copy2(STANDINS / name, context)
        shutil.copy2(ROOT / "requirements.lock", context)
        # PyPI answers from a container only through this machine's CA bundle.
        shutil.copy2(CA_BUNDLE, Path(context) / "ca-bundle.crt")
        _docker_build(
            AIRFLOW_BASE_IMAGE, f"{context}/airflow.Dockerfile", context, f"BASE_IMAGE={base}"
        )
    _docker_build(
        MESHBENCH_IMAGE, ROOT / "docker/Dockerfile", ROOT, f"AIRFLOW_IMAGE={AIRFLOW_BASE_IMAGE}"
    )


@dataclass
class ComposeStack:
    project: str
    api_port: int
    env: dict[str, str] = field(default_factory=dict)
    token: str | None = None

    @property
    def base_command(self) -> list[str]:
        return [
            "docker-compose",
            "-p",
            self.project,
            "-f",
            str(ROOT / "docker-compose.yaml"),
            "-f",
            str(OVERRIDE),
        ]

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return _run([*self.base_command, *args], timeout, cwd=ROOT, env=self.env)

    def up(self, *args: str) -> None:
        self.compose("up", "-d", *args, timeout=1200)

    def _unchecked(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """For teardown and diagnostics: never raises on a non-zero exit."""
        return subprocess.run(
            [*self.base_command, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd=ROOT,
            env=self.env,
        )

    def down(self) -> subprocess.CompletedProcess[str]:
        return self._unchecked("down", "-v", "--remove-orphans", "--timeout", "30", timeout=600)

    def logs(self) -> str:
        result = self._unchecked("logs", "--no-color", "--tail", "60", timeout=120)
        return result.stdout + result.stderr

    def containers(self) -> dict[str, dict]:
        """Each of the project's containers by name, with docker inspect's State."""
        ids = _run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"],
            60,
        ).stdout.split()
        if not ids:
            return {}
        inspected = json.loads(_run(["docker", "inspect", *ids], 60).stdout)
        return {item["Name"].lstrip("/"): item for item in inspected}

    def wait_healthy(self, timeout: float) -> dict[str, str]:
        """Until every long-running service reports healthy and the init job exited 0."""
        deadline = time.monotonic() + timeout
        while True:
            states = {}
            for name, item in self.containers().items():
                state = item["State"]
                if "airflow-init" in name:
                    states[name] = (
                        f"exited {state['ExitCode']}" if not state["Running"] else "running"
                    )
                else:
                    states[name] = state.get("Health", {}).get("Status", state["Status"])
            bad_init = [
                n
                for n, s in states.items()
                if "airflow-init" in n and s.startswith("exited") and s != "exited 0"
            ]
            if bad_init:
                raise RuntimeError(f"the init job failed: {states}")
            settled = all(s in ("healthy", "exited 0") for s in states.values())
            if states and settled:
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"services not healthy after {timeout:.0f} s: {states}")
            time.sleep(5)

    def container_of(self, service: str, index: int = 1) -> str:
        return f"{self.project}_{service}_{index}"

    def exec(self, service: str, *command: str, timeout: float = 120) -> str:
        return self.compose("exec", "-T", service, *command, timeout=timeout).stdout

    # ------------------------------------------------------------------ REST API

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def login(self) -> None:
        """A JWT from the simple auth manager's generated admin password."""
        passwords = json.loads(self.exec("airflow-apiserver", "cat", PASSWORDS_FILE))
        response = requests.post(
            f"{self.api}/auth/token",
            json={"username": "admin", "password": passwords["admin"]},
            timeout=30,
        )
        response.raise_for_status()
        self.token = response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(
            method,
            f"{self.api}/api/v2{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
            **kwargs,
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response

    def wait_for_dag(self, dag_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            response = requests.get(
                f"{self.api}/api/v2/dags/{dag_id}",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=60,
            )
            if response.status_code == 200:
                return response.json()
            if time.monotonic() > deadline:
                errors = self.request("GET", "/importErrors").json()
                raise TimeoutError(
                    f"{dag_id} not parsed after {timeout:.0f} s; import errors: {errors}"
                )
            time.sleep(5)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(5)

    def psql(self, database: str, query: str) -> list[list[str]]:
        out = self.exec(
            "postgres",
            "psql",
            "-U",
            "airflow",
            "-d",
            database,
            "-At",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            query,
        )
        return [line.split("\t") for line in out.splitlines() if line]

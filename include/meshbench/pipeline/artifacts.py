"""The artifact store: raw results, failure records, reports and charts.

Written through Airflow's ObjectStoragePath, so the same code writes to a local folder
(the default) or to ``s3://`` when tasks run on several workers. Every path is derived
from the DAG run, so any task on any worker finds what another task wrote.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from meshbench.config import BenchmarkConfig
from meshbench.paths import state_dir

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A path segment from a run id such as ``scheduled__2026-01-01T00:00:00+00:00``."""
    return _UNSAFE.sub("_", text).strip("_") or "_"


def default_base_uri() -> str:
    return (state_dir() / "artifacts").resolve().as_uri()


class ArtifactStore:
    def __init__(self, config: BenchmarkConfig) -> None:
        self.base_uri = config.artifacts.base_uri or default_base_uri()
        self.conn_id = config.artifacts.conn_id

    def path(self, *parts: str):
        from airflow.sdk import ObjectStoragePath

        root = ObjectStoragePath(self.base_uri, conn_id=self.conn_id)
        for part in parts:
            root = root / part
        return root

    def run_dir(self, dag_id: str, run_id: str, attempt: int):
        return self.path("runs", safe_name(dag_id), safe_name(run_id), f"attempt-{attempt:02d}")

    def report_dir(self, environment: str, day: str):
        return self.path("reports", safe_name(environment), day)

    @staticmethod
    def write_json(path, document: dict[str, Any]) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as handle:
            json.dump(document, handle, indent=1, default=str)
        return str(path)

    @staticmethod
    def read_json(path) -> dict[str, Any]:
        with path.open("r") as handle:
            return json.load(handle)

    @staticmethod
    def write_bytes(path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.write(data)
        return str(path)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()

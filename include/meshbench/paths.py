"""Where the checkout is and where meshbench keeps its state (the private Postgres, the
Airflow home, the artifact store, the local runs' folders)."""

from __future__ import annotations

import os
from pathlib import Path

STATE_ENV_VAR = "MESHBENCH_STATE"


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def state_dir() -> Path:
    """The project's state folder (``.state`` beside the checkout unless overridden)."""
    path = Path(os.environ.get(STATE_ENV_VAR) or project_root() / ".state")
    path.mkdir(parents=True, exist_ok=True)
    return path

"""The compose check runs once, from `make compose-check` (its own CI step), not in `make test`.

It builds images and starts a dozen containers for several minutes, so the host's test
suite deselects it unless MESHBENCH_COMPOSE_CHECK=1 (set by `make compose-check`).
"""

from __future__ import annotations

import os

import pytest

COMPOSE_CHECK_ENV_VAR = "MESHBENCH_COMPOSE_CHECK"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(COMPOSE_CHECK_ENV_VAR) == "1":
        return
    compose = [item for item in items if item.get_closest_marker("compose")]
    if compose:
        config.hook.pytest_deselected(items=compose)
        items[:] = [item for item in items if not item.get_closest_marker("compose")]

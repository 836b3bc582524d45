"""Which Backend implements each environment; modules are imported only when asked for."""

from __future__ import annotations

import importlib

from meshbench.backend import Backend
from meshbench.config import ENVIRONMENT_NAMES, BenchmarkConfig, ConfigError

# Each module exposes ``build_backend(config, mesh) -> Backend``.
BACKEND_MODULES: dict[str, str] = {
    "local": "meshbench.local.backend",
    "existing": "meshbench.environments.existing",
    "aws": "meshbench.environments.aws",
    "capi": "meshbench.environments.capi",
}


def get_backend(config: BenchmarkConfig, environment: str, mesh: str) -> Backend:
    if environment not in ENVIRONMENT_NAMES:
        raise ConfigError(
            f"unknown environment {environment!r}; known: {', '.join(ENVIRONMENT_NAMES)}"
        )
    module = importlib.import_module(BACKEND_MODULES[environment])
    return module.build_backend(config, mesh)

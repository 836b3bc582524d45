"""Which Backend implements each environment; modules are imported only when asked for."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from meshbench.backend import Backend
from meshbench.config import ENVIRONMENT_NAMES, BenchmarkConfig, ConfigError

# Each module exposes ``build_backend(config, mesh) -> Backend``.
BACKEND_MODULES: dict[str, str] = {
    "local": "meshbench.local.backend",
    "existing": "meshbench.environments.existing",
    "aws": "meshbench.environments.aws",
    "capi": "meshbench.environments.capi",
}


def import_entry(entries: Mapping[str, str], name: str, unknown: str) -> Any:
    """What ``entries[name]`` names, imported only now: a module (``package.module``) or one
    of its attributes (``package.module:attribute``). A name without an entry is a
    ConfigError saying ``unknown``."""
    if name not in entries:
        raise ConfigError(unknown)
    module_name, _, attribute = entries[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def get_backend(config: BenchmarkConfig, environment: str, mesh: str) -> Backend:
    unknown = f"unknown environment {environment!r}; known: {', '.join(ENVIRONMENT_NAMES)}"
    return import_entry(BACKEND_MODULES, environment, unknown).build_backend(config, mesh)

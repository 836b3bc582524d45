"""Mesh installers for the Kubernetes environments (``baseline``, istio, kuma, nsm).

Each installer is a ``meshbench.meshes.base.MeshInstaller``: its ops for prepare_pair,
install, readiness and uninstall, and the ``WorkloadProfile`` it asks the workloads to
wear. ``get_installer(config, name)`` finds one by mesh name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshbench.config import BenchmarkConfig
    from meshbench.meshes.base import MeshInstaller

# Mesh name -> module exposing ``build_installer(config) -> MeshInstaller``.
INSTALLER_MODULES: dict[str, str] = {
    "baseline": "meshbench.meshes.baseline",
    "istio": "meshbench.meshes.istio",
    "kuma": "meshbench.meshes.kuma",
    "nsm": "meshbench.meshes.nsm",
}


def get_installer(config: BenchmarkConfig, mesh: str) -> MeshInstaller:
    from meshbench.config import ConfigError

    if mesh not in INSTALLER_MODULES:
        raise ConfigError(
            f"mesh {mesh!r} has no Kubernetes installer yet; available: "
            f"{', '.join(INSTALLER_MODULES)}"
        )
    return importlib.import_module(INSTALLER_MODULES[mesh]).build_installer(config)

"""Mesh installers for the Kubernetes environments (``baseline``, istio, kuma, nsm).

Each installer is a ``meshbench.meshes.base.MeshInstaller``: its ops for prepare_pair,
install, readiness and uninstall, and the ``WorkloadProfile`` it asks the workloads to
wear. ``get_installer(config, name)`` finds one by mesh name.
"""

from __future__ import annotations

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
    from meshbench.registry import import_entry

    available = ", ".join(INSTALLER_MODULES)
    unknown = f"mesh {mesh!r} has no Kubernetes installer yet; available: {available}"
    return import_entry(INSTALLER_MODULES, mesh, unknown).build_installer(config)

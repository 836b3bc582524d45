"""The local environment's data planes, one module each (``baseline``, ``envoy_mtls``,
``wireguard``).

Each module defines ``DATA_PLANE``, a ``meshbench.local.meshes.base.LocalDataPlane``; its
mesh name is the module's name with ``-`` for ``_``. Adding a local mesh is adding its
module here and its entry in the configuration (``meshes`` with ``scope: local``).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshbench.local.meshes.base import LocalDataPlane

_NOT_PLANES = {"base"}

# Found without importing the modules: the command line lists them at start-up.
LOCAL_MESHES: tuple[str, ...] = tuple(
    sorted(
        module.name.replace("_", "-")
        for module in pkgutil.iter_modules(__path__)
        if module.name not in _NOT_PLANES
    )
)


def get_data_plane(mesh: str) -> LocalDataPlane:
    from meshbench.config import ConfigError

    if mesh not in LOCAL_MESHES:
        raise ConfigError(f"the local environment runs {', '.join(LOCAL_MESHES)}; not {mesh!r}")
    module = importlib.import_module(f"{__name__}.{mesh.replace('-', '_')}")
    return module.DATA_PLANE

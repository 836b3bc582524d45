"""``baseline``: wrk loads nginx directly, the floor every mesh is compared with."""

from __future__ import annotations

from meshbench.local.meshes.base import LocalDataPlane


class Baseline(LocalDataPlane):
    name = "baseline"


DATA_PLANE = Baseline()

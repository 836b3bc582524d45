"""What a local data plane provides to the local backend.

The backend owns the order of a run (namespaces, nginx, wrk, teardown); a data plane adds
its own ops at three points, as a Kubernetes ``MeshInstaller`` does:

- ``prepare_pair_ops``: once per run, before the first iteration (a per-run CA);
- ``install_ops``: per iteration, the processes of the data plane, started in order;
- ``ready_ops``: per iteration, waits until the data plane carries traffic.

The backend stops every recorded process at uninstall (workload first, then the
components in reverse start order) and calls ``after_stop`` for what a killed process
leaves behind. Ops are built without touching anything (the plan is rendered from them);
only their actions do. Names come from the topology so a retried task finds what an
earlier try made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from meshbench.backend import RunContext
from meshbench.local import counters
from meshbench.local.ops import LocalOp
from meshbench.local.topology import Topology

if TYPE_CHECKING:
    from meshbench.local.backend import LocalBackend
    from meshbench.local.state import RunState

# The server workload every path ends at, as its process is recorded.
WORKLOAD = "nginx"
WORKLOAD_DESCRIPTION = "nginx (server workload)"
DIRECT_PATH = "direct"
DIRECT_DATA_PLANE = "client -> nginx (no mesh)"


class NotReady(Exception):
    """A readiness check that has not passed yet; its message says what was seen."""


class LocalDataPlane:
    """The direct path: nothing between wrk and nginx. Meshes override what they add."""

    name: ClassVar[str]
    # The path wrk loads (``direct`` for none) and how it runs, as recorded with the results.
    path: ClassVar[str] = DIRECT_PATH
    data_plane: ClassVar[str] = DIRECT_DATA_PLANE
    # Programs needed besides nginx and wrk.
    programs: ClassVar[tuple[str, ...]] = ()
    # Recorded process names in start order, and what each is in words.
    components: ClassVar[Mapping[str, str]] = {}
    # Each component's role on the path (``local.resources``), for its cost.
    component_roles: ClassVar[Mapping[str, str]] = {}
    # Why the data plane cannot run on loopback addresses; None: it can.
    needs_namespaces: ClassVar[str | None] = None

    @property
    def adds_path(self) -> bool:
        """Whether wrk's path differs from the direct one (a paired baseline means something)."""
        return self.path != DIRECT_PATH

    def url(self, topology: Topology) -> str:
        """The URL wrk loads through this data plane."""
        return topology.direct_url

    def first_hop(self, topology: Topology) -> counters.FirstHop:
        """The counters of what wrk talks to, read before and after each run."""
        return counters.nginx_first_hop(topology)

    def prepare_pair_ops(self, backend: LocalBackend, ctx: RunContext) -> list[LocalOp]:
        return []

    def install_ops(
        self, backend: LocalBackend, ctx: RunContext, topology: Topology, iteration: int
    ) -> list[LocalOp]:
        return []

    def ready_ops(
        self, backend: LocalBackend, ctx: RunContext, topology: Topology, iteration: int
    ) -> list[LocalOp]:
        return []

    def after_stop(self, topology: Topology) -> None:
        """Remove what the components leave when killed rather than stopped cleanly."""

    def diagnose(self, backend: LocalBackend, state: RunState) -> list[str]:
        """Which running component does not answer (those not running are named already)."""
        return []

    def run_info(self) -> dict[str, Any]:
        """Settings of the data plane recorded with the run."""
        return {}


# The path every paired baseline run takes, whatever the mesh.
DIRECT = LocalDataPlane()

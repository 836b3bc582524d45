"""Counters of the first hop the load generator talks to, read before and after a run.

They give the socket count (wrk has no connect hook) and an independent count of the
answers, which checks wrk's own accounting: nginx's ``stub_status`` here; a data plane
whose first hop is a proxy of its own reads that proxy's counters (see ``local.meshes``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshbench.local import nginx, probes
from meshbench.local.topology import Topology

log = logging.getLogger(__name__)

# wrk connects once to every address it resolved before the run starts, to check it.
WRK_ADDRESS_CHECKS = 1


@dataclass(frozen=True)
class Reading:
    connections: int
    answers: int


@dataclass(frozen=True)
class FirstHop:
    """How to read one first hop, and what its own readings add to its counters."""

    url: str
    namespace: str | None
    description: str
    answers_are: str  # what the answer counter counts
    parse: Callable[[str], Reading]
    # What a reading itself adds to the counters (a proxy's admin port adds nothing).
    own_connections_per_reading: int = 0
    own_answers_per_reading: int = 0
    # nginx counts every answer; a sidecar's 2xx counter leaves out answers of 400 or more.
    counts_error_answers: bool = True

    def read(self) -> Reading | None:
        try:
            answer = probes.get(self.url, self.namespace)
            if answer.status != 200:
                return None
            return self.parse(answer.body.decode(errors="replace"))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read %s at %s: %s", self.description, self.url, exc)
            return None

    def socket_count(self, before: Reading, after: Reading) -> int:
        """Connections the load generator opened during the run."""
        opened = after.connections - before.connections
        return max(opened - self.own_connections_per_reading - WRK_ADDRESS_CHECKS, 0)

    def answers(self, before: Reading, after: Reading) -> int:
        return after.answers - before.answers - self.own_answers_per_reading


def _stub_status_reading(text: str) -> Reading:
    page = nginx.parse_stub_status(text)
    return Reading(connections=page["accepts"], answers=page["requests"])


def nginx_first_hop(topology: Topology) -> FirstHop:
    """nginx's stub_status: the first hop of every path that reaches nginx unproxied."""
    return FirstHop(
        url=f"http://{topology.local_host('server')}:{topology.ports['nginx_status']}/status",
        namespace=topology.namespace("server"),
        description="nginx stub_status (accepts, requests)",
        answers_are="requests",
        parse=_stub_status_reading,
        # The reading after the run is itself one accepted connection and one request.
        own_connections_per_reading=1,
        own_answers_per_reading=1,
    )


def check_answers(
    hop: FirstHop, counted: int, requests: int, status_errors: int, connections: int
) -> dict[str, Any]:
    """Compare the first hop's count of answers with wrk's.

    ``counted`` is the first hop's delta. nginx counts every request it answered (wrk's
    ``requests``); the client sidecar counts 2xx answers (wrk's requests minus those of
    400 or more). A request in flight when wrk stops is answered but not counted by wrk,
    so the first hop may be ahead by up to one per connection.
    """
    expected = requests if hop.counts_error_answers else requests - status_errors
    consistent = expected <= counted <= expected + connections
    return {
        "source": hop.description,
        "first_hop_counted": counted,
        "first_hop_counts": hop.answers_are,
        "load_generator_counted": expected,
        "consistent": consistent,
    }

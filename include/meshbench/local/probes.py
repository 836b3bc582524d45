"""Single HTTP requests made from inside a cluster: readiness probes and counter reads."""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from urllib.parse import urlsplit

from meshbench.local import netns

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def get(url: str, namespace: str | None, timeout: float = PROBE_TIMEOUT_SECONDS) -> Response:
    """GET ``url`` from inside ``namespace``; raises OSError/HTTPException when unreachable."""
    parts = urlsplit(url)

    def request() -> Response:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            connection.request("GET", parts.path or "/", headers={"User-Agent": "meshbench"})
            answer = connection.getresponse()
            return Response(status=answer.status, body=answer.read())
        finally:
            connection.close()

    return netns.call_in(namespace, request)

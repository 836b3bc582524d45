"""An API-server middleware that refuses bad trigger parameters of the benchmark DAGs.

Airflow keeps unknown ``conf`` keys and words its schema errors in regular expressions;
this checks the DAG run's ``conf`` of a trigger (``POST /api/v2/dags/{dag_id}/dagRuns``,
which the UI's trigger form sends) and of a backfill (``POST /api/v2/backfills`` and its
dry run) with meshbench.pipeline.params and answers 400 with every problem in words, as
Airflow answers its own validation errors. Other requests pass untouched. Requests that
carry no credentials pass too, so Airflow refuses them as it would (no parameter names
are told to anyone not signed in).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from meshbench.config import load_config
from meshbench.pipeline.params import TriggerParamsInvalid, check_trigger

log = logging.getLogger(__name__)

_TRIGGER = re.compile(r"^/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")
_BACKFILL = re.compile(r"^/api/v2/backfills(/dry_run)?/?$")


def _has_credentials(scope: dict[str, Any]) -> bool:
    headers = dict(scope.get("headers") or [])
    return b"authorization" in headers or b"_token=" in headers.get(b"cookie", b"")


def problems_of(path: str, body: bytes) -> str | None:
    """The refusal for a trigger or backfill request, or None when it may go on."""
    trigger = _TRIGGER.match(path)
    if trigger is None and _BACKFILL.match(path) is None:
        return None
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return None  # Airflow answers malformed JSON itself
    if not isinstance(document, dict):
        return None
    if trigger is not None:
        dag_id, conf = trigger["dag_id"], document.get("conf")
    else:
        dag_id, conf = document.get("dag_id"), document.get("dag_run_conf")
    if not isinstance(dag_id, str) or not dag_id.startswith("meshbench_"):
        return None
    try:
        check_trigger(load_config(), dag_id, conf)
    except TriggerParamsInvalid as exc:
        return str(exc)
    return None


class TriggerParamsMiddleware:
    """Pure ASGI, so the request body can be read here and replayed to Airflow."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not (_TRIGGER.match(scope["path"]) or _BACKFILL.match(scope["path"]))
            or not _has_credentials(scope)
        ):
            await self.app(scope, receive, send)
            return
        messages = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        refusal = problems_of(scope["path"], body)
        if refusal is not None:
            log.info("refused %s: %s", scope["path"], refusal)
            payload = json.dumps({"detail": refusal}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return

        async def replay() -> dict[str, Any]:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

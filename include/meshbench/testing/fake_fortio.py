"""A stand-in Fortio server for tests: Fortio 1.40's REST endpoints on 127.0.0.1.

No Fortio binary can be installed on the build machines, so this implements the documented
behaviour of ``/fortio/rest/run`` (synchronous and ``async=on``), ``/fortio/rest/status``,
``/fortio/rest/stop`` and ``/fortio/data/<id>.json`` with the standard library's HTTP
server, and answers with real Fortio results (the study's files) given to it. It does not
generate load: a "run" lasts ``run_seconds`` and then its result is saved.

``mode`` makes it misbehave the way a real set-up can:

- ``"ok"``: runs finish after ``run_seconds`` and their result is saved.
- ``"error-reply"``: ``/rest/run`` answers HTTP 400 with Fortio's error reply.
- ``"hang"``: runs never finish (until stopped).
- ``"drop-after-start"``: the run starts, then every later request has its connection closed
  without a reply (a port-forward that died).
- ``"no-result"``: the run ends without a saved result (Fortio's async init errors).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MODES = ("ok", "error-reply", "hang", "drop-after-start", "no-result")


def fortio_id(run_id: int, labels: str, when: datetime) -> str:
    """Fortio's result id: date, run id, then the labels' letters and digits."""
    base = when.strftime("%Y-%m-%d-%H%M%S") + f"_{run_id}"
    if labels:
        base += "_" + re.sub(r"[^A-Za-z0-9]+", "_", labels).strip("_")
    return base


class FakeFortio:
    """Start with ``with FakeFortio(result_documents) as fortio: fortio.url ...``."""

    def __init__(
        self,
        results: list[dict[str, Any]],
        *,
        mode: str = "ok",
        run_seconds: float = 0.2,
        results_by_url: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        """``results_by_url``: runs whose target URL starts with a key are answered from
        that key's documents instead (two paths answering differently)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if not results:
            raise ValueError("give at least one Fortio result document to serve")
        self.mode = mode
        self.run_seconds = run_seconds
        self._results = results
        self._results_by_url = dict(results_by_url or {})
        self._lock = threading.Lock()
        self._next_id = 0
        self.running: dict[int, dict[str, Any]] = {}
        self.saved: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []  # (method, path, body)
        self.stopped: list[int] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- life cycle -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeFortio:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- behaviour --------------------------------------------------------------------
    def _result_for(self, run_id: int, body: dict[str, Any], result_id: str) -> dict[str, Any]:
        url = str(body.get("url", ""))
        results = next(
            (docs for prefix, docs in self._results_by_url.items() if url.startswith(prefix)),
            self._results,
        )
        document = copy.deepcopy(results[(run_id - 1) % len(results)])
        document["Labels"] = body.get("labels", "")
        document["RunID"] = run_id
        document["ID"] = result_id
        document["URL"] = body.get("url", document.get("URL"))
        return document

    def _finish(self, run_id: int, stopped: bool = False) -> None:
        with self._lock:
            state = self.running.pop(run_id, None)
        if state is None:
            return
        if self.mode == "no-result" and not stopped:
            return
        result = self._result_for(run_id, state["body"], state["result_id"])
        if stopped:
            elapsed = time.monotonic() - state["started"]
            result["ActualDuration"] = int(elapsed * 1e9)
        with self._lock:
            self.saved[state["result_id"]] = result

    def _start_run(self, body: dict[str, Any], seconds: float) -> tuple[int, str]:
        with self._lock:
            self._next_id += 1
            run_id = self._next_id
            result_id = fortio_id(run_id, body.get("labels", ""), datetime.now(UTC))
            self.running[run_id] = {
                "body": body,
                "result_id": result_id,
                "started": time.monotonic(),
            }
        if self.mode not in ("hang",):
            timer = threading.Timer(seconds, self._finish, args=(run_id,))
            timer.daemon = True
            timer.start()
        return run_id, result_id

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
                return

            def _reply(self, status: int, document: Any) -> None:
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _drop(self) -> None:
                # Close the socket without any reply, as a dead port-forward does.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _body(self) -> dict[str, Any] | None:
                length = int(self.headers.get("Content-Length") or 0)
                if not length:
                    return None
                return json.loads(self.rfile.read(length))

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_GET(self) -> None:
                self._dispatch("GET")

            def _dispatch(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                body = self._body() if method == "POST" else None
                with fake._lock:
                    fake.requests.append((method, parts.path, body))
                    started_any = fake._next_id > 0
                if fake.mode == "drop-after-start" and started_any:
                    self._drop()
                    return
                if parts.path == "/fortio/rest/run":
                    self._run(body or {}, query)
                elif parts.path == "/fortio/rest/status":
                    self._status(query)
                elif parts.path == "/fortio/rest/stop":
                    self._stop(query)
                elif parts.path.startswith("/fortio/data/") and parts.path.endswith(".json"):
                    result_id = parts.path.removeprefix("/fortio/data/").removesuffix(".json")
                    with fake._lock:
                        document = fake.saved.get(result_id)
                    if document is None:
                        self.send_error(404, "Not Found")
                    else:
                        self._reply(200, document)
                else:
                    self.send_error(404, "Not Found")

            def _run(self, body: dict[str, Any], query: dict[str, str]) -> None:
                values = {**{k: v for k, v in body.items() if isinstance(v, str)}, **query}
                if fake.mode == "error-reply":
                    self._reply(
                        400,
                        {
                            "error": True,
                            "message": "Aborting because of error",
                            "exception": "lookup nginx.mb-x on 10.96.0.10:53: no such host",
                        },
                    )
                    return
                if not values.get("url", "").strip():
                    self._reply(400, {"error": True, "message": "URL is required"})
                    return
                asynchronous = values.get("async") == "on"
                # Synchronous runs are short probes (n requests); answer them quickly.
                seconds = fake.run_seconds if asynchronous else min(fake.run_seconds, 0.05)
                run_id, result_id = fake._start_run(values, seconds)
                if asynchronous:
                    host = self.headers.get("Host", f"127.0.0.1:{fake.port}")
                    self._reply(
                        200,
                        {
                            "message": "started",
                            "RunID": run_id,
                            "Count": 1,
                            "ResultID": result_id,
                            "ResultURL": f"http://{host}/fortio/data/{result_id}.json",
                        },
                    )
                    return
                # Synchronous: wait for the run, answer with its result.
                deadline = time.monotonic() + fake.run_seconds + 5
                while time.monotonic() < deadline:
                    with fake._lock:
                        done = run_id not in fake.running
                    if done:
                        break
                    time.sleep(0.01)
                with fake._lock:
                    document = fake.saved.get(result_id)
                if document is None:
                    self._reply(400, {"error": True, "message": "Aborting because of error"})
                else:
                    document = dict(document)
                    document["RetCodes"] = {"200": int(values.get("n") or 1)}
                    self._reply(200, document)

            def _status(self, query: dict[str, str]) -> None:
                run_id = int(query.get("runid") or 0)
                with fake._lock:
                    if run_id:
                        state = fake.running.get(run_id)
                        statuses = {str(run_id): {"RunID": run_id, "State": 2}} if state else None
                    else:
                        statuses = {str(rid): {"RunID": rid, "State": 2} for rid in fake.running}
                self._reply(200, {"Statuses": statuses})

            def _stop(self, query: dict[str, str]) -> None:
                run_id = int(query.get("runid") or 0)
                with fake._lock:
                    found = run_id in fake.running
                    result_id = fake.running.get(run_id, {}).get("result_id", "")
                    fake.stopped.append(run_id)
                if found:
                    fake._finish(run_id, stopped=True)
                wait = query.get("wait", "") not in ("", "off", "false")
                self._reply(
                    200,
                    {
                        "message": "stopped" if (wait and found) else "stopping",
                        "RunID": run_id,
                        "Count": int(found),
                        "ResultID": result_id,
                    },
                )

        return Handler

"""A client for Fortio's REST API (1.40): asynchronous runs, status polling, result fetch.

One measured run: ``POST /fortio/rest/run`` with a JSON body whose values are all strings
(Fortio ignores non-string values), ``async=on`` and ``save=on``; Fortio answers at once
with the run id and the result id; ``/fortio/rest/status?runid=N`` lists the run while it
is going (it disappears from the map when done); the saved result is then served at
``/fortio/data/<ResultID>.json``. A cancelled task calls ``/fortio/rest/stop`` so the pod
does not keep loading the server.

:meth:`FortioClient.run` never raises for a failed measurement: an error reply, a run that
outlives its deadline, a dropped connection or an unusable result each come back as a
``FortioRun`` with ``failure`` set, keeping whatever was learned (ids, raw replies).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from meshbench.config import format_duration

log = logging.getLogger(__name__)

# Explicit, so p99.99 is there too and a Fortio default change cannot drop one.
PERCENTILES = "50,75,90,99,99.9,99.99"
RUN_PATH = "/fortio/rest/run"
STATUS_PATH = "/fortio/rest/status"
STOP_PATH = "/fortio/rest/stop"
DATA_PATH = "/fortio/data/{result_id}.json"


def format_resolution(seconds: float) -> str:
    """``0.00005`` rather than ``5e-05`` (what the study sent; both parse in Go)."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def format_labels(labels: Mapping[str, Any]) -> str:
    """Fortio keeps one free-text label string; ``key=value`` pairs separated by spaces."""
    return " ".join(f"{key}={str(value).replace(' ', '_')}" for key, value in labels.items())


@dataclass(frozen=True)
class FortioRequest:
    """One load run as Fortio's REST API takes it."""

    url: str
    qps: int  # 0 is "as fast as possible" (sent as -1, Fortio's max-speed value)
    connections: int
    duration: float  # seconds
    resolution: float = 0.00005
    labels: str = ""
    percentiles: str = PERCENTILES

    def body(self) -> dict[str, str]:
        """The JSON body; every value a string, as Fortio requires."""
        return {
            "url": self.url,
            "qps": str(self.qps if self.qps > 0 else -1),
            "c": str(self.connections),
            "t": format_duration(self.duration),
            "r": format_resolution(self.resolution),
            "p": self.percentiles,
            "labels": self.labels,
            "async": "on",
            "save": "on",
        }


@dataclass
class FortioRun:
    """What one run produced. ``result`` is Fortio's result JSON (kept when ``failure`` is
    set too, if it was fetched)."""

    request: FortioRequest
    result: dict[str, Any] | None = None
    failure: str | None = None
    run_id: int | None = None
    result_id: str | None = None
    started_at: float | None = None  # time.time() when Fortio accepted the run
    finished_at: float | None = None
    stopped: bool = False
    polls: int = 0
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """Context stored with the measurement."""
        return {
            "load_generator": "fortio",
            "fortio_request": self.request.body(),
            "fortio_run_id": self.run_id,
            "fortio_result_id": self.result_id,
            "fortio_stopped": self.stopped,
            "fortio_status_polls": self.polls,
            "fortio_notes": list(self.notes),
        }


class FortioError(Exception):
    """A REST call that failed; ``reason`` is the text stored as the negative reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reply_error(response: requests.Response) -> str:
    """Fortio's error reply ``{"error": true, "message": ..., "exception": ...}`` in words."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("message") or body.get("exception")):
        parts = [str(body.get("message") or "").strip(), str(body.get("exception") or "").strip()]
        return f"HTTP {response.status_code}: " + ": ".join(p for p in parts if p)
    text = response.text.strip().replace("\n", " ")
    return f"HTTP {response.status_code}: {text[:300] or 'empty reply'}"


class FortioClient:
    """Talks to one Fortio server (``base_url`` like ``http://127.0.0.1:43567``).

    ``http_timeout`` bounds each status/stop/data call; the run's own deadline is its
    duration plus ``grace``. ``connection_failures`` consecutive failed polls end the run
    (a lost port-forward does not come back).
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        poll_interval: float = 2.0,
        http_timeout: float = 30.0,
        grace: float = 60.0,
        connection_failures: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.poll_interval = poll_interval
        self.http_timeout = http_timeout
        self.grace = grace
        self.connection_failures = connection_failures
        self._sleep = sleep

    # -- single calls ------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            return self.session.request(
                method,
                url,
                params=params,
                data=json.dumps(body) if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=(min(10.0, self.http_timeout), timeout or self.http_timeout),
            )
        except requests.Timeout as exc:
            raise FortioError(
                f"no reply from Fortio at {url} within the time limit: {exc}"
            ) from None
        except requests.ConnectionError as exc:
            raise FortioError(f"lost connection to Fortio at {url}: {_root_cause(exc)}") from None
        except requests.RequestException as exc:
            raise FortioError(f"request to Fortio at {url} failed: {exc}") from None

    def _json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise FortioError(
                f"{what}: Fortio replied HTTP {response.status_code} with no JSON: "
                f"{response.text[:200]!r}"
            ) from None

    def start(self, request: FortioRequest) -> tuple[int, str]:
        """Start an async run; returns (RunID, ResultID)."""
        response = self._call("POST", RUN_PATH, body=request.body())
        if response.status_code != 200:
            raise FortioError(f"Fortio refused the run: {_reply_error(response)}")
        reply = self._json(response, "start")
        if not isinstance(reply, dict) or reply.get("error"):
            raise FortioError(f"Fortio refused the run: {reply!r}")
        run_id, result_id = reply.get("RunID"), reply.get("ResultID")
        if not isinstance(run_id, int) or not result_id:
            raise FortioError(f"Fortio's reply to an async run has no RunID/ResultID: {reply!r}")
        return run_id, str(result_id)

    def status(self, run_id: int) -> dict[str, Any] | None:
        """The run's status entry, or None once Fortio no longer lists it (finished)."""
        response = self._call("GET", STATUS_PATH, params={"runid": str(run_id)})
        if response.status_code != 200:
            raise FortioError(f"status of run {run_id}: {_reply_error(response)}")
        reply = self._json(response, "status")
        statuses = (reply or {}).get("Statuses") or {}
        entry = statuses.get(str(run_id))
        return entry if isinstance(entry, dict) else None

    def fetch_result(self, result_id: str) -> dict[str, Any]:
        response = self._call("GET", DATA_PATH.format(result_id=result_id))
        if response.status_code == 404:
            raise FortioError(
                f"Fortio saved no result {result_id}.json: the run ended without a result "
                f"(Fortio logs an init error, e.g. an unreachable URL, in the fortio pod's log)"
            )
        if response.status_code != 200:
            raise FortioError(f"result {result_id}: {_reply_error(response)}")
        document = self._json(response, f"result {result_id}")
        if not isinstance(document, dict):
            raise FortioError(f"result {result_id} is not a JSON object")
        return document

    def stop(self, run_id: int, wait: bool = True) -> dict[str, Any] | None:
        """Ask Fortio to stop ``run_id``; never raises (it runs on the failure path)."""
        try:
            response = self._call(
                "GET",
                STOP_PATH,
                params={"runid": str(run_id), "wait": "true" if wait else "false"},
            )
            return self._json(response, "stop") if response.status_code == 200 else None
        except FortioError as exc:
            log.warning("could not stop Fortio run %s: %s", run_id, exc.reason)
            return None

    # -- a whole run ------------------------------------------------------------------
    def run(
        self,
        request: FortioRequest,
        *,
        cancel: threading.Event | None = None,
        connection_lost: Callable[[], str | None] | None = None,
    ) -> FortioRun:
        """Start, poll until done (or the deadline), fetch the result.

        ``connection_lost`` returns why the path to Fortio is gone (a dead port-forward),
        which then becomes the reason. A ``KeyboardInterrupt``/``SystemExit`` (the task is
        being killed) stops the Fortio run before propagating.
        """
        outcome = FortioRun(request)
        try:
            outcome.run_id, outcome.result_id = self.start(request)
            outcome.started_at = time.time()
            log.info(
                "Fortio run %s started (%s, %s); result %s",
                outcome.run_id,
                request.url,
                format_duration(request.duration),
                outcome.result_id,
            )
            self._poll_until_done(outcome, cancel, connection_lost)
            if outcome.failure is None:
                outcome.result = self.fetch_result(outcome.result_id)
                outcome.finished_at = time.time()
                self._check_result(outcome)
        except FortioError as exc:
            outcome.failure = self._with_loss(exc.reason, connection_lost)
        except BaseException:
            if outcome.run_id is not None and not outcome.stopped:
                self.stop(outcome.run_id, wait=False)
            raise
        if outcome.failure:
            log.warning("Fortio run %s failed: %s", outcome.run_id, outcome.failure)
        return outcome

    @staticmethod
    def _with_loss(reason: str, connection_lost: Callable[[], str | None] | None) -> str:
        loss = connection_lost() if connection_lost else None
        return f"{loss}; {reason}" if loss else reason

    def _poll_until_done(
        self,
        outcome: FortioRun,
        cancel: threading.Event | None,
        connection_lost: Callable[[], str | None] | None,
    ) -> None:
        assert outcome.run_id is not None
        deadline = time.monotonic() + outcome.request.duration + self.grace
        failures = 0
        while True:
            if cancel is not None and cancel.is_set():
                self.stop(outcome.run_id)
                outcome.stopped = True
                outcome.failure = "cancelled: the Fortio run was stopped before it ended"
                return
            if time.monotonic() > deadline:
                self.stop(outcome.run_id)
                outcome.stopped = True
                outcome.failure = (
                    f"timed out: Fortio run {outcome.run_id} still running "
                    f"{outcome.request.duration + self.grace:g}s after it started "
                    f"(duration {outcome.request.duration:g}s + {self.grace:g}s grace); stopped it"
                )
                return
            try:
                entry = self.status(outcome.run_id)
                failures = 0
            except FortioError as exc:
                failures += 1
                outcome.notes.append(exc.reason)
                if failures >= self.connection_failures or (connection_lost and connection_lost()):
                    outcome.failure = self._with_loss(
                        f"{exc.reason} ({failures} failed status polls)", connection_lost
                    )
                    return
                entry = {}
            outcome.polls += 1
            if entry is None:
                return  # no longer listed: finished (or failed at start; the fetch tells)
            self._sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    @staticmethod
    def _check_result(outcome: FortioRun) -> None:
        """Only what proves this is our run's result; validity rules live in the loader."""
        result = outcome.result or {}
        if "error" in result or "exception" in result:
            outcome.failure = (
                f"Fortio reported an error in the result: "
                f"{result.get('error') or ''} {result.get('exception') or ''}".strip()
            )
            return
        if not isinstance(result.get("DurationHistogram"), dict):
            outcome.failure = "the result has no DurationHistogram: not a Fortio HTTP result"
            return
        if result.get("Labels", "") != outcome.request.labels:
            outcome.failure = (
                f"the result's labels {result.get('Labels')!r} are not this run's "
                f"{outcome.request.labels!r}: another run's result was served"
            )

    def probe(self, url: str, requests_count: int = 5) -> dict[str, Any]:
        """A short synchronous run through the path; returns Fortio's result. Raises
        ``FortioError`` when a request did not get a 200 (used by readiness checks)."""
        body = {
            "url": url,
            "qps": "-1",
            "c": "1",
            "n": str(requests_count),
            "timeout": "5s",
            "labels": "meshbench probe",
        }
        response = self._call("POST", RUN_PATH, body=body, timeout=self.http_timeout + 30)
        if response.status_code != 200:
            raise FortioError(f"probe of {url}: {_reply_error(response)}")
        result = self._json(response, "probe")
        codes = {str(k): v for k, v in (result.get("RetCodes") or {}).items()}
        if not codes or set(codes) != {"200"}:
            raise FortioError(f"probe of {url}: return codes {codes or 'none'} (want only 200)")
        return result


def _root_cause(exc: BaseException) -> str:
    """The innermost error text of a requests/urllib3 exception chain."""
    seen = exc
    while seen.__context__ is not None and seen.__context__ is not seen:
        seen = seen.__context__
    text = str(seen) or type(seen).__name__
    return text if len(text) < 300 else text[:300] + "…"

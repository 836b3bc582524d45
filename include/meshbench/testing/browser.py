"""Headless Chromium driven over the DevTools protocol, for end-to-end tests of pages.

Debian's chromium, started with the flags that keep it quiet (no background networking,
component updates, sync or QUIC) and a host resolver that resolves nothing, so it can
only load pages on 127.0.0.1. websocket-client speaks the protocol; no driver binary.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
QUIET_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--password-store=basic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


class BrowserError(RuntimeError):
    pass


class HeadlessChromium:
    """One browser process with one page; use as a context manager."""

    def __init__(self, profile_dir: Path, width: int = 1400, height: int = 1000) -> None:
        binary = find_chromium()
        if binary is None:
            raise BrowserError("chromium is not installed (scripts/install-system-packages.sh)")
        self.profile_dir = profile_dir
        self.command = [
            binary,
            *QUIET_FLAGS,
            f"--user-data-dir={profile_dir}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: websocket.WebSocket | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> HeadlessChromium:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.DEVNULL,
            stderr=(self.profile_dir / "chromium.log").open("wb"),
            start_new_session=True,  # its own process group, stopped as a whole
        )
        port = self._wait_for_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            targets = json.load(reply)
        page = next(target for target in targets if target["type"] == "page")
        self._socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
        )
        self.call("Page.enable")
        self.call("Network.enable")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=10)

    def _wait_for_port(self, timeout: float = 30) -> int:
        marker = self.profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise BrowserError("chromium did not open its DevTools port in time")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._socket is not None, "use HeadlessChromium as a context manager"
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv())
            if reply.get("id") != message_id:
                continue  # an event
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error']}")
            return reply.get("result", {})

    def set_cookie(self, name: str, value: str, url: str) -> None:
        result = self.call("Network.setCookie", name=name, value=value, url=url, httpOnly=True)
        if not result.get("success", True):
            raise BrowserError(f"cookie {name} was refused for {url}")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, ready: str = "true", timeout: float = 30) -> None:
        """Load ``url`` and wait until the page is loaded and ``ready`` (a JS expression)."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"document.readyState === 'complete' && ({ready})", timeout)

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.evaluate(f"Boolean({expression})"):
                    return
            except BrowserError:
                pass  # the document is being replaced
            time.sleep(0.2)
        raise BrowserError(f"timed out waiting for {expression}")

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page, not only the window."""
        width, height = self.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=int(width),
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        try:
            shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        finally:
            self.call("Emulation.clearDeviceMetricsOverride")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

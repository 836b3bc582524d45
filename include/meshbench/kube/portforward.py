"""``kubectl port-forward`` owned by a handle.

The study started port-forwards in the background and later killed every kubectl by name,
taking down anything else on the worker. Here the handle that started the process is the
only thing that stops it (its own process group, by pid), the local port is chosen by
kubectl and read from its output, and the output keeps being drained (kubectl prints a
line per connection; an unread pipe would stall it).
"""

from __future__ import annotations

import collections
import logging
import re
import subprocess
import threading
import time
from typing import Any

from meshbench.backend import StepFailed
from meshbench.kube.runner import CommandRunner, end_process_group

log = logging.getLogger(__name__)

_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")


class PortForwardError(StepFailed):
    pass


class PortForward:
    """A running port-forward; use as a context manager or call :meth:`stop`."""

    def __init__(self, process: subprocess.Popen[str], target: str, remote_port: int) -> None:
        self.process = process
        self.target = target
        self.remote_port = remote_port
        self.local_port: int | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=20)
        self._ready = threading.Event()
        self._reader = threading.Thread(
            target=self._drain, name=f"port-forward-{process.pid}", daemon=True
        )
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip()
            self._lines.append(line)
            match = _FORWARDING.search(line)
            if match and self.local_port is None:
                self.local_port = int(match.group(1))
                self._ready.set()
        self._ready.set()  # the process ended; wake whoever waits

    def wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(timeout=0.1):
                break
        if self.local_port is None:
            self.stop()
            raise PortForwardError(
                f"port-forward to {self.target}:{self.remote_port} did not start within "
                f"{timeout:g}s: {self.output() or 'no output'}"
            )
        log.info(
            "port-forward %s:%d listening on 127.0.0.1:%d (pid %d)",
            self.target,
            self.remote_port,
            self.local_port,
            self.process.pid,
        )
        return self.local_port

    @property
    def url(self) -> str:
        if self.local_port is None:
            raise PortForwardError("port-forward is not ready")
        return f"http://127.0.0.1:{self.local_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """The last lines kubectl printed (for failure reasons)."""
        routine = ("Handling connection", "Forwarding from")
        return " | ".join(line for line in self._lines if not line.startswith(routine))

    def describe_loss(self) -> str | None:
        """Why the port-forward is gone, or None while it is alive."""
        if self.alive():
            return None
        return (
            f"port-forward to {self.target}:{self.remote_port} exited with code "
            f"{self.process.returncode}: {self.output() or 'no output'}"
        )

    def stop(self, grace: float = 5.0) -> None:
        """End this port-forward's own process group; idempotent."""
        end_process_group(self.process, grace=grace)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._reader.join(timeout=grace)

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def port_forward_args(namespace: str, target: str, remote_port: int) -> list[str]:
    """``kubectl`` arguments; ``:PORT`` lets kubectl pick a free local port and print it."""
    return [
        "port-forward",
        "--namespace",
        namespace,
        "--address",
        "127.0.0.1",
        target,
        f":{remote_port}",
    ]


def start_port_forward(
    runner: CommandRunner,
    namespace: str,
    target: str,
    remote_port: int,
    ready_timeout: float = 30.0,
) -> PortForward:
    """Start ``kubectl port-forward`` to ``target`` (e.g. ``deployment/fortio``) and wait
    until it listens; the returned handle owns the process."""
    process = runner.start("kubectl", port_forward_args(namespace, target, remote_port))
    forward = PortForward(process, f"{namespace}/{target}", remote_port)
    forward.wait_ready(ready_timeout)
    return forward

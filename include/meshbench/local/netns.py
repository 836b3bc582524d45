"""Network namespaces: the two emulated clusters.

Work inside a namespace runs in a short-lived thread that has joined it with setns(2):
network namespaces are per thread on Linux, a socket stays in the namespace it was made
in, and a child process inherits the namespace (and CPU affinity) of the thread that
forked it. That avoids ``ip netns exec`` wrappers, so the pid of a started component is
the component itself.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from meshbench.backend import StepFailed
from meshbench.local import binaries

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT_SECONDS = 30

T = TypeVar("T")


def can_create_namespaces() -> bool:
    """Root (CAP_SYS_ADMIN) and iproute2 are needed for namespaces and veth pairs."""
    if os.geteuid() != 0:
        return False
    try:
        binaries.find("ip")
    except binaries.MissingBinary:
        return False
    return True


def _setns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"cannot enter network namespace {name}: {os.strerror(error)}")
    finally:
        os.close(fd)


def call_in(
    namespace: str | None, function: Callable[[], T], cpus: Sequence[int] | None = None
) -> T:
    """Run ``function`` in a thread inside ``namespace`` (None: this one), pinned to ``cpus``."""
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            if namespace is not None:
                _setns(namespace)
            if cpus:
                os.sched_setaffinity(0, set(cpus))
            outcome["value"] = function()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{namespace or 'host'}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def run(command: Sequence[str], what: str, namespace: str | None = None) -> str:
    """Run a short command (optionally inside a namespace); StepFailed names ``what`` failed."""
    argv = list(command)
    if namespace is not None:
        argv = [str(binaries.find("ip")), "netns", "exec", namespace, *argv]
    log.debug("running %s", " ".join(argv))
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(
            f"{what}: `{' '.join(argv)}` did not finish in {COMMAND_TIMEOUT_SECONDS} s"
        ) from None
    if completed.returncode != 0:
        message = (completed.stderr or completed.stdout).strip()
        raise StepFailed(f"{what}: `{' '.join(argv)}` failed: {message}")
    return completed.stdout


def ip(*arguments: str, what: str) -> str:
    return run([str(binaries.find("ip")), *arguments], what)


def list_namespaces() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(entry.name for entry in NETNS_DIR.iterdir())


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    if exists(name):
        log.info("network namespace %s exists already; adopting it", name)
        return
    ip("netns", "add", name, what=f"creating network namespace {name}")
    ip("-n", name, "link", "set", "lo", "up", what=f"bringing up loopback in {name}")


def delete(name: str) -> bool:
    """Delete the namespace; False when it was already gone."""
    if not exists(name):
        return False
    ip("netns", "delete", name, what=f"deleting network namespace {name}")
    return True


def link_exists(name: str, namespace: str | None = None) -> bool:
    arguments = ["-n", namespace] if namespace else []
    completed = subprocess.run(
        [str(binaries.find("ip")), *arguments, "link", "show", "dev", name],
        capture_output=True,
        text=True,
        check=False,
        timeout=COMMAND_TIMEOUT_SECONDS,
    )
    return completed.returncode == 0


def host_links() -> list[str]:
    """Interface names in this (the host's) namespace."""
    return sorted(entry.name for entry in Path("/sys/class/net").iterdir())


def connect_with_veth(client_ns: str, client_if: str, server_ns: str, server_if: str) -> None:
    """A veth pair with one end in each namespace, made there directly (never on the host)."""
    if link_exists(client_if, client_ns):
        return
    ip(
        "link",
        "add",
        client_if,
        "netns",
        client_ns,
        "type",
        "veth",
        "peer",
        "name",
        server_if,
        "netns",
        server_ns,
        what=f"creating veth pair {client_if}/{server_if}",
    )


def add_address(namespace: str, interface: str, cidr: str) -> None:
    shown = ip(
        "-n",
        namespace,
        "-o",
        "address",
        "show",
        "dev",
        interface,
        what=f"listing addresses of {interface} in {namespace}",
    )
    if f" {cidr} " not in shown:
        ip(
            "-n",
            namespace,
            "address",
            "add",
            cidr,
            "dev",
            interface,
            what=f"adding {cidr} to {interface} in {namespace}",
        )
    ip(
        "-n",
        namespace,
        "link",
        "set",
        interface,
        "up",
        what=f"bringing up {interface} in {namespace}",
    )

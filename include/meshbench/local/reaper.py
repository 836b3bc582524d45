"""Leftovers of local runs: finding them (tests assert there are none) and removing them
(``meshbench local reap`` after a crash).

Only processes recorded in a state file are ever signalled, and only after checking that
each still is the program that was started. Namespaces and interfaces are recognised by
meshbench's naming scheme; a process found inside a namespace without a record is
reported, never killed.
"""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meshbench.backend import StepFailed
from meshbench.local import binaries, netns, processes
from meshbench.local import wireguard as wg
from meshbench.local.processes import ProcessRecord
from meshbench.local.state import SUMMARY_SUFFIX, default_root, list_runs
from meshbench.local.topology import Topology, short_id

log = logging.getLogger(__name__)

NAMESPACE_PATTERN = re.compile(r"^(mb-[a-z0-9]{4,12})-(client|server)$")
INTERFACE_PATTERN = re.compile(r"^mb-[a-z0-9]{8}-(c|s|wgc|wgs)$")
SOCKET_PATTERN = re.compile(r"^(mb-[a-z0-9]{8}-wg[cs])\.sock$")
_TCP_LISTEN = "0A"
# Longer than any single task of a local run (a measure task of the study profile makes six
# 60 s runs), so a live run is never taken for a crashed one.
DEFAULT_MIN_IDLE_SECONDS = 30 * 60.0
SUMMARY_KEEP_SECONDS = 7 * 24 * 3600.0


@dataclass
class ReapReport:
    stopped: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    state_folders: list[str] = field(default_factory=list)
    unrecorded_processes: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def removed_anything(self) -> bool:
        return bool(
            self.stopped or self.namespaces or self.interfaces or self.sockets or self.state_folders
        )


def namespace_pids(name: str) -> list[int]:
    try:
        output = subprocess.run(
            [str(binaries.find("ip")), "netns", "pids", name],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout
    except (OSError, binaries.MissingBinary):
        return []
    return [int(token) for token in output.split() if token.isdigit()]


def _socket_answers(path: Path) -> bool:
    """A live wireguard-go (of a run in another state folder, say) accepts connections."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def namespace_age_seconds(name: str) -> float:
    try:
        return max(time.time() - (netns.NETNS_DIR / name).stat().st_mtime, 0.0)
    except FileNotFoundError:
        return 0.0


def _prefix_of(namespace: str) -> str | None:
    match = NAMESPACE_PATTERN.match(namespace)
    return match.group(1) if match else None


def reap(
    root: Path | None = None,
    keep: Collection[str] = (),
    only: Collection[str] | None = None,
    min_idle_seconds: float = DEFAULT_MIN_IDLE_SECONDS,
) -> ReapReport:
    """Remove local runs' leftovers: every run's (``only``: just these prefixes) except the
    runs whose prefix is in ``keep`` and runs active in the last ``min_idle_seconds``.

    A run is active while its tasks touch its state (every start, stop and measurement);
    between two tasks of a live DAG run nothing runs, so only age tells a crashed run from
    a live one. Namespaces without a state folder here may belong to another state folder
    (another checkout, a test): they are removed only once they are that old too."""
    report = ReapReport()

    def wanted(prefix: str) -> bool:
        return prefix not in keep and (only is None or prefix in only)

    reaped_prefixes: set[str] = set()
    active_prefixes: set[str] = set()
    for folder in list_runs(root):
        if not wanted(folder.prefix):
            continue
        try:
            state = folder.read()
            unreadable = None
        except (ValueError, KeyError, TypeError) as exc:
            unreadable = f"{folder.state_path}: unreadable state ({exc}); removed"
            state = None
        idle = folder.idle_seconds()
        # A run whose owning process is gone (killed, out of memory) will never tear
        # itself down, however recently it was active.
        orphaned = state is not None and state.owner_gone()
        if idle < min_idle_seconds and not orphaned:
            report.active.append(f"{folder.prefix} (active {idle:.0f} s ago)")
            active_prefixes.add(folder.prefix)
            continue
        if orphaned:
            report.orphaned.append(f"{folder.prefix} (owner pid {state.owner_pid} is gone)")
        if unreadable:
            report.problems.append(unreadable)
        reaped_prefixes.add(folder.prefix)
        if state is not None:
            records = {
                (record.pid, record.start_ticks): record
                for record in [*state.processes.values(), *state.history]
            }
            for record in records.values():
                hit = processes.stop(record)
                if hit:
                    report.stopped.append(f"{record.name} (pids {', '.join(map(str, hit))})")
            for cluster in ("client", "server"):
                path = wg.socket_path(state.topology.wireguard_interface(cluster))
                if path.exists():
                    path.unlink(missing_ok=True)
                    report.sockets.append(str(path))
        folder.remove()
        report.state_folders.append(str(folder.path))

    # Summaries of finished runs are kept for the results loader; old ones are litter.
    base = root or default_root()
    if base.is_dir():
        for path in base.glob(f"mb-*{SUMMARY_SUFFIX}"):
            prefix = path.name.removesuffix(SUMMARY_SUFFIX)
            age = time.time() - path.stat().st_mtime
            if wanted(prefix) and age > max(min_idle_seconds, SUMMARY_KEEP_SECONDS):
                path.unlink(missing_ok=True)
                report.state_folders.append(str(path))

    for name in netns.list_namespaces():
        prefix = _prefix_of(name)
        if prefix is None or not wanted(prefix) or prefix in active_prefixes:
            continue
        if prefix not in reaped_prefixes:
            age = namespace_age_seconds(name)
            if age < min_idle_seconds:
                active_prefixes.add(prefix)
                report.active.append(f"{prefix} (namespace made {age:.0f} s ago)")
                continue
        for pid in namespace_pids(name):
            # Not in any state file: it is not ours to kill. Deleting the name leaves the
            # namespace alive as long as this process is.
            report.unrecorded_processes.append(f"pid {pid} in namespace {name}")
        try:
            netns.delete(name)
            report.namespaces.append(name)
        except StepFailed as exc:
            report.problems.append(str(exc))

    def wanted_interface(name: str) -> bool:
        run_id = name.split("-")[1]
        spared = [*keep, *active_prefixes]
        return not any(short_id(prefix.removeprefix("mb-")) == run_id for prefix in spared) and (
            only is None or any(short_id(prefix.removeprefix("mb-")) == run_id for prefix in only)
        )

    for name in netns.host_links():
        if INTERFACE_PATTERN.match(name) and wanted_interface(name):
            try:
                netns.ip("link", "delete", name, what=f"deleting interface {name}")
                report.interfaces.append(name)
            except StepFailed as exc:
                report.problems.append(str(exc))

    if wg.SOCKET_DIR.is_dir():
        for path in wg.SOCKET_DIR.iterdir():
            match = SOCKET_PATTERN.match(path.name)
            if match and wanted_interface(match.group(1)) and not _socket_answers(path):
                path.unlink(missing_ok=True)
                report.sockets.append(str(path))
    return report


def reap_orphans(root: Path | None = None) -> ReapReport:
    """Remove only the runs whose owning process is gone: safe beside any live run, so
    every local run calls it before it measures (``meshbench local run`` and the DAGs'
    ``create_clusters``)."""
    orphans = []
    for folder in list_runs(root):
        try:
            state = folder.read()
        except (ValueError, KeyError, TypeError):
            continue  # left to the age rule of a full reap
        if state is not None and state.owner_gone():
            orphans.append(folder.prefix)
    if not orphans:
        return ReapReport()
    report = reap(root, only=orphans, min_idle_seconds=float("inf"))
    if report.removed_anything:
        log.warning("reaped runs whose owner is gone: %s", ", ".join(report.orphaned))
    return report


def listening_sockets(addresses: Iterable[str], ports: Iterable[int]) -> list[str]:
    """TCP listeners in this namespace on any of ``ports`` at any of ``addresses``.

    A run's components never bind the wildcard address of this namespace (in netns mode
    they live in their own namespaces), so a wildcard listener on the same port number is
    someone else's and is not reported."""
    wanted_addresses = set(addresses)
    wanted_ports = set(ports)
    found = []
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state != _TCP_LISTEN:
            continue
        address_hex, port_hex = local.split(":")
        address = ".".join(str(int(address_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
        port = int(port_hex, 16)
        if address in wanted_addresses and port in wanted_ports:
            found.append(f"{address}:{port}")
    return found


def find_leftovers(topology: Topology, started: Iterable[ProcessRecord]) -> list[str]:
    """Everything of one run that still exists: namespaces, live processes it started,
    listeners on its addresses and ports, interfaces and WireGuard control sockets."""
    leftovers = [f"namespace {name}" for name in topology.namespaces if netns.exists(name)]
    leftovers += [
        f"process {record.name} (pid {pid})" for record in started for pid in record.members()
    ]
    addresses = [
        topology.client_address,
        topology.server_address,
        topology.tunnel_client_address,
        topology.tunnel_server_address,
    ]
    leftovers += [
        f"listener {where}" for where in listening_sockets(addresses, topology.ports.values())
    ]
    host = set(netns.host_links())
    leftovers += [f"interface {name}" for name in topology.interfaces if name in host]
    leftovers += [
        f"socket {wg.socket_path(name)}"
        for name in (topology.wireguard_interface("client"), topology.wireguard_interface("server"))
        if wg.socket_path(name).exists()
    ]
    return leftovers

"""The state file of one local run: what exists, so any task process (or the reaper) can
find and remove it.

Layout: ``<state_dir>/local/<prefix>/state.json`` beside the run's generated configs, keys
and logs. Every change is a locked read-modify-write followed by an atomic rename, and
a component is recorded the moment it is started, so a crash leaves nothing unrecorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshbench.local.processes import ProcessRecord, read_stat
from meshbench.local.topology import Topology
from meshbench.paths import state_dir

STATE_FILE = "state.json"
LOCAL_FOLDER = "local"
SUMMARY_SUFFIX = ".summary.json"


def default_root() -> Path:
    return state_dir() / LOCAL_FOLDER


@dataclass
class RunState:
    prefix: str
    mesh: str
    created_at: str
    topology: Topology
    versions: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    # Every process this run ever started, so checks for leftovers cover stopped ones too.
    history: list[ProcessRecord] = field(default_factory=list)
    installed_iteration: int | None = None
    # The process that runs the whole run (``meshbench local run``), when one does: once
    # it is gone, nothing will tear the run down, and the reaper may at once. DAG runs have
    # none (their task processes come and go; the machine lease covers them).
    owner_pid: int | None = None
    owner_start_ticks: int | None = None

    def owner_gone(self) -> bool:
        if self.owner_pid is None:
            return False
        stat = read_stat(self.owner_pid)
        return stat is None or not stat.alive or stat.start_ticks != self.owner_start_ticks

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "mesh": self.mesh,
            "created_at": self.created_at,
            "topology": self.topology.to_dict(),
            "versions": self.versions,
            "processes": {name: record.to_dict() for name, record in self.processes.items()},
            "history": [record.to_dict() for record in self.history],
            "installed_iteration": self.installed_iteration,
            "owner_pid": self.owner_pid,
            "owner_start_ticks": self.owner_start_ticks,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(
            prefix=data["prefix"],
            mesh=data["mesh"],
            created_at=data["created_at"],
            topology=Topology.from_dict(data["topology"]),
            versions=dict(data.get("versions") or {}),
            processes={
                name: ProcessRecord.from_dict(record)
                for name, record in (data.get("processes") or {}).items()
            },
            history=[ProcessRecord.from_dict(record) for record in data.get("history") or []],
            installed_iteration=data.get("installed_iteration"),
            owner_pid=data.get("owner_pid"),
            owner_start_ticks=data.get("owner_start_ticks"),
        )

    def record_process(self, record: ProcessRecord) -> None:
        self.processes[record.name] = record
        self.history.append(record)


class RunFolder:
    """The folder of one run: state file, generated configs, keys, logs."""

    def __init__(self, root: Path, prefix: str) -> None:
        self.root = root
        self.prefix = prefix
        self.path = root / prefix

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    def exists(self) -> bool:
        return self.state_path.exists()

    def file(self, *parts: str) -> Path:
        target = self.path.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_private(self, name: str, content: bytes) -> Path:
        """Keys: readable by this user only, written without a window where others could."""
        target = self.file(name)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        return target

    def read(self) -> RunState | None:
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return None
        return RunState.from_dict(json.loads(text))

    def _write(self, state: RunState) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.path / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(state.to_dict(), indent=2, sort_keys=True))
        temporary.replace(self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create(self, state: RunState) -> RunState:
        """Write a new state unless one exists (a retried task adopts the earlier one)."""
        with self._locked():
            existing = self.read()
            if existing is not None:
                return existing
            self.path.chmod(0o700)  # private keys and logs live here
            self._write(state)
            return state

    @contextlib.contextmanager
    def update(self) -> Iterator[RunState]:
        with self._locked():
            state = self.read()
            if state is None:
                raise FileNotFoundError(f"no local run state at {self.state_path}")
            yield state
            self._write(state)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def summary_path(self) -> Path:
        # Beside the folder, not in it: the folder goes at teardown, the summary stays.
        return self.root / f"{self.prefix}{SUMMARY_SUFFIX}"

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.summary_path.write_text(json.dumps({**summary, "deleted_at": now_iso()}, indent=2))

    def read_summary(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.summary_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def touch(self) -> None:
        """Mark the run as active: the reaper leaves recently active runs alone."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.state_path)

    def idle_seconds(self) -> float:
        """Seconds since the state last changed or a measurement started (0 if missing)."""
        try:
            return max(time.time() - self.state_path.stat().st_mtime, 0.0)
        except FileNotFoundError:
            return 0.0


def this_process() -> tuple[int, int | None]:
    """This process's pid and start time, to record it as a run's owner."""
    stat = read_stat(os.getpid())
    return os.getpid(), stat.start_ticks if stat else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def list_runs(root: Path | None = None) -> list[RunFolder]:
    base = root or default_root()
    if not base.is_dir():
        return []
    return [RunFolder(base, entry.name) for entry in sorted(base.iterdir()) if entry.is_dir()]

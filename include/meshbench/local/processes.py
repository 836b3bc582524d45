"""Long-lived processes of the local environment: started detached, stopped by pid.

Airflow runs every task in a process of its own, so a component started by one task
(nginx in ``deploy_workloads``) is stopped by another (``uninstall_mesh``). Each component
therefore gets a session of its own (it outlives the task process that started it) and is
recorded by pid *and* start time: a pid alone may have been reused by the time teardown
runs. Teardown signals exactly the recorded processes and the members of their sessions
(nginx's workers), after checking that each still is the program that was started.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from meshbench.local import netns

log = logging.getLogger(__name__)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that teardown and CPU accounting need."""

    pid: int
    command_name: str
    state: str
    session: int
    utime_ticks: int
    stime_ticks: int
    start_ticks: int

    @property
    def alive(self) -> bool:
        # A zombie has exited; it only waits for its parent (or init) to collect it.
        return self.state not in ("Z", "X", "x")

    @property
    def cpu_seconds(self) -> float:
        return (self.utime_ticks + self.stime_ticks) / CLOCK_TICKS


def read_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    name_end = text.rfind(")")
    fields = text[name_end + 2 :].split()
    return ProcStat(
        pid=pid,
        command_name=text[text.find("(") + 1 : name_end],
        state=fields[0],
        session=int(fields[3]),
        utime_ticks=int(fields[11]),
        stime_ticks=int(fields[12]),
        start_ticks=int(fields[19]),
    )


def session_members(session: int) -> list[ProcStat]:
    """Every live process of a session, by pid, from /proc/<pid>/stat (readable by anyone)."""
    found = []
    for entry in Path("/proc").iterdir():
        stat = read_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and stat.alive and stat.session == session:
            found.append(stat)
    return sorted(found, key=lambda stat: stat.pid)


# The kernel keeps a program's command name (/proc/<pid>/comm) to 15 bytes.
COMMAND_NAME_LENGTH = 15
# executable(): the program file exists but may not be read.
HIDDEN = "<hidden>"


def executable(pid: int) -> str | None:
    """The process's program file; HIDDEN when only permissions keep it from being read.

    Reading /proc/<pid>/exe of another user's process needs CAP_SYS_PTRACE. Root has it on a
    machine, but not in a default Docker or Kubernetes container, where the program of
    nginx's workers (which run as ``nobody``) cannot be read at all."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except PermissionError:
        return HIDDEN
    except OSError:
        return None


@dataclass(frozen=True)
class ProcessRecord:
    """One started component, as the state file remembers it."""

    name: str
    pid: int
    start_ticks: int
    executable: str
    cluster: str
    log_path: str
    argv: list[str] = field(default_factory=list)
    namespace: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(**data)

    def _is_ours(self, pid: int, stat: ProcStat | None) -> bool:
        if stat is None or not stat.alive or stat.start_ticks < self.start_ticks:
            return False
        if pid == self.pid and stat.start_ticks != self.start_ticks:
            return False  # the pid was reused by a process started later
        exe = executable(pid)
        if exe == HIDDEN:
            # Where root may not read the program (see executable()), the command name exec
            # gave the process tells it apart, beside its start time (above) and its session
            # (members()). Skipping it would leave nginx's workers running, and serving,
            # after their master was stopped or killed.
            return stat.command_name == Path(self.executable).name[:COMMAND_NAME_LENGTH]
        return exe is not None and os.path.realpath(exe) == os.path.realpath(self.executable)

    def is_running(self) -> bool:
        return self._is_ours(self.pid, read_stat(self.pid))

    def members(self) -> list[int]:
        """Live pids of this component: the leader and whatever it forked in its session."""
        return [stat.pid for stat in session_members(self.pid) if self._is_ours(stat.pid, stat)]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the live members (exited members are not counted)."""
        total = 0.0
        for pid in self.members():
            stat = read_stat(pid)
            if stat is not None:
                total += stat.cpu_seconds
        return total

    def log_tail(self, limit: int = 1500) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:].strip()


def start(
    name: str,
    argv: Sequence[str],
    *,
    cluster: str,
    log_path: Path,
    namespace: str | None = None,
    cpus: Sequence[int] | None = None,
    env: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start ``argv`` detached (own session), inside ``namespace`` and pinned to ``cpus``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **(env or {})}

    def spawn() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log_file:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=environment,
            )

    process = netns.call_in(namespace, spawn, cpus=cpus)
    stat = read_stat(process.pid)
    if stat is None:
        raise RuntimeError(f"{name} exited at once; see {log_path}")
    record = ProcessRecord(
        name=name,
        pid=process.pid,
        start_ticks=stat.start_ticks,
        executable=os.path.realpath(argv[0]),
        cluster=cluster,
        log_path=str(log_path),
        argv=list(argv),
        namespace=namespace,
    )
    log.info(
        "started %s (pid %s) in %s: %s",
        name,
        process.pid,
        namespace or "this namespace",
        " ".join(argv),
    )
    return record


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _reap(pid: int) -> None:
    # Collects the exit status when this process is the parent (tests, the CLI); an
    # orphan started by an earlier task is collected by init instead.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(record: ProcessRecord, grace_seconds: float = STOP_GRACE_SECONDS) -> list[int]:
    """Stop the component: SIGTERM, then SIGKILL after the grace period. Returns pids hit."""
    pids = record.members()
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    remaining = pids
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        for pid in remaining:
            _reap(pid)
        remaining = [pid for pid in remaining if record._is_ours(pid, read_stat(pid))]
    for pid in remaining:
        log.warning(
            "%s (pid %s) ignored SIGTERM for %.0f s; killing it", record.name, pid, grace_seconds
        )
        _signal(pid, signal.SIGKILL)
    for pid in remaining:
        for _ in range(100):
            _reap(pid)
            if not record._is_ours(pid, read_stat(pid)):
                break
            time.sleep(0.02)
    _reap(record.pid)
    return pids


def wait_gone(pid: int) -> None:
    """Collect a child that was killed on purpose (fault injection in tests)."""
    with contextlib.suppress(ChildProcessError):
        try:
            os.waitpid(pid, 0)
        except OSError as exc:
            if exc.errno != errno.ECHILD:
                raise

"""The local environment's machine lease: one local run at a time on a machine, DAG runs
and ``meshbench local run`` alike.

The one-slot pool keeps local tasks from running at once, but tasks of several DAG runs
(three local DAGs on one schedule, a backfill beside a scheduled run) would still
interleave, and a measurement would run next to another run's idle proxies. The run whose
``create_clusters`` takes the lease holds the machine until its ``delete_clusters``; other
runs' ``create_clusters`` reschedule themselves (freeing the pool slot) until it is free.

Each step of the holder renews the lease, recording its process. A lease whose process is
gone and that no step renewed for ``ORPHAN_AFTER_SECONDS`` (more than the gap between two
tasks), or that nobody renewed for ``stale_after``, belongs to a run that died without
its teardown (a killed scheduler, an interrupted ``make run``); the next run takes it
over and reaps what the dead run left. A run made in one process is free to take over
as soon as that process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

LEASE_ENV_VAR = "MESHBENCH_LOCAL_LEASE"
DEFAULT_LEASE = Path("/tmp/meshbench-local-lease.json")
RESCHEDULE_SECONDS = 20
ORPHAN_AFTER_SECONDS = 120.0


@dataclass(frozen=True)
class Holder:
    owner: str  # dag id, run id and attempt
    prefix: str  # the run's resource prefix, mb-<slug>
    renewed_at: float
    pid: int = 0  # the process of the step that renewed it last
    # The whole run is in that one process (``meshbench local run``): there is no gap
    # between tasks to wait out, so the lease is free the moment the process is gone.
    single_process: bool = False

    def age(self) -> float:
        return time.time() - self.renewed_at

    def process_alive(self) -> bool:
        if self.pid <= 0:
            return True  # unknown: rely on the age alone
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def is_stale(self, stale_after: float) -> bool:
        if self.age() > stale_after:
            return True
        if self.single_process:
            return not self.process_alive()
        return self.age() > ORPHAN_AFTER_SECONDS and not self.process_alive()


def lease_path() -> Path:
    return Path(os.environ.get(LEASE_ENV_VAR) or DEFAULT_LEASE)


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    path = lease_path()
    with path.with_suffix(".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write(path: Path, holder: Holder) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(holder)))
    temporary.replace(path)


def current() -> Holder | None:
    with _locked() as path:
        return _read(path)


def acquire(
    owner: str, prefix: str, stale_after: float, single_process: bool = False
) -> tuple[bool, Holder | None]:
    """Take the lease; returns (taken, the previous holder if it was stale, else the holder)."""
    with _locked() as path:
        holder = _read(path)
        taken = Holder(owner, prefix, time.time(), os.getpid(), single_process)
        if holder is None or holder.owner == owner:
            _write(path, taken)
            return True, None
        if holder.is_stale(stale_after):
            log.warning(
                "taking over the local lease from %s, silent for %.0f s (its process %s)",
                holder.owner,
                holder.age(),
                "alive" if holder.process_alive() else "gone",
            )
            _write(path, taken)
            return True, holder
        return False, holder


def renew(owner: str, quiet: bool = False) -> bool:
    """Renew the lease if ``owner`` holds it; False otherwise, with a warning unless
    ``quiet`` (teardowns run after the lease is released, or lost, by design)."""
    with _locked() as path:
        holder = _read(path)
        if holder is None or holder.owner != owner:
            if quiet:
                return False
            log.warning(
                "the local lease is held by %s, not by %s",
                holder.owner if holder else "nobody",
                owner,
            )
            return False
        _write(path, replace(holder, renewed_at=time.time(), pid=os.getpid()))
        return True


def release(owner: str) -> None:
    with _locked() as path:
        holder = _read(path)
        if holder is not None and holder.owner == owner:
            path.unlink(missing_ok=True)

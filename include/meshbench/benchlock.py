"""One benchmark at a time on a machine, across processes and checkouts.

Airflow's one-slot pool keeps local DAG tasks apart, but `make run`, `make test` and
`meshbench local run` may start beside it; a machine-wide file lock keeps their
measurements from overlapping.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_ENV_VAR = "MESHBENCH_BENCHMARK_LOCK"
DEFAULT_LOCK = Path("/tmp/meshbench-benchmark.lock")


@contextlib.contextmanager
def exclusive_benchmark(what: str, timeout: float = 3600.0) -> Iterator[None]:
    path = Path(os.environ.get(LOCK_ENV_VAR) or DEFAULT_LOCK)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.info("waiting for another benchmark on this machine before %s", what)
                    announced = True
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another benchmark held {path} for {timeout:.0f} s; {what} not run"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

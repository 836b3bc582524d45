"""``meshbench ui``: Airflow standalone, watched, and stopped with everything it started.

``airflow standalone`` answers SIGTERM by leaving its scheduler, API server, triggerer and
executor workers running, so it is not handed the terminal: it runs in a session of its
own, and Ctrl+C, SIGTERM or ``meshbench stop`` make this process stop that whole tree (a
polite SIGTERM, then SIGKILL for what is still there), reap the local run Airflow was in
the middle of, and stop the private Postgres if this start started it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from meshbench.paths import state_dir
from meshbench.postgres import PrivatePostgres

log = logging.getLogger(__name__)

PID_FILE = "ui.pid"
STOP_GRACE_SECONDS = 30.0
UI_WAIT_SECONDS = 300.0


def pid_file() -> Path:
    return state_dir() / PID_FILE


def admin_password(airflow_home: Path) -> str | None:
    path = airflow_home / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(path.read_text()).get("admin")
    except (OSError, ValueError):
        return None


def _ui_answers(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/version", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _tree(process: subprocess.Popen) -> list[psutil.Process]:
    """The process and everything below it, and anything else left in its session."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(process.pid)
        found[root.pid] = root
        for child in root.children(recursive=True):
            found[child.pid] = child
    for candidate in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(candidate.pid) == process.pid:
                found[candidate.pid] = candidate
    return list(found.values())


def stop_tree(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> list[str]:
    """SIGTERM the whole tree, wait ``grace`` seconds, SIGKILL the rest; returns what
    needed SIGKILL."""
    members = _tree(process)
    for member in members:
        with contextlib.suppress(psutil.Error):
            member.terminate()
    _, alive = psutil.wait_procs(members, timeout=grace)
    # What the first snapshot missed (started while stopping) is still in the session.
    alive += [m for m in _tree(process) if m not in alive]
    killed = []
    for member in alive:
        with contextlib.suppress(psutil.Error):
            killed.append(f"{member.pid} {' '.join(member.cmdline())[:120]}")
            member.kill()
    psutil.wait_procs(alive, timeout=10)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return killed


def reap_interrupted_local_run() -> None:
    """The local run whose tasks were just stopped never reaches its teardown: reap it."""
    from meshbench.local.reaper import reap
    from meshbench.local.state import default_root
    from meshbench.pipeline import lease

    holder = lease.current()
    if holder is None or not (default_root() / holder.prefix).exists():
        return  # no local run, or another checkout's
    report = reap(only=[holder.prefix], min_idle_seconds=0)
    lease.release(holder.owner)
    print(f"removed what the interrupted run {holder.owner} left: {report}", flush=True)


def run_standalone(
    airflow_bin: str, env: dict[str, str], airflow_home: Path, postgres_started: bool
) -> int:
    port = env["AIRFLOW__API__PORT"]
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    pid_file().write_text(str(os.getpid()))
    process = subprocess.Popen([airflow_bin, "standalone"], env=env, start_new_session=True)
    announced = False
    began = time.monotonic()
    try:
        while process.poll() is None and not stop.wait(1.0):
            if not announced and _ui_answers(port):
                announced = True
                password = admin_password(airflow_home)
                print(
                    f"\nmeshbench: Airflow answers on http://127.0.0.1:{port}; log in as "
                    f"'admin' with password {password or '(not generated yet)'} (kept in "
                    f"{airflow_home / 'simple_auth_manager_passwords.json.generated'}). "
                    "Stop with Ctrl+C or `make stop`.\n",
                    flush=True,
                )
            elif not announced and time.monotonic() - began > UI_WAIT_SECONDS:
                announced = True
                print(f"meshbench: the UI did not answer in {UI_WAIT_SECONDS:.0f} s", flush=True)
    finally:
        print("meshbench: stopping Airflow and everything it started…", flush=True)
        killed = stop_tree(process)
        if killed:
            print(f"meshbench: needed SIGKILL: {'; '.join(killed)}", flush=True)
        reap_interrupted_local_run()
        if postgres_started:
            PrivatePostgres.for_project().stop()
            print("meshbench: stopped the private Postgres this start had started", flush=True)
        pid_file().unlink(missing_ok=True)
    return 0 if stop.is_set() else (process.returncode or 0)


def stop_everything(timeout: float = STOP_GRACE_SECONDS + 60) -> list[str]:
    """``meshbench stop``: the running ``meshbench ui`` of this checkout, then the private
    Postgres. Returns what was stopped."""
    stopped = []
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file().read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
                psutil.Process(pid).wait(timeout=timeout)
            stopped.append(f"meshbench ui (pid {pid})")
    server = PrivatePostgres.for_project()
    with contextlib.suppress(Exception):
        if server.is_running():
            server.stop()
            stopped.append(f"private Postgres ({server.data_dir})")
    return stopped

"""A private Postgres server in the project's state folder.

Used when no results database is configured, so ``make run`` and ``make test`` work on a
fresh machine. Postgres refuses to run as root, so as root the server runs as the
``postgres`` system user. One server holds both the results database and, for the local
Airflow, Airflow's metadata database (separate databases).

Who may connect: over TCP (127.0.0.1) only with the superuser's password, generated once
into ``.state/postgres-password`` (mode 0600, readable by the checkout's owner only); over
the Unix socket in the data folder (mode 0700, so only the server's OS user and root reach
it) without one, which is how this module itself runs psql. A cluster made by an older
version with ``trust`` for every local connection gets this configuration on its next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from meshbench.paths import state_dir

log = logging.getLogger(__name__)

PORT_RANGE_START = 54100
PORT_RANGE_SIZE = 800
RESULTS_DATABASE = "meshbench"
AIRFLOW_DATABASE = "airflow"
START_TIMEOUT_SECONDS = 60
PASSWORD_FILE_NAME = "postgres-password"
SUPERUSER = "postgres"
# Socket: the OS user that runs the server (or root through it); TCP: the password only.
HBA_CONF = f"""# Written by meshbench (include/meshbench/postgres.py) at every start.
local   all   {SUPERUSER}   trust
host    all   all           127.0.0.1/32   scram-sha-256
"""


class PostgresUnavailable(RuntimeError):
    """No Postgres server binaries, or the server did not start; the message says why."""


def find_server_bindir() -> Path:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise PostgresUnavailable(
        "no Postgres server found (initdb and pg_ctl); install Debian's 'postgresql' package "
        "(`make install` does), or set MESHBENCH_DATABASE_URL to a server you run"
    )


def _port_for(path: Path) -> int:
    digest = hashlib.sha256(str(path.resolve()).encode()).digest()
    return PORT_RANGE_START + int.from_bytes(digest[:4], "big") % PORT_RANGE_SIZE


@dataclass(frozen=True)
class PrivatePostgres:
    """A Postgres cluster in ``data_dir`` listening on 127.0.0.1:``port`` only."""

    data_dir: Path
    port: int
    password_file: Path

    @classmethod
    def for_project(cls) -> PrivatePostgres:
        base = state_dir() / "postgres"
        if os.geteuid() == 0 and not _postgres_user_can_enter(base.parent):
            # The postgres user cannot reach a checkout under a private home folder.
            fallback = Path("/var/tmp") / f"meshbench-{_port_for(base)}" / "postgres"
            log.info(
                "state folder %s is not reachable by the postgres user; using %s",
                base.parent,
                fallback,
            )
            base = fallback
        return cls(
            data_dir=base / "data",
            port=_port_for(base),
            password_file=state_dir() / PASSWORD_FILE_NAME,
        )

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "server.log"

    def password(self) -> str:
        """The superuser's password, generated into a 0600 file on first use."""
        if not self.password_file.exists():
            self.password_file.parent.mkdir(parents=True, exist_ok=True)
            # URL-safe characters: the password goes into connection URLs unquoted.
            generated = secrets.token_urlsafe(24)
            descriptor = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(generated + "\n")
        self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    def url(self, database: str = RESULTS_DATABASE) -> str:
        return (
            f"postgresql+psycopg://{SUPERUSER}:{self.password()}@127.0.0.1:{self.port}/{database}"
        )

    def _run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = self._run(
            [str(find_server_bindir() / "pg_ctl"), "-D", str(self.data_dir), "status"]
        )
        return result.returncode == 0

    def ensure_running(self) -> PrivatePostgres:
        """Initialise and start the server if needed, and create the databases."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir.parent / ".lock"):
            bindir = find_server_bindir()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(bindir)
            hba_changed = self._write_hba_conf()
            if not self.is_running():
                self._start(bindir)
            self._set_password(bindir)
            if hba_changed:
                # A server already running with the old rules reads the new ones now.
                self._pg_ctl(bindir, "reload")
            for database in (RESULTS_DATABASE, AIRFLOW_DATABASE):
                self._create_database(bindir, database)
        return self

    def stop(self) -> None:
        if self.is_running():
            self._run(
                [
                    str(find_server_bindir() / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ]
            )

    def _initdb(self, bindir: Path) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.data_dir.parent, self.data_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.data_dir.chmod(0o700)
        result = self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed in {self.data_dir}: {result.stderr.strip()}")

    def _start(self, bindir: Path) -> None:
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        result = self._run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-o",
                options,
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "start",
            ]
        )
        if result.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = self.log_file.read_text()[-2000:]
            raise PostgresUnavailable(
                f"Postgres in {self.data_dir} did not start on port {self.port}: "
                f"{result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )
        log.info("started private Postgres on 127.0.0.1:%s (data in %s)", self.port, self.data_dir)

    def _write_hba_conf(self) -> bool:
        """Write the access rules; True if they were different before."""
        hba = self.data_dir / "pg_hba.conf"
        with contextlib.suppress(OSError):
            if hba.read_text() == HBA_CONF:
                return False
        hba.write_text(HBA_CONF)
        hba.chmod(0o600)
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(hba, user.pw_uid, user.pw_gid)
        log.info("private Postgres in %s: TCP connections need the password", self.data_dir)
        return True

    def _pg_ctl(self, bindir: Path, action: str) -> None:
        result = self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), action])
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"pg_ctl {action} failed in {self.data_dir}: {result.stderr.strip()}"
            )

    def _psql(self, bindir: Path) -> list[str]:
        """psql over the Unix socket in the data folder (no password needed there)."""
        return [
            str(bindir / "psql"),
            "-h",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ]

    def _set_password(self, bindir: Path) -> None:
        # On stdin, not the command line: other users can read a process's arguments.
        statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{self.password()}';\n"
        result = self._run([*self._psql(bindir), "-q", "-f", "-"], input=statement)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"cannot set the password of {SUPERUSER} in {self.data_dir}: "
                f"{result.stderr.strip()}"
            )

    def _create_database(self, bindir: Path, database: str) -> None:
        psql = [*self._psql(bindir), "-tAc"]
        exists = self._run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{database}'"])
        if exists.stdout.strip() == "1":
            return
        created = self._run([*psql, f'CREATE DATABASE "{database}"'])
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise PostgresUnavailable(f"cannot create database {database}: {created.stderr}")


def _postgres_user_can_enter(path: Path) -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailable(
            "running as root but there is no 'postgres' user to run the server as; install "
            "Debian's 'postgresql' package (`make install` does)"
        ) from exc
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(path)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

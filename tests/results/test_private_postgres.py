"""The private Postgres: no connection over TCP without the generated password, the
read-only role still reads, and a cluster made with ``trust`` by an older version is
upgraded in place with its data kept."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from meshbench.postgres import PostgresUnavailable, PrivatePostgres, find_server_bindir
from meshbench.ui.data import READER_OPTIONS

try:
    BINDIR = find_server_bindir()
except PostgresUnavailable as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no Postgres server binaries: {exc}", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _psql_args(server: PrivatePostgres, host: str) -> list[str]:
    """psql without a password (-w: never prompt), asking for SELECT 1."""
    return [
        str(BINDIR / "psql"),
        "-h",
        host,
        "-p",
        str(server.port),
        "-U",
        "postgres",
        "-w",
        "-d",
        "postgres",
        "-tAc",
        "SELECT 1",
    ]


def _psql_over_tcp(
    server: PrivatePostgres, *, as_user: str | None = None
) -> subprocess.CompletedProcess:
    """psql as a local user who knows the port but not the password."""
    command = _psql_args(server, host="127.0.0.1")
    if as_user:
        command = ["runuser", "-u", as_user, "--", *command]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    return subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd="/")


@pytest.fixture
def throwaway_server() -> Iterator[PrivatePostgres]:
    """A server of its own under /var/tmp (the postgres user cannot enter pytest's tmp)."""
    base = Path(tempfile.mkdtemp(prefix="meshbench-pgtest-", dir="/var/tmp"))
    base.chmod(0o755)
    server = PrivatePostgres(
        data_dir=base / "postgres" / "data",
        port=_free_port(),
        password_file=base / "state" / "postgres-password",
    )
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _make_old_trust_cluster(server: PrivatePostgres) -> None:
    """What the previous version made: initdb -A trust, started on 127.0.0.1, with data."""
    server.data_dir.mkdir(parents=True)
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (server.data_dir.parent, server.data_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    server.data_dir.chmod(0o700)
    subprocess.run(
        [
            *run_as,
            str(BINDIR / "initdb"),
            "-D",
            str(server.data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {server.port} -k {server.data_dir} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [
            *run_as,
            str(BINDIR / "pg_ctl"),
            "-D",
            str(server.data_dir),
            "-o",
            options,
            "-l",
            str(server.log_file),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    trusted = f"postgresql://postgres@127.0.0.1:{server.port}"
    with psycopg.connect(f"{trusted}/postgres", autocommit=True) as connection:
        connection.execute("CREATE DATABASE meshbench")
    with psycopg.connect(f"{trusted}/meshbench", autocommit=True) as connection:
        connection.execute("CREATE TABLE kept (value text)")
        connection.execute("INSERT INTO kept VALUES ('measured before the upgrade')")


def test_tcp_without_the_password_is_refused(throwaway_server: PrivatePostgres) -> None:
    server = throwaway_server.ensure_running()
    refused = _psql_over_tcp(server)
    assert refused.returncode != 0
    assert "password" in refused.stderr
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres").close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://postgres:guess@127.0.0.1:{server.port}/postgres").close()


@pytest.mark.skipif(os.geteuid() != 0, reason="runs psql as another OS user, which needs root")
def test_another_os_user_cannot_connect(throwaway_server: PrivatePostgres) -> None:
    server = throwaway_server.ensure_running()
    refused = _psql_over_tcp(server, as_user="nobody")
    assert refused.returncode != 0
    assert "password" in refused.stderr
    # Nor over the socket: its folder is the data folder, closed to everyone else.
    over_socket = subprocess.run(
        ["runuser", "-u", "nobody", "--", *_psql_args(server, host=str(server.data_dir))],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert over_socket.returncode != 0
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700


def test_the_password_file_is_private_and_the_url_connects(
    throwaway_server: PrivatePostgres,
) -> None:
    server = throwaway_server.ensure_running()
    assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
    assert make_url(server.url()).password == server.password_file.read_text().strip()
    engine = create_engine(server.url(), future=True)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT current_user")).scalar() == "postgres"
    finally:
        engine.dispose()
    # A second start keeps the same password (every consumer holds the URL).
    assert server.ensure_running().url() == server.url()


def test_the_reader_role_still_reads(results_engine) -> None:
    """The results page's way in: the results login, switched to meshbench_reader."""
    url = results_engine.url.render_as_string(hide_password=False)
    reader = create_engine(url, connect_args={"options": READER_OPTIONS}, future=True)
    try:
        with reader.connect() as connection:
            assert connection.execute(text("SELECT current_user")).scalar() == "meshbench_reader"
            assert connection.execute(text("SELECT count(*) FROM v_measurement")).scalar() >= 0
    finally:
        reader.dispose()


def test_an_old_trust_cluster_is_upgraded_in_place(throwaway_server: PrivatePostgres) -> None:
    server = throwaway_server
    _make_old_trust_cluster(server)
    assert _psql_over_tcp(server).returncode == 0  # the harm: anyone gets in

    server.ensure_running()  # the next start, with the old server still running

    assert _psql_over_tcp(server).returncode != 0
    with psycopg.connect(server.url().replace("+psycopg", "")) as connection:
        kept = connection.execute("SELECT value FROM kept").fetchall()
    assert kept == [("measured before the upgrade",)]

    server.stop()
    server.ensure_running()  # and after a restart
    assert _psql_over_tcp(server).returncode != 0
    with psycopg.connect(server.url().replace("+psycopg", "")) as connection:
        assert connection.execute("SELECT count(*) FROM kept").fetchone() == (1,)

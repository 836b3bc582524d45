"""Shared fixtures: a real Postgres database for the results schema, and the study's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from meshbench.postgres import PostgresUnavailable, PrivatePostgres
from meshbench.results import migrate

TESTS_DIR = Path(__file__).parent
SEED_RESULTS = TESTS_DIR / "data" / "seed-results" / "equinix-metal-2023-11-16"
ADMIN_URL_ENV_VAR = "MESHBENCH_TEST_ADMIN_URL"
RESULT_TABLES = (
    "resource_sample",
    "histogram_bucket",
    "measurement",
    "run",
    "daily_summary",
    "regression",
)


@pytest.fixture(scope="session", autouse=True)
def private_postgres_stopped_after_the_session() -> Iterator[None]:
    """A test session that started this checkout's private Postgres stops it at the end:
    a finished `make test` leaves no server running."""
    server = PrivatePostgres.for_project()
    try:
        was_running = server.is_running()
    except PostgresUnavailable:
        yield
        return
    yield
    if not was_running:
        server.stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A superuser URL on a real Postgres: $MESHBENCH_TEST_ADMIN_URL or the private server."""
    return os.environ.get(ADMIN_URL_ENV_VAR) or (
        PrivatePostgres.for_project().ensure_running().url("postgres")
    )


@pytest.fixture(scope="session")
def fresh_database(postgres_admin_url: str) -> Iterator[callable]:
    """Factory for throw-away databases, dropped at the end of the session."""
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make(prefix: str = "meshbench_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as connection:
        for name in created:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def results_engine(fresh_database) -> Iterator[Engine]:
    """An engine on a database of its own, migrated to the newest schema."""
    engine = create_engine(fresh_database(), future=True)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_results(results_engine: Engine) -> Engine:
    """The results engine with every table emptied before the test."""
    with results_engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(RESULT_TABLES)} RESTART IDENTITY CASCADE"))
    return results_engine


@pytest.fixture
def seed_results_dir() -> Path:
    return SEED_RESULTS

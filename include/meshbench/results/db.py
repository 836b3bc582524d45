"""Where the results database is and how to reach it.

Resolution order: ``$MESHBENCH_DATABASE_URL``; the Airflow connection ``meshbench_results``
(from ``$AIRFLOW_CONN_MESHBENCH_RESULTS`` or, inside Airflow, its secrets backends); a
private Postgres started in the project's state folder.
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from meshbench.postgres import PrivatePostgres

log = logging.getLogger(__name__)

DATABASE_URL_ENV_VAR = "MESHBENCH_DATABASE_URL"
RESULTS_CONN_ID = "meshbench_results"
READER_ROLE = "meshbench_reader"


def normalise_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if not parsed.drivername.startswith("postgresql"):
        raise ValueError(f"the results database must be Postgres; got a {parsed.drivername!r} URL")
    return parsed.render_as_string(hide_password=False)


def _url_from_airflow_connection() -> str | None:
    raw = os.environ.get(f"AIRFLOW_CONN_{RESULTS_CONN_ID.upper()}")
    if raw:
        if raw.lstrip().startswith("{"):
            data = json.loads(raw)
            user = data.get("login") or ""
            password = f":{data['password']}" if data.get("password") else ""
            port = f":{data['port']}" if data.get("port") else ""
            auth = f"{user}{password}@" if user else ""
            return (
                f"postgresql://{auth}{data.get('host', '127.0.0.1')}{port}/{data.get('schema', '')}"
            )
        return raw
    if not os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return None
    # Inside a running task: the connection may come from any secrets backend.
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(RESULTS_CONN_ID)
    except Exception:
        return None
    return connection.get_uri()


def resolve_database_url(start_private: bool = True) -> str:
    url = os.environ.get(DATABASE_URL_ENV_VAR) or _url_from_airflow_connection()
    if url:
        return normalise_url(url)
    if not start_private:
        raise RuntimeError(
            f"no results database configured: set {DATABASE_URL_ENV_VAR} or the Airflow "
            f"connection {RESULTS_CONN_ID}"
        )
    return PrivatePostgres.for_project().ensure_running().url()


@cache
def _engine_for(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, future=True)


def get_engine(url: str | None = None) -> Engine:
    """A pooled engine for ``url`` or the resolved results database."""
    return _engine_for(normalise_url(url) if url else resolve_database_url())

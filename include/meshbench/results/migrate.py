"""Alembic driven from code: ``meshbench db upgrade`` and the tests use these."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MEND_COMMAND = "meshbench db upgrade"


class SchemaNotCurrent(RuntimeError):
    """The results database is not at the newest revision; the message names the mend."""


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.set_main_option(
            "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return config


def _run(engine: Engine, action, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        action(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    _run(engine, command.downgrade, revision)


def heads() -> list[str]:
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_current(engine: Engine) -> None:
    """Raise SchemaNotCurrent unless the results database is at the newest revision.

    Tasks check this before they measure: a run must not spend its minutes only to find
    that its results have nowhere to go.
    """
    try:
        found = current(engine)
    except Exception as exc:
        raise SchemaNotCurrent(
            f"the results database {engine.url} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); once it answers, run "
            f"`{MEND_COMMAND}`"
        ) from None
    wanted = heads()
    if found not in wanted:
        raise SchemaNotCurrent(
            f"the results database {engine.url} is at schema revision {found or 'none'}, "
            f"not {', '.join(wanted)}: run `{MEND_COMMAND}` (make ui, make run and "
            "meshbench airflow do it before Airflow starts)"
        )

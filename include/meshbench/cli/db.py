"""``meshbench db``: the results database's schema."""

from __future__ import annotations

import argparse

from meshbench.results import migrate
from meshbench.results.db import get_engine


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="manage the results database schema")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="migrate the results database to a revision")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=_upgrade)
    downgrade = actions.add_parser("downgrade", help="migrate the results database down")
    downgrade.add_argument("revision")
    downgrade.set_defaults(handler=_downgrade)
    current = actions.add_parser("current", help="show the schema revision and database")
    current.set_defaults(handler=_current)
    url = actions.add_parser("url", help="print the results database URL (password masked)")
    url.add_argument(
        "--with-password",
        action="store_true",
        help="print the password too, for a client to connect with (keep it out of logs)",
    )
    url.set_defaults(handler=_url)


def _upgrade(args: argparse.Namespace) -> int:
    engine = get_engine()
    migrate.upgrade(engine, args.revision)
    print(f"results database at revision {migrate.current(engine)} ({engine.url})")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    engine = get_engine()
    migrate.downgrade(engine, args.revision)
    print(f"results database at revision {migrate.current(engine) or 'base'} ({engine.url})")
    return 0


def _current(args: argparse.Namespace) -> int:
    engine = get_engine()
    print(f"{migrate.current(engine) or 'base'} (heads: {', '.join(migrate.heads())}) {engine.url}")
    return 0


def _url(args: argparse.Namespace) -> int:
    print(get_engine().url.render_as_string(hide_password=not args.with_password))
    return 0

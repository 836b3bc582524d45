"""The ``meshbench`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; add the
module to ``COMMAND_MODULES`` to make its commands available.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from meshbench.cli.log_output import send_logs_to_stderr
from meshbench.config import ConfigError
from meshbench.paths import state_dir

COMMAND_MODULES = (
    "meshbench.cli.db",
    "meshbench.cli.results",
    "meshbench.cli.regressions",
    "meshbench.cli.plan",
    "meshbench.cli.pipeline",
    "meshbench.cli.local",
    "meshbench.cli.reap",
    "meshbench.cli.estimate",
)


class CommandError(Exception):
    """A command that cannot go on; its message is shown to the user without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    # Commands may import Airflow; keep its home in the project, not in ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", str(state_dir() / "airflow"))
    parser = argparse.ArgumentParser(
        prog="meshbench", description="Multi-cluster service-mesh benchmarks."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # stdout is for what a command prints (JSON that must parse, a plan): logs, Airflow's
    # included, go to stderr.
    send_logs_to_stderr(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.handler(args) or 0)
    except (CommandError, ConfigError) as exc:
        print(f"meshbench {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

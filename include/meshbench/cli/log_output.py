"""Logs of the ``meshbench`` command go to stderr; stdout carries only what a command prints.

``meshbench reap --json | jq`` must get JSON and nothing else. Our own logging is easy to
send to stderr, but Airflow configures logging when it is first imported (which commands
do lazily, deep inside a hook or a backend) and writes to ``sys.stdout`` as it is at that
moment: its stdlib handler keeps that stream, and its structlog loggers take
``sys.stdout`` when each one is created. So Airflow is imported with ``sys.stdout``
pointing at stderr, and its structlog logger factory creates loggers the same way.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def send_logs_to_stderr(level: int) -> None:
    """Route the command's logs to stderr, Airflow's included, whenever it is imported."""
    # A no-op when logging is already set up (Airflow imported, or a test's handlers).
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    if "airflow" in sys.modules:
        # Imported before the command started (a caller that runs main() in-process).
        _move_stdout_handlers_to_stderr()
        _structlog_loggers_to_stderr()
    elif not any(isinstance(finder, _AirflowImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AirflowImportFinder())


class _AirflowImportFinder(importlib.abc.MetaPathFinder):
    """Finds the ``airflow`` package with the other finders and runs it, once, with
    stdout pointing at stderr."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "airflow":
            return None
        with contextlib.suppress(ValueError):  # the real spec comes from the other finders
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _StdoutAsStderrLoader(spec.loader)
        return spec


class _StdoutAsStderrLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        create: Callable[..., types.ModuleType | None] | None = getattr(
            self._loader, "create_module", None
        )
        return create(spec) if create else None

    def exec_module(self, module: types.ModuleType) -> None:
        # Set the loader back so importlib.reload and resource readers see the real one.
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        with contextlib.redirect_stdout(sys.stderr):
            self._loader.exec_module(module)
        _structlog_loggers_to_stderr()


def _move_stdout_handlers_to_stderr() -> None:
    stdout_streams = {id(sys.stdout), id(sys.__stdout__)}
    loggers = [logging.getLogger()] + [
        item
        for item in logging.root.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in stdout_streams:
                handler.setStream(sys.stderr)


def _structlog_loggers_to_stderr() -> None:
    """structlog's write loggers default to the ``sys.stdout`` of the moment they are made:
    the configured factory (Airflow's) makes them with stdout pointing at stderr."""
    try:
        import structlog
    except ImportError:  # pragma: no cover - Airflow depends on structlog
        return
    factory = structlog.get_config()["logger_factory"]
    if isinstance(factory, _StderrLoggerFactory):
        return
    structlog.configure(logger_factory=_StderrLoggerFactory(factory))


class _StderrLoggerFactory:
    def __init__(self, factory: Callable[..., Any]) -> None:
        self._factory = factory

    def __call__(self, *args: Any) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return self._factory(*args)

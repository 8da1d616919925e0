"""Logging to stderr, as text (default) or JSON lines (python-json-logger)."""

from __future__ import annotations

import logging
import sys

from aggregator.errors import DatabaseAway, StoreError

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "info", fmt: str = "text", handler: logging.Handler | None = None) -> None:
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    handler = handler or logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    elif not handler.formatter:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, "%Y-%m-%dT%H:%M:%S%z"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Libraries' own chatter stays out of the service log unless debugging.
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("urllib3", "apscheduler", "waitress", "pebble", "sqlite_utils"):
        logging.getLogger(name).setLevel(max(quiet, logging.getLogger(name).level))


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """In an except block: a StoreError (a database that went away, a full
    disk) is expected and told in one line with its reason; anything else is
    a bug and keeps its traceback for the report."""
    exc = sys.exc_info()[1]
    if isinstance(exc, DatabaseAway):
        logger.debug(message + ": %s", *args, exc)  # the store said so once, when it went away
    elif isinstance(exc, StoreError):
        logger.error(message + ": %s", *args, exc)
    else:
        logger.exception(message, *args)

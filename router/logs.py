"""One log format for every command: plain text lines, or JSON lines for log collectors.

``router ... --log-format json`` (or ``ROUTER_LOG_FORMAT=json``) writes one JSON object per
line to stderr: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``message``, and ``exception`` (the traceback as one string) when there is one. The text
format is ``<time> <LEVEL> <logger>: <message>``. Neither ever writes terminal escape codes:
the faust-streaming worker's spinner and coloured formatter are not used (``router.app``).
Values that came from the environment are masked in both (:data:`router.config.SECRETS`).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import IO, Final

import orjson

from router.config import SECRETS

FORMATS: Final = ("text", "json")
LEVELS: Final = ("debug", "info", "warning", "error")
FORMAT_ENV: Final = "ROUTER_LOG_FORMAT"
LEVEL_ENV: Final = "ROUTER_LOG_LEVEL"
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Libraries that narrate their own lifecycle at INFO (aiokafka: every rebalance step; faust
#: and mode: every service start and stop). The router's roles log what an operator needs.
CHATTY: Final = ("aiokafka", "faust", "mode")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (tracebacks included, as a string)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = SECRETS.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = SECRETS.redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry).decode()


def default_format() -> str:
    value = os.environ.get(FORMAT_ENV, "text").strip().lower()
    return value if value in FORMATS else "text"


def default_level() -> str:
    value = os.environ.get(LEVEL_ENV, "info").strip().lower()
    return value if value in LEVELS else "info"


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Make the root logger write ``fmt`` records at ``level`` and above to ``stream``.

    Replaces whatever handlers were installed before, so calling it twice is harmless.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(SECRETS)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
    logging.captureWarnings(True)


def one_line(exc: BaseException) -> str:
    """An exception as one line for a person: its message, else its type's name."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__

"""One log format for every line the server writes: tokenwire's lifecycle lines
(``event=close stream=… status=done``), the access lines and uvicorn's own.

``text``: ``<time> <LEVEL> <logger> <message>``. ``json``: one object a line with
``ts``, ``level``, ``logger`` and either the ``key=value`` fields of the message
or ``msg``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _fields(message: str) -> dict[str, str] | None:
    """``event=close stream=st_1 status=done`` -> its fields; None when any word is
    not ``key=value`` (free text)."""
    out: dict[str, str] = {}
    for word in message.split(" "):
        key, sep, value = word.partition("=")
        if not sep or not key:
            return None
        out[key] = value
    return out or None


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = record.getMessage()
        fields = getattr(record, "fields", None) or _fields(message)
        if fields is not None:
            line.update(fields)
        else:
            line["msg"] = message
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "info", fmt: str = "text") -> None:
    """Route every logger (uvicorn's too: run it with ``log_config=None``) through
    one stderr handler in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # uvicorn's "trace" is below DEBUG; logging knows it as 5
    root.setLevel(5 if level == "trace" else getattr(logging, level.upper()))

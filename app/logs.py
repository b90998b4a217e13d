"""Logging: text for a terminal, JSON lines for collectors (LOYALTY_LOG_FORMAT=json).

JSON records carry time, level, logger, message and the ``extra`` fields a call passes
(event ids, topic/partition/offset, reason codes). Nothing else about a client than its id
is ever logged: receipts and profiles are not.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Loggers whose warnings and errors repeat during an outage (a reconnect loop logs each try).
_NOISY = ("aiokafka", "kafka", "faust", "mode", "redis")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def logging_config(fmt: str, level: str) -> dict[str, Any] | None:
    """A dictConfig for Faust's Worker; None keeps Faust's own text setup."""
    if fmt != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stdout"}},
        "root": {"handlers": ["stdout"], "level": level.upper()},
    }


class LogGuard(logging.Filter):
    """A filter for every handler of a service.

    * One record, one line: control characters in a message (a ``%0A`` in a request path,
      say) are escaped, so nothing a client sends can forge a log line.
    * A malformed HTTP request is one WARNING without a traceback (aiohttp logs an ERROR
      with one for each).
    * During an outage the Kafka and Redis clients repeat the same warning for every
      reconnect attempt (measured: ~270,000 ERROR lines, 18.6 MB, in a 30 s broker outage).
      The first record of a kind passes; the same kind within ``window`` seconds is counted,
      and the next one after the window says how many were left out.
    """

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # kind -> [window start, left out]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg)[:200])
        if record.exc_info and record.name.startswith("aiohttp") and _malformed(record.exc_info[1]):
            record.msg, record.args = "malformed HTTP request: %s", (str(record.exc_info[1]),)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        if record.levelno >= logging.WARNING and record.name.startswith(_NOISY) and not self._first(kind, record):
            return False
        message = record.getMessage()
        if _CONTROL.search(message):
            record.msg, record.args = _CONTROL.sub(lambda m: repr(m.group())[1:-1], message), ()
        return True

    def _first(self, kind: tuple[str, str], record: logging.LogRecord) -> bool:
        now = self.clock()
        seen = self._seen.get(kind)
        if seen is not None and now - seen[0] < self.window:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.msg = f"{record.getMessage()} (and {int(seen[1])} more like it in the last {self.window:.0f} s)"
            record.args = ()  # not None: mode's formatter wraps it as (None,) and formatting fails
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[kind] = [now, 0]
        return True


def _malformed(exc: BaseException | None) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError

    return isinstance(exc, HttpProcessingError)


def guard_handlers(logger: logging.Logger | None = None) -> None:
    """Put one :class:`LogGuard` on every handler of ``logger`` (default: the root)."""
    guard = LogGuard()
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, LogGuard) for f in handler.filters):
            handler.addFilter(guard)

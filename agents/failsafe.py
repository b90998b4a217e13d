"""Fail closed: no offset is committed past a record that was not fully processed.

Faust's ``Stream.take_events`` acks every event of a batch in a ``finally``: when the agent
raises (or is cancelled) while handling a batch, the batch counts as done and its offsets
are committed. Measured before this module: a receipt that crashed the router on every
retry left ``receipts[1]`` committed at 574/574 with 0 records forwarded.

Three layers, so that nothing reaches that ``finally`` unhandled:

* **A record that fails on its own** (an exception from the pure core or a codec, not an
  infrastructure error) is not retried: the core is deterministic, a retry gives the same
  error. It goes to the DLQ with reason ``processing_error`` and the exception's class and
  message, and the partition moves on (a poison pill never stops a partition).
* **Infrastructure errors** (disk, broker, RocksDB I/O) stop the work at that point:
  :meth:`Guard.retry` retries with exponential backoff (0.5 s doubling to 30 s) until it
  passes, the worker reports not ready with the reason meanwhile, and the error is logged
  once when it starts and once when it ends (with the number of failed attempts), not per
  attempt. Re-running a batch is safe: processing is idempotent (deduplication,
  deterministic event ids).
* **Anything else that escapes** (a bug, a cancellation mid-batch): :func:`hold` marks the
  batch's messages so that Faust's ack skips them. Their offsets are never acked, so the
  partition's commits stop before them; the stall monitor then reports the partition
  stalled, and a restart (or ``LOYALTY_STALL_ACTION=exit``) delivers them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

log = logging.getLogger("loyalty.failsafe")
T = TypeVar("T")

#: Words of RocksDB's (rocksdict's) I/O errors, which come as plain exceptions.
_STORAGE_WORDS = ("IO error", "No space left", "Read-only file system", "Too many open files")
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


def is_infrastructure(exc: BaseException) -> bool:
    """True for errors of the machine or the cluster (retried), False for a record's own."""
    if isinstance(exc, MessageSizeTooLargeError):
        return False  # that one record is too big: retrying cannot help
    if isinstance(exc, OSError | KafkaError | asyncio.TimeoutError):
        return True
    text = str(exc)
    return any(word in text for word in _STORAGE_WORDS)


def describe(exc: BaseException) -> str:
    """``Class: message``, one line, bounded (for DLQ headers and readiness reasons)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


class Guard:
    """Retries infrastructure errors and tells readiness why the worker is blocked."""

    def __init__(self, metrics: Any, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> None:
        self.metrics = metrics
        self.sleep = sleep
        self.first = first
        self.cap = cap
        self.blocked: dict[str, str] = {}  # what -> the error that blocks it

    async def retry(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it does not raise an infrastructure error.

        Other exceptions propagate at once (the caller decides: DLQ or fail closed).
        """
        failures = 0
        while True:
            try:
                result = await attempt()
            except Exception as exc:
                if not is_infrastructure(exc):
                    self._clear(what, failures)
                    raise
                failures += 1
                if failures == 1:
                    log.error("%s: stopped by %s; retrying with backoff, not ready meanwhile",
                              what, describe(exc))
                self.blocked[what] = describe(exc)
                self.metrics.blocked.labels(what).set(1)
                await self.sleep(min(self.cap, self.first * 2 ** (failures - 1)))
                continue
            self._clear(what, failures)
            return result

    def _clear(self, what: str, failures: int) -> None:
        if what in self.blocked:
            del self.blocked[what]
            self.metrics.blocked.labels(what).set(0)
            log.warning("%s: resumed after %d failed attempts", what, failures)

    @property
    def ok(self) -> bool:
        return not self.blocked


def hold(events: Iterable[Any]) -> None:
    """Keep Faust from acking ``events`` (so from committing past them).

    Faust's ``Message.ack`` does nothing for a message already marked acked, and its consumer
    forgets acked messages when it waits for streams to finish: the offsets stay unacked.
    """
    held: dict[tuple[str, int], list[int]] = {}
    for event in events:
        message = getattr(event, "message", None)
        if message is not None and hasattr(message, "acked") and not message.acked:
            message.acked = True
            held.setdefault((message.topic, message.partition), []).append(message.offset)
    for (topic, partition), offsets in sorted(held.items()):
        log.error("holding %d records of %s[%d] from offset %d: not processed, not committed",
                  len(offsets), topic, partition, min(offsets))

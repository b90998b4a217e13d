"""Stall detection and JSON logs: pure, no broker."""

from __future__ import annotations

import logging

import orjson

from app.health import StallDetector
from app.logs import JsonFormatter, logging_config
from app.settings import Settings


def test_partition_with_lag_and_no_progress_is_stalled_after_timeout() -> None:
    d: StallDetector[str] = StallDetector(timeout=30)
    assert d.observe("p0", highwater=100, position=40, now=0) == 60
    assert d.observe("p0", 120, 40, now=29) == 80 and d.ok
    d.observe("p0", 130, 40, now=30)
    assert d.stalled == {"p0"} and not d.ok
    d.observe("p0", 130, 41, now=31)  # progress clears it
    assert d.ok


def test_no_lag_is_never_stalled_and_unknown_offsets_are_ignored() -> None:
    d: StallDetector[str] = StallDetector(timeout=1)
    for t in range(10):
        d.observe("idle", 50, 50, now=t)
        d.observe("unknown", None, None, now=t)
    assert d.ok


def test_forget_drops_revoked_partitions() -> None:
    d: StallDetector[str] = StallDetector(timeout=0)
    d.observe("a", 10, 0, now=0)
    d.observe("a", 10, 0, now=1)
    assert not d.ok
    d.forget(keep={"b"})
    assert d.ok


def test_json_log_lines_carry_extra_fields() -> None:
    record = logging.LogRecord("loyalty.agents", logging.WARNING, __file__, 1, "to DLQ", (), None)
    record.reason = "invalid_json"
    record.offset = 17
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["level"] == "warning" and doc["message"] == "to DLQ"
    assert doc["reason"] == "invalid_json" and doc["offset"] == 17


def test_logging_config_and_settings() -> None:
    assert logging_config("text", "info") is None
    assert logging_config("json", "info")["root"]["level"] == "INFO"  # type: ignore[index]
    s = Settings.from_env({"LOYALTY_LOG_FORMAT": "json", "LOYALTY_STALL_ACTION": "seek"})
    assert (s.log_format, s.stall_action) == ("json", "seek")


def test_exactly_once_is_refused_with_the_reason() -> None:
    import pytest

    from app.settings import SettingsError

    with pytest.raises(SettingsError) as err:
        Settings.from_env({"LOYALTY_GUARANTEE": "exactly_once"})
    assert "ProducerFenced" in str(err.value)
    with pytest.raises(SettingsError):
        Settings.from_env({"LOYALTY_GUARANTEE": "at-most-once"})
    assert Settings.from_env({"LOYALTY_GUARANTEE": "at_least_once"}).guarantee == "at_least_once"
    settings = Settings.from_env({"LOYALTY_BATCH_MAX": "64", "LOYALTY_BATCH_WITHIN": "0.02"})
    assert (settings.batch_max, settings.batch_within) == (64, 0.02)


def _record(name: str, level: int, msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, level, "x.py", 1, msg, args, exc_info)


def test_log_guard_one_line_per_record_and_quiet_outages() -> None:
    from aiohttp.http_exceptions import BadStatusLine

    from app.logs import LogGuard

    now = [0.0]
    guard = LogGuard(window=60, clock=lambda: now[0])
    forged = _record("loyalty.web", logging.WARNING, "unavailable for %s", "/clients/x\n[ERROR] forged")
    assert guard.filter(forged) and "\n" not in forged.getMessage() and "\\n[ERROR]" in forged.getMessage()
    bad = _record("aiohttp.server", logging.ERROR, "Error handling request", exc=BadStatusLine("GARBAGE"))
    assert guard.filter(bad) and bad.levelno == logging.WARNING and bad.exc_info is None
    assert "malformed HTTP request" in bad.getMessage()
    passed = sum(guard.filter(_record("aiokafka.conn", logging.ERROR, "Unable connect to %s", f"n{i}"))
                 for i in range(1000))
    assert passed == 1
    now[0] = 61.0
    later = _record("aiokafka.conn", logging.ERROR, "Unable connect to %s", "n")
    assert guard.filter(later) and "and 999 more like it" in later.getMessage()
    # Faust's log formatter (mode) wraps non-tuple args: a None there broke the line
    from mode.utils.logging import ExtensionFormatter

    assert "and 999 more like it" in ExtensionFormatter().format(later)
    assert "\\n[ERROR]" in ExtensionFormatter().format(forged)
    assert guard.filter(_record("loyalty.failsafe", logging.ERROR, "same")) and \
        guard.filter(_record("loyalty.failsafe", logging.ERROR, "same"))  # our own: never dropped


def test_revoked_partitions_lose_their_lag_and_stall_series() -> None:
    """After a rebalance the old owner stops exporting a partition's lag and stall flag (a
    stale 1 kept PartitionStalled firing; a stale lag was counted twice)."""
    from faust.types import TP

    from agents.monitor import _drop_series
    from app.metrics import Metrics

    m = Metrics.create()
    for p in ("0", "1"):
        m.consumer_lag.labels("in", p).set(5)
        m.partition_stalled.labels("in", p).set(1)
    m.consumer_lag.labels("other", "1").set(3)
    _drop_series(m, {TP("in", 0)}, {"in"})
    lag = {(s.labels["topic"], s.labels["partition"]) for f in m.consumer_lag.collect() for s in f.samples}
    stalled = {(s.labels["topic"], s.labels["partition"]) for f in m.partition_stalled.collect() for s in f.samples}
    assert lag == {("in", "0"), ("other", "1")} and stalled == {("in", "0")}

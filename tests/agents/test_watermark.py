"""The event-time watermark's bookkeeping (agents.watermark), without Kafka."""

from __future__ import annotations

from agents.watermark import WATERMARK, Sink, Source, decode, encode
from app.wire import codecs

COUNTS = {"r": 2, "p": 1}


def test_a_mark_is_the_newest_event_time_or_idle() -> None:
    src = Source()
    assert src.mark("r:0", caught_up=False, idle_s=10, now=0) is False  # nothing to say yet
    assert src.mark("r:0", caught_up=True, idle_s=10, now=0) is None  # empty and read: idle
    src.routed("r:0", 500)
    src.routed("r:0", 300)  # out of order: the mark does not go back
    src.routed("r:0", None)  # a rejected record: activity, no time
    seen = src.last_seen["r:0"]
    assert src.mark("r:0", caught_up=True, idle_s=10, now=seen + 1) == 500  # recent: not idle
    assert src.mark("r:0", caught_up=False, idle_s=10, now=seen + 60) == 500  # behind: holds
    assert src.mark("r:0", caught_up=True, idle_s=10, now=seen + 10) is None
    src.forget(set())
    assert src.mark("r:0", caught_up=False, idle_s=10, now=seen) is False


def test_the_watermark_is_the_least_mark_and_waits_for_every_input_partition() -> None:
    sink = Sink()
    assert sink.until(0, now=10_000, lateness=0) is None  # nothing heard: hold
    sink.received(0, encode({"r:0": 800, "p:0": None}, COUNTS))
    assert sink.until(0, now=10_000, lateness=0) is None  # r:1 not heard of yet
    sink.received(0, encode({"r:1": 600}, COUNTS))  # from another worker
    assert sink.watermark(0, now=10_000) == 600
    assert sink.until(0, now=10_000, lateness=60) == 540
    assert sink.until(1, now=10_000, lateness=0) is None  # marks are per partition
    sink.received(0, encode({"r:1": 500}, COUNTS))  # a new owner has routed less so far
    assert sink.watermark(0, now=10_000) == 600
    sink.received(0, encode({"r:1": None, "r:0": None}, COUNTS))  # all idle: the clock
    assert sink.until(0, now=10_000, lateness=60) == 10_000  # idle: the clock, no lateness
    sink.received(0, encode({"r:0": 9_000}, COUNTS))  # a backfill starts again
    assert sink.until(0, now=10_000, lateness=0) == 9_000


def test_records_and_ticks_carry_what_they_need() -> None:
    value = encode({"r:0": 1}, COUNTS)
    assert value[:1] == WATERMARK and decode(value) == ({"r:0": 1}, COUNTS)
    tick = codecs.tick(100, 250)
    assert (codecs.tick_due(tick), codecs.tick_until(tick)) == (100, 250)
    assert codecs.tick_until(codecs.tick(100)) is None  # an older tick: up to the clock

"""Worker self-monitoring: consumer lag per partition, stall detection, readiness.

A timer reads, for every partition this worker consumes, the highwater and the next offset
the agents have processed and committed (the lower of the two), exports
``loyalty_consumer_lag`` and ``loyalty_partition_stalled``,
and keeps ``loyalty_ready`` (1 when not rebalancing, no partition is stalled, no
infrastructure error blocks the agents (:mod:`agents.failsafe`), a broker answers a metadata
request, Redis answers PING and the data directory's disk has 64 MiB free, or 10% of a
smaller disk). With
``LOYALTY_STALL_ACTION=seek`` a stalled partition is sought back to its next offset (the
usual way to unstick an aiokafka fetcher); with ``exit`` the worker exits with code 70 so
that its supervisor (Kubernetes, compose ``restart``) starts a fresh consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from typing import Any

from app.health import StallDetector
from app.wire import codecs

log = logging.getLogger("loyalty.monitor")
EXIT_STALLED = 70
MIN_FREE_DISK = 64 * 1024 * 1024  # not ready below this many bytes free (or 10% of a smaller disk)
PROBE_TIMEOUT = 5.0


async def dependency_problems(app: Any, settings: Any, redis: Any) -> dict[str, str]:
    """What keeps the worker from doing its job now: Kafka, Redis, disk (empty: nothing)."""
    problems: dict[str, str] = {}
    client = getattr(getattr(app.producer, "_producer", None), "client", None)
    if client is not None:
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), PROBE_TIMEOUT)
        except Exception as exc:
            problems["kafka"] = f"no broker answers a metadata request ({type(exc).__name__})"
    if redis is not None:
        try:
            await asyncio.wait_for(redis.ping(), PROBE_TIMEOUT)
        except Exception as exc:
            problems["redis"] = f"Redis does not answer PING ({type(exc).__name__})"
    try:
        usage = shutil.disk_usage(settings.data_dir)
    except OSError as exc:
        problems["disk"] = f"cannot read the data directory's disk usage ({exc.strerror})"
    else:
        need = min(MIN_FREE_DISK, usage.total // 10)
        if usage.free < need:
            problems["disk"] = (f"{usage.free // 1024 // 1024} MiB free in LOYALTY_DATA_DIR "
                                f"(at least {need // 1024 // 1024} MiB needed)")
    return problems


class Prober:
    """When to send a probe to a client-events partition whose processing stopped short.

    Records the consumer skipped are found by the gap filler (agents.offsets) only when a
    later record of the partition arrives; on a quiet partition that can be hours (measured:
    a restarted worker published 119,309 of 119,313 changes, then nothing for 300 s). A
    partition whose processed position has stayed below its end for ``after`` seconds gets
    a probe record (``codecs.PROBE``, no effect): the later record that makes the filler
    fetch what was skipped. At most one probe per partition per ``after`` seconds. Pure:
    time is a parameter.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._since: dict[Any, tuple[int, float]] = {}  # tp -> (position, since when)

    def due(self, tp: Any, position: int | None, highwater: int | None, now: float) -> bool:
        if position is None or highwater is None or position >= highwater:
            self._since.pop(tp, None)
            return False
        seen = self._since.get(tp)
        if seen is None or seen[0] != position:
            self._since[tp] = (position, now)
            return False
        if now - seen[1] < self.after:
            return False
        self._since[tp] = (position, now)  # the next probe, if still stuck, in ``after`` s
        return True


def register_monitor(app: Any, pipeline: Any, settings: Any) -> StallDetector[Any]:
    detector: StallDetector[Any] = StallDetector(settings.stall_timeout)
    pipeline.detector = detector
    metrics = pipeline.metrics
    topics = {pipeline.receipts.get_topic_name(), pipeline.profiles.get_topic_name(),
              pipeline.communications.get_topic_name(),
              pipeline.client_events.get_topic_name()}
    interval = max(1.0, min(10.0, settings.stall_timeout / 4))
    from redis.asyncio import Redis

    redis = Redis.from_url(settings.redis_url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT)
    prober = Prober(after=max(10.0, 2 * interval))
    internal = pipeline.client_events.get_topic_name()

    @app.timer(interval, name="stall_monitor")  # type: ignore[untyped-decorator]
    async def monitor() -> None:
        if app.rebalancing or app.consumer is None:
            metrics.ready.set(0)
            return
        now = time.monotonic()
        committed = getattr(app.consumer, "_committed_offset", {})
        owned = set()
        for tp in app.assignor.assigned_actives():
            if tp.topic not in topics:
                continue
            owned.add(tp)
            # processed AND committed: the lower of the next offset the agents finished and
            # the committed one (a held batch stops commits; a crash-looping agent stops
            # processing; either is a stall)
            done, mark = pipeline.input_next.get(tp), committed.get(tp)
            position = mark if done is None else done if mark is None else min(done, mark)
            highwater = app.consumer.highwater(tp)
            if position is None and highwater is not None:
                position = 0 if not committed else committed.get(tp, 0)
            lag = detector.observe(tp, highwater, position, now)
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
            stalled = tp in detector.stalled
            metrics.partition_stalled.labels(tp.topic, str(tp.partition)).set(1 if stalled else 0)
            if stalled:
                log.warning("partition stalled", extra={"topic": tp.topic, "partition": tp.partition,
                                                        "lag": lag, "position": position})
                await _act(app, settings, tp, position)
            guard = pipeline.guard
            if tp.topic == internal and (guard is None or guard.ok) and prober.due(tp, position, highwater, now):
                log.warning("%s[%d]: processed up to %s of %s for %.0f s; sending a probe record",
                            tp.topic, tp.partition, position, highwater, prober.after)
                await pipeline.client_events.send(key=b"\x00probe", value=codecs.PROBE, partition=tp.partition)
        detector.forget(owned)
        _drop_series(metrics, owned, topics)
        pipeline.problems = await dependency_problems(app, settings, redis)
        guard = pipeline.guard
        ok = detector.ok and (guard is None or guard.ok) and not pipeline.problems
        metrics.ready.set(1 if ok else 0)

    return detector


async def _act(app: Any, settings: Any, tp: Any, position: int | None) -> None:
    if settings.stall_action == "seek" and position is not None:
        await app.consumer.seek(tp, position)
    elif settings.stall_action == "exit":
        log.error("exiting: stalled partition", extra={"topic": tp.topic, "partition": tp.partition})
        await asyncio.sleep(0.1)
        os._exit(EXIT_STALLED)


def _drop_series(metrics: Any, owned: set[Any], topics: Any) -> None:
    """Remove the lag and stall series of partitions this worker no longer owns: a stale 1
    would keep PartitionStalled firing, and a stale lag would be counted twice after a
    rebalance (the new owner exports it too)."""
    keep = {(tp.topic, str(tp.partition)) for tp in owned}
    for gauge in (metrics.consumer_lag, metrics.partition_stalled):
        for family in gauge.collect():
            for sample in family.samples:
                labels = (sample.labels.get("topic"), sample.labels.get("partition"))
                if labels[0] in topics and labels not in keep:
                    with contextlib.suppress(KeyError):  # removed meanwhile
                        gauge.remove(*labels)

"""Worker self-monitoring: consumer lag per partition, stall detection, readiness.

A timer reads, for every partition this worker consumes, the highwater and the next offset
the agents have processed and committed (the lower of the two), exports
``loyalty_consumer_lag`` and ``loyalty_partition_stalled``,
and keeps ``loyalty_ready`` (1 when not rebalancing, no partition is stalled and no
infrastructure error blocks the agents: :mod:`agents.failsafe`). With
``LOYALTY_STALL_ACTION=seek`` a stalled partition is sought back to its next offset (the
usual way to unstick an aiokafka fetcher); with ``exit`` the worker exits with code 70 so
that its supervisor (Kubernetes, compose ``restart``) starts a fresh consumer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from app.health import StallDetector

log = logging.getLogger("loyalty.monitor")
EXIT_STALLED = 70


def register_monitor(app: Any, pipeline: Any, settings: Any) -> StallDetector[Any]:
    detector: StallDetector[Any] = StallDetector(settings.stall_timeout)
    pipeline.detector = detector
    metrics = pipeline.metrics
    topics = {pipeline.receipts.get_topic_name(), pipeline.profiles.get_topic_name(),
              pipeline.client_events.get_topic_name()}
    interval = max(1.0, min(10.0, settings.stall_timeout / 4))

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
        detector.forget(owned)
        guard = pipeline.guard
        metrics.ready.set(1 if detector.ok and (guard is None or guard.ok) else 0)

    return detector


async def _act(app: Any, settings: Any, tp: Any, position: int | None) -> None:
    if settings.stall_action == "seek" and position is not None:
        await app.consumer.seek(tp, position)
    elif settings.stall_action == "exit":
        log.error("exiting: stalled partition", extra={"topic": tp.topic, "partition": tp.partition})
        await asyncio.sleep(0.1)
        os._exit(EXIT_STALLED)

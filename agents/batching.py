"""What the agents need to handle messages in batches (``stream.take_events``).

An agent that waits for the broker's ack of its output before writing its table pays one
round trip per message; batched, it pays one per batch. Two pieces make that work in
Faust: :func:`in_event` (table operations of each message in the context of its own
event) and :func:`send` (produce without Faust's per-message channel machinery).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from faust.streams import _current_event


@contextlib.contextmanager
def in_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event: table reads and writes use its partition.

    Faust picks a table key's store and changelog partition from the current event. Inside
    ``take_events`` that is not the event being handled, so every table operation of a
    batch runs in the context of its own event.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def send(app: Any, direct: bool, event: Any, topic: Any, name: str, key: bytes, value: bytes) -> Any:
    """Produce one message caused by ``event``; returns the future of the broker's ack.

    ``direct`` (at-least-once delivery) goes to Faust's producer: ``Topic.send`` costs
    several times more per message (channel, sensors, future wrappers), which was a fifth
    of the worker's CPU here. Otherwise ``Topic.send`` runs in the context of ``event``,
    whose partition picks Faust's transactional producer under exactly-once.
    """
    if direct:
        return await app.producer.send(name, key, value, None, None, None)
    with in_event(event):
        return await topic.send(key=key, value=value)

"""Stall detection: a partition with lag but no progress for too long.

faust-streaming can stop processing a partition silently after a rebalance (issues #175,
#640). :class:`StallDetector` is fed, per partition, the end offset (highwater) and the
next offset this worker will process; it reports a partition stalled when it has lag and
its position has not moved for ``timeout`` seconds. Pure: time is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclass
class _Track:
    position: int
    since: float  # when the position last moved (or lag appeared)


@dataclass
class StallDetector(Generic[K]):
    timeout: float
    _tracks: dict[K, _Track] = field(default_factory=dict)
    stalled: set[K] = field(default_factory=set)

    def observe(self, key: K, highwater: int | None, position: int | None, now: float) -> int:
        """Record one reading; returns the lag (0 when unknown)."""
        if highwater is None or position is None:
            return 0
        lag = max(0, highwater - position)
        track = self._tracks.get(key)
        if track is None or track.position != position or lag == 0:
            self._tracks[key] = _Track(position, now)
            self.stalled.discard(key)
            return lag
        if now - track.since >= self.timeout:
            self.stalled.add(key)
        return lag

    def forget(self, keep: set[K]) -> None:
        """Drop partitions this worker no longer owns."""
        for key in [k for k in self._tracks if k not in keep]:
            del self._tracks[key]
            self.stalled.discard(key)

    @property
    def ok(self) -> bool:
        return not self.stalled

"""agents.offsets: records the Faust consumer skipped are fetched and handed over in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from agents.offsets import GapFiller
from app.stream import faust_patches


@pytest.fixture(autouse=True)
def _no_holds() -> Iterator[None]:
    faust_patches._commit_holds.clear()
    yield
    faust_patches._commit_holds.clear()


def _record(offset: int, partition: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic="t", partition=partition, offset=offset, key=b"k", value=b"%d" % offset)


def _event(offset: int, partition: int = 0) -> SimpleNamespace:
    rec = _record(offset, partition)
    return SimpleNamespace(key=rec.key, value=rec.value, message=SimpleNamespace(
        topic="t", partition=partition, offset=offset, tp=("t", partition)))


class _Consumer:
    def __init__(self, committed: dict[Any, int | None]) -> None:
        self._committed_offset = committed
        self.gaps: list[tuple[Any, int, int]] = []

    async def _add_gap(self, tp: Any, start: int, end: int) -> None:
        assert faust_patches.commits_held(tp)  # held until the range is done
        self.gaps.append((tp, start, end))


def _run(filler: GapFiller, app: Any, offsets: list[int], partition: int = 0) -> list[int]:
    """Offsets the agent processes, in order, for the records Faust delivers."""
    async def run() -> list[int]:
        seen: list[int] = []
        for o in offsets:
            for one in await filler.fill(app, _event(o, partition)):
                seen.append(one.message.offset)
            await filler.done(app)
        return seen

    return asyncio.run(run())


def _filler(min_gap: int = 1) -> tuple[GapFiller, list[tuple[int, int]]]:
    fetched: list[tuple[int, int]] = []

    async def fetch(topic: str, partition: int, start: int, end: int) -> list[Any]:
        fetched.append((start, end))
        return [_record(o, partition) for o in range(start, end)]

    return GapFiller("test", fetch, min_gap=min_gap), fetched


def test_skipped_records_are_fetched_and_processed_before_the_record_that_revealed_them() -> None:
    filler, fetched = _filler()
    app = SimpleNamespace(consumer=_Consumer({}))
    assert _run(filler, app, [0, 1, 2, 6, 7]) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert fetched == [(3, 6)]
    assert app.consumer.gaps == [(("t", 0), 3, 5)]  # Faust may commit past them now
    assert not faust_patches.commits_held(("t", 0))
    # redeliveries (a seek back to the committed offset) are processed as they come
    assert _run(filler, app, [5, 6, 7, 8]) == [5, 6, 7, 8]
    assert fetched == [(3, 6)]


def test_first_record_of_an_assigned_partition_is_checked_against_its_committed_offset() -> None:
    filler, _ = _filler()
    app = SimpleNamespace(consumer=_Consumer({("t", 0): 11}))
    assert _run(filler, app, [14, 15]) == [11, 12, 13, 14, 15]
    # nothing committed: nothing to check the first record against
    filler2, fetched2 = _filler()
    assert _run(filler2, SimpleNamespace(consumer=_Consumer({})), [14, 15]) == [14, 15]
    assert not fetched2


def test_a_partition_that_came_back_is_checked_against_its_new_committed_offset() -> None:
    filler, fetched = _filler()
    app = SimpleNamespace(consumer=_Consumer({("t", 0): None}))
    _run(filler, app, [0, 1])
    filler.assigned([("t", 1)])  # partition 0 went to another worker, which processed 2..49
    filler.assigned([("t", 0), ("t", 1)])
    app.consumer._committed_offset[("t", 0)] = 50
    assert _run(filler, app, [50, 51]) == [50, 51]
    assert not fetched


def test_transactional_inputs_accept_a_commit_marker() -> None:
    filler, fetched = _filler(min_gap=2)
    app = SimpleNamespace(consumer=_Consumer({}))
    assert _run(filler, app, [0, 1, 3, 4, 7]) == [0, 1, 3, 4, 5, 6, 7]
    assert fetched == [(5, 7)]


def test_new_offset_returns_nothing_while_held() -> None:
    calls: list[object] = []

    def original(self: object, tp: object) -> int:
        calls.append(tp)
        return 42

    saved = faust_patches._original_new_offset
    faust_patches._original_new_offset = original  # type: ignore[assignment]
    try:
        faust_patches.hold_commits(1, "p0")
        assert faust_patches._new_offset(None, "p0") is None
        assert faust_patches._new_offset(None, "p1") == 42
        faust_patches.release_commits(1, "p0")
        assert faust_patches._new_offset(None, "p0") == 42
    finally:
        faust_patches._original_new_offset = saved

"""agents.offsets: the guard that re-fetches records the consumer skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agents.offsets import OffsetGuard
from app import faust_patches


@pytest.fixture(autouse=True)
def _no_holds() -> Iterator[None]:
    faust_patches._commit_holds.clear()  # guards of other tests held "p0" too
    yield
    faust_patches._commit_holds.clear()


def _checks(g: OffsetGuard, offsets: tuple[int, ...], committed: int | None = None) -> list[str]:
    return [g.check("p0", o, committed)[0] for o in offsets]


def test_seeks_back_over_skipped_records_once() -> None:
    g = OffsetGuard("t")
    assert _checks(g, (0, 1, 2)) == ["process"] * 3
    # 3..5 were fetched and dropped by the consumer: 6 arrives next
    assert g.check("p0", 6, None) == ("seek", 3)
    assert _checks(g, (7, 8)) == ["drop"] * 2  # still queued
    assert _checks(g, (3, 4, 5, 6, 7)) == ["process"] * 5  # after the seek
    assert g.check("p1", 0, None) == ("process", 0)  # partitions are independent
    # a redelivery (offset below the expected one) is processed: the core drops duplicates
    assert g.check("p0", 2, None) == ("process", 0)


def test_first_record_after_a_start_is_checked_against_the_committed_offset() -> None:
    g = OffsetGuard("t")
    assert g.check("p0", 120, 11) == ("seek", 11)
    h = OffsetGuard("t")
    assert h.check("p0", 11, 11) == ("process", 0)
    # nothing committed: nothing to check against
    assert OffsetGuard("t").check("p0", 120, None) == ("process", 0)


def test_accepted_jumps() -> None:
    # up to a committed offset (another worker went on meanwhile)
    h = OffsetGuard("t")
    h.check("p0", 0, None)
    assert h.check("p0", 50, 50) == ("process", 0)
    # a gap that stays after the seek (the re-fetch starts above it)
    k = OffsetGuard("t")
    k.check("p0", 0, None)
    assert k.check("p0", 5, None) == ("seek", 1)
    assert _checks(k, (6, 7)) == ["drop"] * 2
    assert _checks(k, (5, 6, 7, 8)) == ["process"] * 4
    assert not k.held
    # a commit marker of a transactional producer (min_gap=2 for external inputs)
    t = OffsetGuard("t", min_gap=2)
    assert _checks(t, (0, 1, 3, 4, 7)) == ["process"] * 4 + ["seek"]
    # and the dropping is bounded
    m = OffsetGuard("t", give_up_after=2)
    m.check("p0", 0, None)
    assert m.check("p0", 5, None) == ("seek", 1)
    assert _checks(m, (6, 7, 8)) == ["drop", "drop", "process"]


def test_commits_are_held_until_the_re_fetch_passes_the_dropped_records() -> None:
    g = OffsetGuard("t")
    _checks(g, (0, 1))
    assert g.check("p0", 5, None) == ("seek", 2)
    assert faust_patches.commits_held("p0")
    _checks(g, (6, 7))  # dropped (and acked by Faust): a commit now could cover them
    assert g.held == {"p0": 7}
    _checks(g, (2, 3, 4, 5, 6, 7))  # re-fetched; 7 is processed but not acked yet
    assert faust_patches.commits_held("p0")
    assert g.check("p0", 8, None) == ("process", 0)  # 7 was acked before 8 came
    assert not faust_patches.commits_held("p0") and not g.held
    # other partitions were never held
    assert not faust_patches.commits_held("p1")


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
        faust_patches.release_commits(1, "p0")

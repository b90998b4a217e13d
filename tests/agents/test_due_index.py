"""The in-memory due index: plain loops against a dict model."""

from __future__ import annotations

import random

from agents.due_index import DueIndex, stored_dues
from app.wire import codecs


def test_due_entries_in_due_order_and_kept_until_the_due_changes() -> None:
    index = DueIndex()
    assert index.due(0, 100) == [] and not index.built(0, 1)
    assert index.build(0, 1, [(b"a", 50), (b"b", 10), (b"c", 500)]) == 3
    assert index.built(0, 1) and not index.built(0, 2)  # a new rebalance generation: rebuild
    assert index.due(0, 100) == [(10, b"b"), (50, b"a")]
    assert index.due(0, 100) == [(10, b"b"), (50, b"a")]  # still due: the ticks are not processed
    index.set(0, b"b", 200)  # b's tick processed: due later
    index.set(0, b"a", None)  # a: nothing due any more
    assert index.due(0, 100) == [] and index.due(0, 200) == [(200, b"b")]
    index.set(1, b"x", 5)  # partition not built: ignored (built from the store later)
    assert index.due(1, 100) == [] and index.size(0) == 2
    index.retain({1})  # partition 0 revoked
    assert index.due(0, 1_000) == [] and not index.built(0, 1)


def test_matches_a_dict_model_under_random_updates() -> None:
    rng = random.Random(7)
    index, model = DueIndex(), {}
    index.build(3, 1, [])
    for _ in range(20_000):
        key = b"c%d" % rng.randrange(300)
        due = rng.choice([None, rng.randrange(1_000)])
        index.set(3, key, due)
        if due is None:
            model.pop(key, None)
        else:
            model[key] = due
        if rng.random() < 0.01:
            now = rng.randrange(1_000)
            assert index.due(3, now) == sorted((d, k) for k, d in model.items() if d <= now)
    assert index.size(3) == len(model)


class _MemoryTable:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data


def test_stored_dues_reads_the_due_prefix_of_table_values() -> None:
    table = _MemoryTable({b"c-1": codecs.table_value(1_700_000_000, b"{}"),
                          b"c-2": codecs.table_value(None, b"{}"),
                          b"__faust\x00offset__": b"12"})
    assert list(stored_dues(table, 0)) == [(b"c-1", 1_700_000_000)]
    assert list(stored_dues(table, 1)) == []  # the memory store has no partitions: all in 0


def test_due_hands_out_at_most_limit_entries_in_due_order() -> None:
    idx = DueIndex()
    idx.build(0, 1, [(f"c-{n}".encode(), 100 + n) for n in range(10)])
    assert [k for _, k in idx.due(0, 200, limit=3)] == [b"c-0", b"c-1", b"c-2"]
    assert len(idx.due(0, 200)) == 10  # handed-out entries stay until their due changes

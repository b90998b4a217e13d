"""The membership-history questions (app.projection.history_queries) as pure functions,
each against a brute-force loop over random small histories (integer instants: a property
that holds at every instant is checked at every instant)."""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, datetime

import pytest

from app.projection import history_queries as q
from app.projection.history import History, Interval, b36, decode
from rules.calendar import BusinessCalendar

SEGS = "abcd"




def history(rng: random.Random, base: int = 0, step: int = 5) -> History:
    """A random history: 1-8 intervals, some of zero length, sometimes cut by retention."""
    cut = rng.random() < 0.3
    before = rng.choice(SEGS) if cut else ""
    t = base + rng.randrange(0, 20)
    first = (t - rng.randrange(1, 50) if rng.random() < 0.5 else None) if cut else t
    cur = before
    ivs: list[tuple[str, int]] = []
    for _ in range(rng.randint(1, 8)):
        seg = rng.choice([s for s in SEGS if s != cur])
        ivs.append((seg, t))
        cur = seg
        t += rng.choice([0, 1, rng.randrange(1, step * 4)])
    ends = [e for _, e in ivs[1:]] + [None]
    return History.of(first, before, tuple(Interval(s, e, left) for (s, e), left in zip(ivs, ends, strict=True)))


def held(h: History, k: int) -> str | None:
    """Brute force: the segment at integer instant k (None: not known / not segmented)."""
    for iv in h.intervals:
        if iv.entered <= k and (iv.left is None or k < iv.left):
            return iv.segment
    return None


def sets(rng: random.Random) -> frozenset[str]:
    return frozenset(rng.sample(SEGS, rng.randint(1, 2)))


def brute_entries(h: History, x: frozenset[str]) -> list[int]:
    """Every instant at which the client moved from outside ``x`` into it (known ones)."""
    return [h.intervals[i].entered for i in entry_points(h, x)]


def entry_points(h: History, x: frozenset[str]) -> list[int]:
    out = []
    inside = h.before in x  # before the kept history
    for i, iv in enumerate(h.intervals):
        now_in = iv.segment in x
        if now_in and not inside:
            out.append(i)
        inside = now_in
    return out


def leave_after(h: History, i: int, x: frozenset[str]) -> int | None:
    """Walk on from interval i to the first one outside x: its start (None: never left)."""
    for iv in h.intervals[i:]:
        if iv.segment not in x:
            return iv.entered
    return None


def test_was_in_against_every_instant() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        h, x = history(rng), sets(rng)
        start = rng.randrange(-5, 60)
        end = start + rng.randrange(1, 30)
        got = q.was_in(h, x, start, end)
        # brute force: an interval in x holds at some integer instant of the window
        expected = []
        for iv in h.intervals:
            if iv.segment in x and any(iv.entered <= k and (iv.left is None or k < iv.left)
                                       for k in range(start, end)):
                expected.append(iv)
        assert got == expected
        assert bool(got) == any(held(h, k) in x for k in range(start, end))


def test_entries_and_stays_against_a_walk() -> None:
    rng = random.Random(2)
    for _ in range(3000):
        h, x = history(rng), sets(rng)
        start = rng.randrange(-5, 60)
        end = start + rng.randrange(1, 60)
        ins = brute_entries(h, x)
        assert q.entries(h, x, start, end) == [t for t in ins if start <= t < end]
        now = 200
        done, going = [], []
        for i in entry_points(h, x):  # walk from each entry to the first interval outside x
            t, leave = h.intervals[i].entered, leave_after(h, i, x)
            if leave is None:
                going.append(now - t)
            else:
                done.append(leave - t)
        assert q.stay_lengths(h, x, now) == (done, going)
        d2, g2 = q.stay_lengths(h, x, now, start, end)
        sel = [i for i in entry_points(h, x) if start <= h.intervals[i].entered < end]
        ends = [leave_after(h, i, x) for i in sel]
        assert sorted(d2 + g2) == sorted((now if e is None else e) - h.intervals[i].entered
                                         for i, e in zip(sel, ends, strict=True))


def test_summary() -> None:
    rng = random.Random(3)
    assert q.summary([]) == {"count": 0, "mean_days": None, "median_days": None, "p90_days": None}
    for _ in range(500):
        xs = [rng.randrange(0, 86_400 * 400) for _ in range(rng.randint(1, 50))]
        s = q.summary(xs)
        ranked = sorted(xs)
        p90 = next(v for v in ranked if sum(1 for w in xs if w <= v) >= 0.9 * len(xs))
        assert s == {"count": len(xs), "mean_days": round(statistics.mean(xs) / 86_400, 2),
                     "median_days": round(statistics.median(xs) / 86_400, 2),
                     "p90_days": round(p90 / 86_400, 2)}


def test_segment_at_end_against_every_instant() -> None:
    rng = random.Random(4)
    for _ in range(2000):
        h = history(rng)
        for instant in range(h.intervals[0].entered - 60, h.intervals[-1].entered + 10):
            got = q.segment_at_end(h, instant)
            if h.first is not None and instant <= h.first:
                assert got is None
            elif instant - 1 < h.intervals[0].entered:
                assert got == (q.UNKNOWN if h.before else None)
            else:
                assert got == held(h, instant - 1)


def test_cohorts_against_calendar_loops() -> None:
    rng = random.Random(5)
    cal = BusinessCalendar("UTC")
    base = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    hs = [history(rng, base + rng.randrange(0, 86_400 * 300), step=86_400 * 20) for _ in range(400)]
    now = base + 86_400 * 500
    active = frozenset("ab")
    jan25 = 2025 * 12
    rows = q.cohorts(hs, active, jan25, jan25 + 11, 12, now, cal)
    assert [r["cohort"] for r in rows] == [f"2025-{m:02d}" for m in range(1, 13)]
    for r in rows:
        y, m = int(r["cohort"][:4]), int(r["cohort"][5:])
        group = [h for h in hs if h.first is not None and (datetime.fromtimestamp(h.first, UTC).year,
                                                           datetime.fromtimestamp(h.first, UTC).month) == (y, m)]
        assert r["clients"] == len(group)
        for n, cell in enumerate(r["months"]):
            mm = m + n + 1  # the first instant of the month after M + n
            end = int(datetime(y + (mm - 1) // 12, (mm - 1) % 12 + 1, 1, tzinfo=UTC).timestamp())
            if end > now:
                assert cell is None
                continue
            active_n = unknown = 0
            for h in group:
                if end - 1 < h.intervals[0].entered:
                    unknown += bool(h.before)
                elif held(h, end - 1) in active:
                    active_n += 1
            assert cell == {"active": active_n, "unknown": unknown,
                            "rate": round(active_n / len(group), 4) if group else None}
    assert sum(r["clients"] for r in rows) > 300


def test_decode_round_trip() -> None:
    rng = random.Random(6)
    names = {b36(i + 1): s for i, s in enumerate(SEGS)}
    codes = {s: c for c, s in names.items()}
    for _ in range(500):
        h = history(rng, base=1_700_000_000)
        toks = ["-" if h.first is None else b36(h.first), codes[h.before] if h.before else "0"]
        prev = None
        for iv in h.intervals:
            toks += [b36(iv.entered if prev is None else iv.entered - prev), codes[iv.segment]]
            prev = iv.entered
        assert decode(",".join(toks), names) == h
        assert decode(",".join(toks).encode(), names) == h


def test_instants_and_months() -> None:
    cal = BusinessCalendar("Europe/Moscow")
    assert q.instant("2026-04-01", cal) == int(datetime.fromisoformat("2026-04-01T00:00:00+03:00").timestamp())
    assert q.instant("2026-04-01T10:00:00Z", cal) == int(datetime(2026, 4, 1, 10, tzinfo=UTC).timestamp())
    for bad in ("2026-04-01T10:00:00", "yesterday", "2026-13-01"):
        with pytest.raises(ValueError):
            q.instant(bad, cal)
    assert q.month_number("2026-01") == 2026 * 12
    assert q.month_label(2026 * 12 + 11) == "2026-12"
    for bad in ("2026-1", "2026-13", "26-01-01"):
        with pytest.raises(ValueError):
            q.month_number(bad)
    assert math.isclose(q.summary([86_400, 3 * 86_400])["median_days"], 2.0)


def test_cohort_tables_of_parts_add_up_to_the_whole() -> None:
    rng = random.Random(7)
    cal = BusinessCalendar("Europe/Moscow")
    base = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    hs = [history(rng, base + rng.randrange(0, 86_400 * 300), step=86_400 * 20) for _ in range(300)]
    now = base + 86_400 * 400
    args = (frozenset("abc"), 2025 * 12, 2025 * 12 + 9, 12, now, cal)
    whole = q.cohorts(hs, *args)
    cuts = sorted(rng.sample(range(1, 300), 6))
    parts = [q.cohorts(hs[a:b], *args) for a, b in zip([0, *cuts], [*cuts, 300], strict=True)]
    assert q.merge_cohorts([q.cohorts([], *args), *parts]) == whole
    assert q.merge_cohorts([]) == []

"""The membership history in the real local Redis (no mocks), written by the projection's
change script (``Projection.apply``, what the projector and ``loyalty projection rebuild``
call): ordering and idempotency under redelivery, retention, the indexes; then a simulated
year through ``loyalty replay``'s core whose every answer equals an exact recomputation from
the change events (tests/app/history_exact.py)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.projection import history_reads as reads
from app.projection.history import History, Interval, decode, field
from app.projection.store import Projection, Update, drop_generation, namespace
from rules import Engine, load_ruleset
from tests.app import history_exact as exact

pytestmark = pytest.mark.integration
TZ = "Europe/Moscow"
AS_OF = datetime.fromisoformat("2026-06-01T00:00:00+03:00")
NOW = int(AS_OF.timestamp())
DAY = 86_400


@pytest.fixture
def proj(fresh_projection: Callable[[str], Projection]) -> Projection:
    return fresh_projection(TZ)


async def hist(p: Projection, cid: str, dim: str = "d") -> History | None:
    raw = (await p.client(cid)).get(field(dim))
    return None if raw is None else decode(raw, await reads.names(p, await p.prefix_now(), dim))


async def index(p: Projection, dim: str = "d") -> dict[str, dict[str, float]]:
    """segment -> client -> score, from every hix: key of the dimension."""
    pre = await p.prefix_now()
    out: dict[str, dict[str, float]] = {}
    async for key in p.redis.scan_iter(match=f"{pre}hix:{dim}:*"):
        seg = key.decode()[len(f"{pre}hix:{dim}:"):]
        rows = await p.redis.zrange(key, 0, -1, withscores=True)
        if rows:
            out[seg] = {m.decode(): s for m, s in rows}
    return out


def expected_index(hs: dict[str, History]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for cid, h in hs.items():
        for iv in h.intervals:
            score = float("inf") if iv.left is None else float(iv.left)
            cell = out.setdefault(iv.segment, {})
            cell[cid] = max(cell.get(cid, 0.0), score)
    return out


def chain(cid: str, rng: random.Random, start: int, dim: str = "d") -> list[Update]:
    cur, when, out = "", start, []
    for _ in range(rng.randint(1, 12)):
        to = rng.choice([s for s in "abcde" if s != cur])
        when += rng.choice([0, 60, DAY, DAY * 30, DAY * 200])
        if any(u.at == when and (u.from_, u.to) == (cur, to) for u in out):
            when += 1  # the same change twice in one second: see app.projection.store
        out.append(Update(cid, dim, to, cur, when))
        cur = to
    return out


def intervals(updates: list[Update]) -> tuple[Interval, ...]:
    ends: list[int | None] = [u.at for u in updates[1:]]
    return tuple(Interval(u.to, u.at, e) for u, e in zip(updates, [*ends, None], strict=True))


async def test_in_order_redelivered_and_stale(proj: Projection) -> None:
    t0 = int(datetime(2026, 1, 5).timestamp())
    ups = [Update("c1", "d", "new", "", t0), Update("c1", "d", "vip", "new", t0 + DAY),
           Update("c1", "d", "lost", "vip", t0 + 3 * DAY)]
    await proj.apply(ups)
    want = History.of(t0, "", intervals(ups))
    assert await hist(proj, "c1") == want
    await proj.apply(ups)  # redelivered whole, in pieces, an old one after a newer
    await proj.apply(ups[1:2])
    await proj.apply([ups[0], ups[2], ups[1]])
    assert await hist(proj, "c1") == want
    assert await index(proj) == {"new": {"c1": t0 + DAY}, "vip": {"c1": t0 + 3 * DAY}, "lost": {"c1": float("inf")}}


async def test_same_second_chain_and_back(proj: Projection) -> None:
    t = int(datetime(2026, 3, 1, 10).timestamp())
    a, b, c = Update("c1", "d", "a", "", t), Update("c1", "d", "b", "a", t), Update("c1", "d", "c", "b", t)
    await proj.apply([a, b, c])
    await proj.apply([b, a, c, b])
    back = Update("c1", "d", "a", "c", t)  # back to "a" in the same second
    await proj.apply([back, a, b])  # a>b again: a redelivery, not a new change
    h = await hist(proj, "c1")
    assert h is not None and [(i.segment, i.entered, i.left) for i in h.intervals] == [
        ("a", t, t), ("b", t, t), ("c", t, t), ("a", t, None)]


async def test_a_change_whose_state_a_rebuild_already_took_still_enters_the_history(proj: Projection) -> None:
    """A rebuild reads the changes, then the clients changelog (current states, not counted),
    then the changes published meanwhile: one of those may already be in the state."""
    t1 = int(datetime(2026, 2, 1).timestamp())
    first, move = Update("c1", "d", "a", "", t1), Update("c1", "d", "b", "a", t1 + DAY)
    await proj.apply([first])
    assert await proj.apply([Update("c1", "d", "b", "a", t1 + DAY, count=False)]) == [1]  # the changelog's state
    assert await proj.apply([move]) == [0]  # the segment fields have it already
    assert await hist(proj, "c1") == History.of(t1, "", intervals([first, move]))
    assert await proj.apply([move]) == [0]
    assert await hist(proj, "c1") == History.of(t1, "", intervals([first, move]))


async def test_crash_rewinds_and_stale_duplicates_match_in_order(proj: Projection, redis_url: str) -> None:
    """Per client in order (as the topic delivers), interleaved; after a crash the consumer
    re-reads from an earlier offset; stale changes turn up at random: in the end the
    history equals the in-order one."""
    proj.history_days = 36_600  # keep everything (retention: the next test)
    rng = random.Random(11)
    base = int(datetime(2024, 1, 1).timestamp())
    chains = {f"c{n}": chain(f"c{n}", rng, base + n) for n in range(40)}
    stream = [u for c in chains.values() for u in c]
    rng.shuffle(stream)
    stream.sort(key=lambda u: list(chains[u.client_id]).index(u))  # stable: per client in order
    done = 0
    while done < len(stream):
        step = rng.randint(1, 25)
        rewind = rng.randint(0, min(done, 30)) if rng.random() < 0.3 else 0
        noise = [rng.choice(stream[:done]) for _ in range(rng.randint(0, 5))] if done else []
        await proj.apply(stream[done - rewind:done + step] + noise)
        done += step
    hs: dict[str, History] = {}
    for cid, ups in chains.items():
        h = await hist(proj, cid)
        assert h is not None
        assert h.intervals == intervals(ups), cid
        assert h.first == ups[0].at and h.before == ""
        hs[cid] = h
    assert await index(proj) == expected_index(hs)
    pre = await proj.prefix_now()
    firsts = dict(await proj.redis.zrange(f"{pre}hfirst:d", 0, -1, withscores=True))
    assert {k.decode(): v for k, v in firsts.items()} == {cid: float(c[0].at) for cid, c in chains.items()}


async def test_retention_drops_old_intervals_and_their_index(proj: Projection) -> None:
    proj.history_days = 30
    rng = random.Random(12)
    base = int(datetime(2024, 1, 1).timestamp())
    chains = {f"c{n}": chain(f"c{n}", rng, base + n) for n in range(60)}
    for ups in chains.values():
        await proj.apply(ups)
    hs: dict[str, History] = {}
    for cid, ups in chains.items():
        full = intervals(ups)
        last = ups[-1].at
        # plain rule: keep the open interval and those that ended 30 days before the last change or later
        kept = tuple(i for i in full if i.left is None or i.left >= last - 30 * DAY)
        dropped = full[:len(full) - len(kept)]
        h = await hist(proj, cid)
        assert h == History.of(ups[0].at, dropped[-1].segment if dropped else "", kept), cid
        hs[cid] = h
    assert await index(proj) == expected_index(hs)
    assert any(h.before for h in hs.values()) and any(not h.before for h in hs.values())


# -- a simulated year ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def year() -> list[dict[str, Any]]:
    engine = Engine([load_ruleset("boostfeel"), load_ruleset("rfm")], tz=TZ)
    events: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, events.append, lambda _: None)
    for n, line in enumerate(generate(SimConfig(clients=300, days=365, seed=4)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    return events


async def project(p: Projection, events: list[dict[str, Any]], seed: int = 5) -> None:
    """The events in order, in batches, with crash rewinds (redelivery) now and then."""
    rng = random.Random(seed)
    ups = [Update.from_event(e) for e in events]
    done = 0
    while done < len(ups):
        step = rng.randint(50, 500)
        rewind = rng.randint(0, min(done, 300)) if rng.random() < 0.3 else 0
        await p.apply(ups[done - rewind:done + step])
        done += step


def t(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


async def all_rows(it: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return {row["client_id"]: row async for row in it}


async def test_a_simulated_year_equals_the_exact_recomputation(proj: Projection, year: list[dict[str, Any]]) -> None:
    await project(proj, year)
    windows = [(t("2026-01-01T00:00:00+03:00"), t("2026-04-01T00:00:00+03:00")),  # a quarter
               (t("2025-06-01T00:00:00+03:00"), NOW),  # everything
               (t("2026-05-10T12:00:00+03:00"), t("2026-05-10T12:00:01+03:00"))]  # one second
    checked = 0
    for start, end in windows:
        for x, now_dim, now in [({"vip"}, "boostfeel", {"at_risk", "lost"}),  # "sleeping VIPs"
                                ({"vip", "loyal"}, "boostfeel", {"at_risk", "lost"}),
                                ({"vip", "loyal"}, "rfm", {"at_risk", "hibernating", "lost", "about_to_sleep"}),
                                ({"at_risk"}, "boostfeel", set())]:
            got = await all_rows(reads.iter_was(proj, "boostfeel", frozenset(x), start, end, now_dim, frozenset(now)))
            assert got == exact.was(year, "boostfeel", x, start, end, now_dim, now)
            checked += len(got)
            if len(x) == 2 and now_dim == "boostfeel" and end - start > DAY:
                assert got  # something to compare
            # paged like the members endpoint: the pages add up to the whole, in client-id order
            pages: list[dict[str, Any]] = []
            after: str | None = ""
            while after is not None:
                page, after = await reads.was_page(proj, "boostfeel", frozenset(x), start, end, now_dim,
                                                   frozenset(now), after, 7)
                assert len(page) <= 7
                pages += page
            assert [r["client_id"] for r in pages] == sorted(got) and {r["client_id"]: r for r in pages} == got
        for x in ({"at_risk"}, {"lost"}, {"vip"}, {"at_risk", "lost"}):
            got_e = {cid: r["entered"] for cid, r in (await all_rows(
                reads.iter_entered(proj, "boostfeel", frozenset(x), start, end))).items()}
            assert got_e == exact.entered(year, "boostfeel", x, start, end)
            checked += len(got_e)
    for x in ({"vip"}, {"at_risk"}, {"lost"}, {"loyal", "vip"}, {"other"}):
        assert await reads.stays(proj, "boostfeel", frozenset(x), NOW) == exact.stays(year, "boostfeel", x, NOW)
        s, e = windows[0]
        assert await reads.stays(proj, "boostfeel", frozenset(x), NOW, s, e) == exact.stays(year, "boostfeel", x,
                                                                                            NOW, s, e)
    # a value dimension: segment ids of any text
    assert await reads.stays(proj, "rfm_score", frozenset({"555", "554"}), NOW) == exact.stays(
        year, "rfm_score", {"555", "554"}, NOW)
    months = [(2025, m) for m in range(6, 13)] + [(2026, m) for m in range(1, 6)]
    active = {"vip", "loyal", "potentially_loyal"}
    got_c = await reads.cohorts(proj, "boostfeel", frozenset(active), 2025 * 12 + 5, 2026 * 12 + 4, 12, NOW)
    assert got_c == exact.cohorts(year, "boostfeel", active, months, 12, NOW, TZ)
    assert sum(r["clients"] for r in got_c) == len(exact.chains(year, "boostfeel"))
    assert checked > 300


async def test_retention_keeps_every_answer_about_its_window(redis_url: str, year: list[dict[str, Any]]) -> None:
    """With 60 days kept, every question about the last 60 days has the full history's
    answer, and the kept history is the full one's tail; bytes per client measured."""
    full = Projection.from_url(redis_url, namespace(f"test-{uuid.uuid4().hex[:10]}"), TZ)
    short = Projection.from_url(redis_url, namespace(f"test-{uuid.uuid4().hex[:10]}"), TZ)
    short.history_days = 60
    try:
        await project(full, year)
        await project(short, year, seed=6)
        start = NOW - 60 * DAY
        for x in ({"vip"}, {"at_risk"}, {"lost", "at_risk"}):
            fx = frozenset(x)
            for p1, p2 in [(reads.iter_was(full, "boostfeel", fx, start, NOW), reads.iter_was(short, "boostfeel", fx,
                                                                                             start, NOW)),
                           (reads.iter_entered(full, "boostfeel", fx, start, NOW),
                            reads.iter_entered(short, "boostfeel", fx, start, NOW))]:
                assert await all_rows(p1) == await all_rows(p2)
            assert await reads.stays(full, "boostfeel", fx, NOW, start) == await reads.stays(short, "boostfeel", fx,
                                                                                            NOW, start)
        sizes = {}
        for name, p in (("full", full), ("short", short)):
            total = clients = 0
            for cid in exact.chains(year, "boostfeel"):
                row = await p.client(cid)
                total += sum(len(k) + len(v) for k, v in row.items() if k.endswith(":h"))
                clients += 1
            sizes[name] = total / clients
            for cid in list(exact.chains(year, "boostfeel"))[:50]:
                hf, hs = await hist(full, cid, "boostfeel"), await hist(short, cid, "boostfeel")
                assert hf is not None and hs is not None
                assert hf.intervals[len(hf.intervals) - len(hs.intervals):] == hs.intervals
        print(f"\npacked history per client (3 dimensions): {sizes}")
        assert sizes["short"] < sizes["full"] < 400
    finally:
        for p in (full, short):
            await drop_generation(p.redis, p.ns + ":")
            await p.close()


async def test_query_latency_300_clients(proj: Projection, year: list[dict[str, Any]]) -> None:
    await project(proj, year)
    started = time.perf_counter()
    rows = await all_rows(reads.iter_was(proj, "boostfeel", frozenset({"vip", "loyal"}), t("2026-01-01T00:00:00+03:00"),
                                         t("2026-04-01T00:00:00+03:00"), "boostfeel", frozenset({"at_risk", "lost"})))
    took = time.perf_counter() - started
    print(f"\nlapsed VIP or loyal clients over 300 clients: {len(rows)} in {took * 1000:.1f} ms")
    assert rows and took < 1.0


async def _histories(p: Projection, prefix: str, dim: str, clients: list[str]) -> dict[str, Any]:
    table = {k.decode(): v.decode() for k, v in (await p.redis.hgetall(f"{prefix}hname:{dim}")).items()}
    out: dict[str, Any] = {}
    for cid in clients:
        raw = await p.redis.hget(f"{prefix}c:{cid}", field(dim))
        out[cid] = decode(raw, table) if raw else None
    for seg in set(table.values()):
        out[f"hix:{seg}"] = await p.redis.zrange(f"{prefix}hix:{dim}:{seg}", 0, -1, withscores=True)
    out["hfirst"] = await p.redis.zrange(f"{prefix}hfirst:{dim}", 0, -1, withscores=True)
    return out


@pytest.mark.parametrize("keep", [730, 60])
async def test_a_rebuild_from_a_truncated_topic_keeps_the_older_history(
        proj: Projection, year: list[dict[str, Any]], keep: int) -> None:
    """Generation 0 saw every change; the topic now holds the last 40 days only. Rebuilt
    into generation 1 from that tail plus the clients' current states, then extended with
    generation 0's older intervals (copy_older): equal to generation 0."""
    from app.projection.history_write import copy_older

    proj.history_days = keep
    await project(proj, year)
    tail = [e for e in year if exact.epoch(e["time"]) >= NOW - 40 * DAY]
    await proj.apply([Update.from_event(e) for e in tail], gen="1")
    finals = exact.now_segments(year, "boostfeel")
    states = [Update(cid, "boostfeel", seg, "", at, count=False) for cid, (seg, at) in finals.items()]
    await proj.apply(states, gen="1")  # the changelog: every client's current segment
    clients = sorted(finals)
    before = await _histories(proj, proj.prefix("1"), "boostfeel", clients)
    assert any(h is not None and h.first is None for k, h in before.items() if k.startswith("c-"))  # truncated
    assert await copy_older(proj, "0", "1") > 0
    got = await _histories(proj, proj.prefix("1"), "boostfeel", clients)
    want = await _histories(proj, proj.prefix("0"), "boostfeel", clients)
    assert got == want
    assert await copy_older(proj, "0", "1") == 0  # nothing left to add

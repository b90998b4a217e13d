"""The Redis projection's Lua writes against the real local Redis (no mocks): ordering,
idempotence under redelivery, counters, last month's segment, revenue, snapshots."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from app.projection.store import Days, Projection, Update, drop_generation, namespace

pytestmark = pytest.mark.integration


def t(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@pytest.fixture
async def proj(redis_url: str) -> AsyncIterator[Projection]:
    p = Projection.from_url(redis_url, namespace(f"test-{uuid.uuid4().hex[:10]}"))
    try:
        yield p
    finally:
        await drop_generation(p.redis, p.ns + ":")
        await p.close()


def u(cid: str, frm: str, to: str, when: str, dim: str = "d", **kw: object) -> Update:
    return Update(cid, dim, to, frm, t(when), **kw)  # type: ignore[arg-type]


async def counts(p: Projection, dim: str = "d") -> dict[str, int]:
    return (await p.sizes([dim]))[dim]


async def members(p: Projection, dim: str, seg: str) -> set[str]:
    return {cid async for chunk in p.iter_members(dim, seg) for cid, _ in chunk}


async def all_transitions(p: Projection, dim: str = "d") -> Counter[str]:
    c: Counter[str] = Counter()
    for _, row in await p.transitions(dim, "2000-01-01", "2100-01-01"):
        c.update(row)
    return c


async def test_in_order_then_redelivered(proj: Projection) -> None:
    events = [u("c1", "", "new", "2026-01-05T10:00:00"),
              u("c1", "new", "loyal", "2026-02-10T10:00:00"),
              u("c1", "loyal", "vip", "2026-03-01T10:00:00"),
              u("c2", "", "new", "2026-03-02T10:00:00")]
    assert await proj.apply(events) == [1, 1, 1, 1]
    first = await proj.client("c1")
    # redelivery of everything, whole and in pieces: no-op
    assert await proj.apply(events) == [0, 0, 0, 0]
    assert await proj.apply(events[1:2]) == [0]
    assert await proj.client("c1") == first
    assert first["d"] == "vip" and first["d:prev"] == "loyal"
    assert int(first["d:since"]) == t("2026-03-01T10:00:00")
    assert await counts(proj) == {"vip": 1, "new": 1}
    assert await members(proj, "d", "vip") == {"c1"}
    assert await members(proj, "d", "new") == {"c2"}
    assert await members(proj, "d", "loyal") == set()
    assert await all_transitions(proj) == Counter({">new": 2, "new>loyal": 1, "loyal>vip": 1})


async def test_stale_update_never_overwrites_newer(proj: Projection) -> None:
    newer = u("c1", "loyal", "vip", "2026-03-01T10:00:00")
    older = u("c1", "new", "loyal", "2026-02-01T10:00:00")
    assert await proj.apply([newer]) == [1]
    assert await proj.apply([older]) == [0]
    h = await proj.client("c1")
    assert h["d"] == "vip"
    assert await counts(proj) == {"vip": 1}
    assert await all_transitions(proj) == Counter({"loyal>vip": 1})


async def test_same_second_chain_and_redelivery(proj: Projection) -> None:
    a = u("c1", "", "a", "2026-03-01T10:00:00")
    b = u("c1", "a", "b", "2026-03-01T10:00:00")  # two changes in one second
    c = u("c1", "b", "c", "2026-03-01T10:00:00")
    assert await proj.apply([a, b, c]) == [1, 1, 1]
    assert await proj.apply([b, a, c, b]) == [0, 0, 0, 0]
    back = u("c1", "c", "a", "2026-03-01T10:00:00")  # back to "a" in the same second
    assert await proj.apply([back, a, b]) == [1, 0, 0]  # a>b again: a redelivery, not applied
    assert (await proj.client("c1"))["d"] == "a"
    assert await all_transitions(proj) == Counter({">a": 1, "a>b": 1, "b>c": 1, "c>a": 1})


async def test_random_redelivery_and_reordering_match_in_order(proj: Projection) -> None:
    """Chains per client, applied shuffled with duplicates, in batches: the final
    projection equals the in-order result and every change is counted once at most."""
    rng = random.Random(7)
    segs = ["a", "b", "c", "d"]
    chains: dict[str, list[Update]] = {}
    for n in range(40):
        cid, cur, when = f"c{n}", "", t("2026-01-01T00:00:00") + n
        chain: list[Update] = []
        for _ in range(rng.randint(1, 6)):
            to = rng.choice([s for s in segs if s != cur])
            when += rng.choice([0, 3600, 86_400 * 20])
            if any(x.at == when and (x.from_, x.to) == (cur, to) for x in chain):
                when += 1  # the same change twice in one second: see app.projection.store
            chain.append(Update(cid, "d", to, cur, when))
            cur = to
        chains[cid] = chain
    # in order, per client (as the topic delivers), interleaved across clients
    stream = [up for chain in chains.values() for up in chain]
    assert all(r == 1 for r in await proj.apply(stream))
    expected = {cid: (await proj.client(cid))["d"] for cid in chains}
    sizes = await counts(proj)
    trans = await all_transitions(proj)
    # at-least-once: replay everything shuffled, several times, in batches of random size
    noisy = stream * 3
    rng.shuffle(noisy)
    while noisy:
        k = rng.randint(1, 50)
        assert set(await proj.apply(noisy[:k])) <= {0}
        noisy = noisy[k:]
    assert {cid: (await proj.client(cid))["d"] for cid in chains} == expected
    assert await counts(proj) == sizes == dict(Counter(expected.values()))
    assert await all_transitions(proj) == trans
    assert sum(trans.values()) == len(stream)
    for seg in segs:
        assert await members(proj, "d", seg) == {c for c, s in expected.items() if s == seg}


async def test_last_month_segment(proj: Projection) -> None:
    await proj.apply([u("c1", "", "new", "2026-01-20T00:00:00"),
                      u("c1", "new", "loyal", "2026-03-05T00:00:00"),
                      u("c1", "loyal", "vip", "2026-03-25T00:00:00"),
                      u("c2", "", "new", "2026-03-10T00:00:00")])
    h = await proj.client("c1")
    # "new" was held at the end of February; the first March change recorded it
    assert (h["d:lm"], h["d:lmseg"]) == ("2026-02", "new")
    assert h["d:sm"] == "2026-03"
    assert "d:lm" not in await proj.client("c2")  # no segment before March


async def test_revenue_and_metrics_follow_latest(proj: Projection) -> None:
    m1 = b'{"lifetime_value":"10.00"}'
    await proj.apply([
        u("c1", "", "new", "2026-01-01T00:00:00", dim="x", metrics=m1,
          metrics_at=t("2026-01-01T00:00:00"), revenue=1000),
        u("c1", "", "low", "2026-01-01T00:00:00", dim="y", metrics=m1,
          metrics_at=t("2026-01-01T00:00:00"), revenue=1000),
        u("c2", "", "new", "2026-01-02T00:00:00", dim="x", revenue=500,
          metrics_at=t("2026-01-02T00:00:00")),
        u("c1", "new", "loyal", "2026-02-01T00:00:00", dim="x", metrics=b'{"lifetime_value":"25.50"}',
          metrics_at=t("2026-02-01T00:00:00"), revenue=2550),
    ])
    assert await proj.revenue("x") == {"new": 500, "loyal": 2550}
    assert (await proj.revenue("y"))["low"] == 2550  # other dimensions follow the client's revenue
    # an older metrics update does not overwrite a newer one
    await proj.apply([u("c1", "", "new", "2026-01-01T00:00:00", dim="x", metrics=m1,
                        metrics_at=t("2026-01-01T00:00:00"), revenue=1000)])
    h = await proj.client("c1")
    assert h["metrics"] == '{"lifetime_value":"25.50"}' and h["revenue"] == "2550"
    assert await proj.revenue("x") == {"new": 500, "loyal": 2550}


async def test_metrics_from_the_changelog_patch_the_document_like_a_render(proj: Projection) -> None:
    """Metrics-only updates (the clients changelog): newer or equal versions win, revenue per
    segment follows, a first segment takes the projected revenue, and the patched lookup
    document equals a full RENDER of the hash."""
    await proj.apply_metrics([Update.metrics_only("c1", {"lifetime_value": "10.00"}, t("2026-01-01T00:00:00"))])
    await proj.apply([u("c1", "", "new", "2026-01-01T00:00:00", dim="x", rule="r1"),
                      u("c1", "", "low", "2026-01-01T00:00:00", dim="y")])
    assert await proj.revenue("x") == {"new": 1000} and await proj.revenue("y") == {"low": 1000}
    late = Update.metrics_only("c1", {"lifetime_value": "12.50", "note": "a|b"}, t("2026-01-05T00:00:00"))
    assert await proj.apply_metrics([late]) == [1]
    patched = (await proj.client("c1"))["doc"]
    g = await proj.generation(0.0)
    await proj._render(args=[proj.prefix(g), "c1"])
    assert (await proj.client("c1"))["doc"] == patched
    assert '"metrics":{"lifetime_value":"12.50","note":"a|b"},"metrics_at":"2026-01-05T00:00:00Z"' in patched
    assert await proj.revenue("x") == {"new": 1250} and await proj.revenue("y") == {"low": 1250}
    older = Update.metrics_only("c1", {"lifetime_value": "11.00"}, t("2026-01-04T00:00:00"))
    same = Update.metrics_only("c1", {"lifetime_value": "13.00"}, t("2026-01-05T00:00:00"))  # a late receipt
    assert await proj.apply_metrics([older, same]) == [0, 1]
    assert (await proj.client("c1"))["revenue"] == "1300" and await proj.revenue("x") == {"new": 1300}


async def test_snapshots_by_day(proj: Projection) -> None:
    await proj.apply([u("c1", "", "a", "2026-01-01T00:00:00", revenue=100,
                        metrics_at=t("2026-01-01T00:00:00")),
                      u("c2", "", "a", "2026-01-01T00:00:00")])
    assert await proj.snapshot("2026-01-01") == 1
    await proj.apply([u("c2", "a", "b", "2026-01-02T00:00:00")])
    await proj.snapshot("2026-01-02")
    await proj.snapshot("2026-01-02")  # rewritten while the day lasts
    snaps = await proj.snapshots("d", "2026-01-01", "2026-01-31")
    assert snaps == [("2026-01-01", {"a": (2, 100)}), ("2026-01-02", {"a": (1, 100), "b": (1, 0)})]
    assert await proj.snapshots("d", "2026-01-02", "2026-01-02") == snaps[1:]


async def test_generation_switch_redirects_writers(proj: Projection) -> None:
    await proj.apply([u("c1", "", "a", "2026-01-01T00:00:00")])
    await proj.redis.set(proj.gen_key, "7")  # a rebuild switched generations
    await proj.apply([u("c2", "", "a", "2026-01-01T00:00:00")])
    assert await proj.client("c2") != {}
    assert await proj.client("c1") == {}  # c1 lives in generation 0 only
    assert await proj.redis.exists(f"{proj.ns}:7:c:c2") == 1


async def test_members_pages_of_a_large_set(proj: Projection) -> None:
    await proj.apply([u(f"c{n:04d}", "", "big", "2026-01-01T00:00:00") for n in range(1500)])
    seen: list[str] = []
    cursor, skip = 0, 0
    for _ in range(1000):
        page, nxt = await proj.members_page("d", "big", cursor, skip, 70)
        assert len(page) <= 70
        seen += page
        if nxt is None:
            break
        head, _, tail = nxt.partition(":")
        cursor, skip = int(head), int(tail or 0)
    assert sorted(seen) == [f"c{n:04d}" for n in range(1500)]


def test_days_labels() -> None:
    days = Days("Europe/Moscow")
    at = t("2026-01-31T22:30:00")  # already February 1st in Moscow
    assert days.day(at) == "2026-02-01" and days.month(at) == "2026-02"
    assert Days.prev_month("2026-01") == "2025-12" and Days.prev_month("2026-11") == "2026-10"


def test_rebuild_command_is_registered() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "app", "projection", "rebuild", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage: loyalty projection rebuild" in out.stdout

"""Period reports (app.projection.periods, app.projection.period_clients) equal an exact
recomputation from replay's outputs: a simulated year through ``loyalty replay``'s core, its
receipt facts and changes projected into the real local Redis (facts twice: a redelivery counts
nothing), then every weekly and monthly figure (revenue by segment attributed at the purchase
and to the current segment) and the per-client report against plain Python over the replay's
facts and change events. The same on real purchases: tests/app/test_period_real_data.py."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.projection import period_clients, periods
from app.projection.store import Projection, Update
from app.serving.reports import client_rows, last_month_of
from rules import Engine, load_ruleset
from rules.calendar import BusinessCalendar, to_epoch

TZ = "Europe/Moscow"
AS_OF = datetime.fromisoformat("2026-05-20T15:00:00+03:00")  # mid-month: last month differs


@pytest.fixture
def proj(fresh_projection: Callable[[str], Projection]) -> Projection:
    return fresh_projection(TZ)


@cache
def _replay() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    engine = Engine([load_ruleset("boostfeel")], tz=TZ)
    facts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, changes.append, lambda row: None, on_fact=facts.append)
    for n, line in enumerate(generate(SimConfig(clients=300, days=365, seed=4)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    return facts, changes


async def fill(proj: Projection, facts: list[dict[str, Any]], changes: list[dict[str, Any]]) -> str:
    """Count the facts (and a redelivery of some) and apply the changes, in order; the prefix."""
    prefix = await proj.prefix_now()
    rows = periods.facts(orjson.dumps(f) for f in facts)
    assert await periods.count(proj.redis, prefix, rows, proj.days.cal) == len(facts)
    assert await periods.count(proj.redis, prefix, rows[:500], proj.days.cal) == 0  # redelivered
    ups = [Update(c["subject"], c["data"]["dimension"], c["data"]["to"], c["data"]["from"] or "",
                  to_epoch(datetime.fromisoformat(c["time"]))) for c in changes]
    for n in range(0, len(ups), 1000):  # the transitions per day (churned), the current segments
        await proj.apply(ups[n:n + 1000])
    return prefix


@cache
def _day(cal: BusinessCalendar, t: str) -> date:
    return date(1970, 1, 1) + timedelta(days=cal.day(to_epoch(datetime.fromisoformat(t))))


_NOW: dict[tuple[int, int, str], dict[str, tuple[str, datetime]]] = {}


def _now(changes: list[dict[str, Any]], dim: str) -> dict[str, tuple[str, datetime]]:
    """Each client's segment now and since when: its latest change in ``dim`` (memoized)."""
    key = (id(changes), len(changes), dim)
    if key not in _NOW:
        out: dict[str, tuple[str, datetime]] = {}
        for c in sorted(changes, key=lambda c: datetime.fromisoformat(c["time"])):  # stable: same-second chains
            if c["data"]["dimension"] == dim:
                out[c["subject"]] = (c["data"]["to"], datetime.fromisoformat(c["time"]))
        _NOW[key] = out
    return _NOW[key]


def exact_current(facts: list[dict[str, Any]], changes: list[dict[str, Any]], start: date, end: date,
                  cal: BusinessCalendar, dim: str) -> dict[str, Any]:
    """Revenue by segment, each client's revenue and sales of [start, end) in its segment now."""
    now = _now(changes, dim)
    cells: dict[str, list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for f in facts:
        if start <= _day(cal, f["time"]) < end and f["client_id"] in now:
            cell = cells[now[f["client_id"]][0]]
            cell[0] += Decimal(f["amount"])
            cell[1] += f["type"] == "sale"
    return {dim: {s: {"revenue": f"{v[0]:.2f}", "sales": v[1]} for s, v in sorted(cells.items())}} if cells else {}


def exact_clients(facts: list[dict[str, Any]], changes: list[dict[str, Any]], start: date, end: date,
                  cal: BusinessCalendar, dim: str, segment: str | None, as_of: datetime,
                  tz: str) -> list[dict[str, Any]]:
    """The per-client report: plain Python over the facts and the change events."""
    now = _now(changes, dim)
    local = as_of.astimezone(ZoneInfo(tz))
    month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    held: dict[str, str] = {}  # the segment at the end of last month: the latest change before this month
    for c in sorted(changes, key=lambda c: datetime.fromisoformat(c["time"])):
        if c["data"]["dimension"] == dim and datetime.fromisoformat(c["time"]) < month_start:
            held[c["subject"]] = c["data"]["to"]
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    visits: dict[str, int] = defaultdict(int)
    for f in facts:
        if start <= _day(cal, f["time"]) < end:
            revenue[f["client_id"]] += Decimal(f["amount"])
            visits[f["client_id"]] += f["type"] == "sale"
    ids = set(revenue) if segment is None else {c for c, (s, _) in now.items() if s == segment}
    return [{"client_id": c, "revenue": f"{revenue.get(c, Decimal(0)):.2f}", "visits": visits.get(c, 0),
             "segment": now[c][0] if c in now else None, "since": now[c][1] if c in now else None,
             "last_month_segment": held.get(c)} for c in sorted(ids)]


def as_compared(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report rows with ``since`` as an instant (the API writes RFC 3339 text)."""
    return [{**r, "since": datetime.fromisoformat(r["since"]) if r["since"] else None} for r in rows]


def _exact(facts: list[dict[str, Any]], changes: list[dict[str, Any]], start: date, end: date,
           cal: BusinessCalendar) -> dict[str, Any]:
    """Plain Python: the definitions of app.projection.periods, from the replay's outputs."""
    def day(t: str) -> date:
        return _day(cal, t)

    first: dict[str, date] = {}
    for f in facts:
        if f["type"] == "sale":
            d = day(f["time"])
            first[f["client_id"]] = min(first.get(f["client_id"], d), d)
    inside = [f for f in facts if start <= day(f["time"]) < end]
    sales = [f for f in inside if f["type"] == "sale"]
    revenue = sum(Decimal(f["amount"]) for f in inside)
    active = {f["client_id"] for f in sales}
    by_seg: dict[str, list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for f in inside:
        cell = by_seg[f["segments"]["boostfeel"]]
        cell[0] += Decimal(f["amount"])
        cell[1] += f["type"] == "sale"
    churned = sum(1 for c in changes if c["data"]["to"] == "lost" and start <= day(c["time"]) < end)
    new = sum(1 for c in active if start <= first[c] < end)
    return {
        "revenue": f"{revenue:.2f}", "sales": len(sales), "returns": len(inside) - len(sales),
        "active": len(active), "new": new, "returning": len(active) - new,
        "avg_check": f"{(revenue / len(sales)).quantize(Decimal('0.01')):.2f}" if sales else None,
        "sales_per_client": round(len(sales) / len(active), 4) if active else None,
        "churned": churned,
        "revenue_by_segment": {"boostfeel": {s: {"revenue": f"{v[0]:.2f}", "sales": v[1]}
                                             for s, v in sorted(by_seg.items())}} if by_seg else {},
    }


async def test_weekly_and_monthly_figures_equal_an_exact_recomputation(proj: Projection) -> None:
    facts, changes = _replay()
    assert len(facts) > 10_000 and any(f["type"] == "return" for f in facts)
    prefix = await fill(proj, facts, changes)
    cal = proj.days.cal
    checked = 0
    for period, start, end in (("week", date(2025, 12, 1), date(2026, 3, 2)),
                               ("month", date(2025, 7, 1), date(2026, 6, 1)),
                               ("day", date(2026, 5, 13), date(2026, 5, 20))):
        got = await periods.report(proj.redis, prefix, start, end, period, cal, ("boostfeel", ("lost",)))
        current = await periods.report(proj.redis, prefix, start, end, period, cal, ("boostfeel", ("lost",)),
                                       "current")
        for row, cur in zip(got, current, strict=True):
            span = (date.fromisoformat(row["from"]), date.fromisoformat(row["to"]))
            want = _exact(facts, changes, *span, cal)
            assert {k: row[k] for k in want} == want, (period, span)
            prev = periods.previous(span, period)
            assert row["previous"] == {"from": prev[0].isoformat(), "to": prev[1].isoformat(),
                                       **_exact(facts, changes, *prev, cal)}, (period, prev)
            # attribution=current: the same KPIs, revenue by the clients' segments now
            assert {**cur, "revenue_by_segment": None, "previous": None} == {
                **row, "revenue_by_segment": None, "previous": None}
            assert cur["revenue_by_segment"] == exact_current(facts, changes, *span, cal, "boostfeel"), span
            assert cur["previous"]["revenue_by_segment"] == exact_current(facts, changes, *prev, cal, "boostfeel")
            checked += 1
    assert checked == 13 + 11 + 7
    assert await period_clients.currencies(proj.redis, prefix) == sorted({f["currency"] for f in facts})


async def test_the_per_client_report_equals_an_exact_recomputation(proj: Projection) -> None:
    facts, changes = _replay()
    prefix = await fill(proj, facts, changes)
    cal, now = proj.days.cal, int(AS_OF.timestamp())
    last_month = last_month_of(proj.days, now)
    assert last_month == "2026-04"
    sizes = {"zero": 0, "last_month_differs": 0}
    for start, end, segment in ((date(2026, 5, 1), date(2026, 6, 1), None),
                                (date(2026, 5, 1), date(2026, 6, 1), "vip"),
                                (date(2026, 4, 1), date(2026, 6, 1), "lost"),
                                (date(2026, 3, 2), date(2026, 3, 9), None),
                                (date(2025, 6, 1), date(2026, 6, 1), None)):
        days = periods.day_labels((start, end))
        got = [r async for chunk in period_clients.iter_clients(proj.redis, prefix, days, "boostfeel", segment,
                                                                 chunk=97)
               for r in client_rows(chunk, "boostfeel", last_month)]
        want = exact_clients(facts, changes, start, end, cal, "boostfeel", segment, AS_OF, TZ)
        assert len(want) > 10 and as_compared(got) == want, (start, end, segment)
        page, after, paged = [], "", []
        while True:  # pages of 50 add up to the whole
            page, last = await period_clients.client_page(proj.redis, prefix, days, "boostfeel", segment, after, 50)
            paged += client_rows(page, "boostfeel", last_month)
            if last is None:
                break
            after = last
        assert paged == got
        sizes["zero"] += sum(r["visits"] == 0 and r["revenue"] == "0.00" for r in want)
        sizes["last_month_differs"] += sum(r["last_month_segment"] != r["segment"] for r in want)
    assert sizes["zero"] > 20 and sizes["last_month_differs"] > 20, sizes  # sleeping members; moves this month


def test_periods_are_aligned_and_the_previous_one_has_the_same_length() -> None:
    assert periods.periods(date(2026, 3, 4), date(2026, 3, 20), "week") == [
        (date(2026, 3, 2), date(2026, 3, 9)), (date(2026, 3, 9), date(2026, 3, 16)),
        (date(2026, 3, 16), date(2026, 3, 23))]
    assert periods.periods(date(2026, 1, 15), date(2026, 3, 1), "month") == [
        (date(2026, 1, 1), date(2026, 2, 1)), (date(2026, 2, 1), date(2026, 3, 1))]
    assert periods.previous((date(2026, 3, 1), date(2026, 4, 1)), "month") == (date(2026, 2, 1), date(2026, 3, 1))
    assert periods.previous((date(2026, 3, 9), date(2026, 3, 16)), "week") == (date(2026, 3, 2), date(2026, 3, 9))

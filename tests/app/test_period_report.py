"""Period reports (app.projection.periods) equal an exact recomputation from replay's outputs:
a simulated year through ``loyalty replay``'s core, its receipt facts and changes projected
into the real local Redis (facts twice: a redelivery counts nothing), then every weekly and
monthly figure against plain Python over the replay's facts and change events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.projection import periods
from app.projection.store import Projection, Update
from rules import Engine, load_ruleset
from rules.calendar import BusinessCalendar, to_epoch

TZ = "Europe/Moscow"
AS_OF = datetime.fromisoformat("2026-06-01T00:00:00+03:00")


@pytest.fixture
def proj(fresh_projection: Callable[[str], Projection]) -> Projection:
    return fresh_projection(TZ)


def _replay() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    engine = Engine([load_ruleset("boostfeel")], tz=TZ)
    facts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, changes.append, lambda row: None, on_fact=facts.append)
    for n, line in enumerate(generate(SimConfig(clients=300, days=365, seed=4)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    return facts, changes


def _exact(facts: list[dict[str, Any]], changes: list[dict[str, Any]], start: date, end: date,
           cal: BusinessCalendar) -> dict[str, Any]:
    """Plain Python: the definitions of app.projection.periods, from the replay's outputs."""
    def day(t: str) -> date:
        return date(1970, 1, 1) + timedelta(days=cal.day(to_epoch(datetime.fromisoformat(t))))

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
                                             for s, v in sorted(by_seg.items())}},
    }


async def test_weekly_and_monthly_figures_equal_an_exact_recomputation(proj: Projection) -> None:
    facts, changes = _replay()
    assert len(facts) > 10_000 and any(f["type"] == "return" for f in facts)
    prefix = await proj.prefix_now()
    cal = proj.days.cal
    rows = periods.facts(orjson.dumps(f) for f in facts)
    assert await periods.count(proj.redis, prefix, rows, cal) == len(facts)
    assert await periods.count(proj.redis, prefix, rows[:500], cal) == 0  # redelivered
    for c in changes:  # the transitions per day (churned)
        d = c["data"]
        await proj.apply([Update(c["subject"], d["dimension"], d["to"], d["from"] or "",
                                 to_epoch(datetime.fromisoformat(c["time"])))])
    checked = 0
    for period, start, end in (("week", date(2025, 12, 1), date(2026, 3, 2)),
                               ("month", date(2025, 7, 1), date(2026, 6, 1)),
                               ("day", date(2026, 5, 20), date(2026, 5, 27))):
        got = await periods.report(proj.redis, prefix, start, end, period, cal, ("boostfeel", ("lost",)))
        for row in got:
            span = (date.fromisoformat(row["from"]), date.fromisoformat(row["to"]))
            want = _exact(facts, changes, *span, cal)
            assert {k: row[k] for k in want} == want, (period, span)
            prev = periods.previous(span, period)
            assert row["previous"] == {**_exact(facts, changes, *prev, cal)}, (period, prev)
            checked += 1
    assert checked == 13 + 11 + 7


def test_periods_are_aligned_and_the_previous_one_has_the_same_length() -> None:
    assert periods.periods(date(2026, 3, 4), date(2026, 3, 20), "week") == [
        (date(2026, 3, 2), date(2026, 3, 9)), (date(2026, 3, 9), date(2026, 3, 16)),
        (date(2026, 3, 16), date(2026, 3, 23))]
    assert periods.periods(date(2026, 1, 15), date(2026, 3, 1), "month") == [
        (date(2026, 1, 1), date(2026, 2, 1)), (date(2026, 2, 1), date(2026, 3, 1))]
    assert periods.previous((date(2026, 3, 1), date(2026, 4, 1)), "month") == (date(2026, 2, 1), date(2026, 3, 1))
    assert periods.previous((date(2026, 3, 9), date(2026, 3, 16)), "week") == (date(2026, 3, 2), date(2026, 3, 9))

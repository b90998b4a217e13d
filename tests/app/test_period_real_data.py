"""The period reports on real purchases nobody here wrote: CDNOW (the CD retailer's 1997-1998
transaction log shipped by ``lifetimes``, a test-only dependency, read as a file; see
tests/app/test_real_data.py). Every 8th customer (~2,950, ~8,900 purchases up to 1998-06-20)
through ``loyalty replay``'s core with boostfeel, the receipt facts counted and the changes
projected into the real local Redis, then the monthly and weekly KPIs, revenue by segment
attributed at the purchase and to the current segment, and the per-client report against
the exact recomputation from the facts and change events (tests/app/test_period_report.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.replay import Replay
from app.projection import period_clients, periods
from app.projection.store import Projection
from app.serving.reports import client_rows, last_month_of
from rules import Engine, load_ruleset
from tests.app.test_period_report import _exact, as_compared, exact_clients, exact_current, fill

pytestmark = pytest.mark.integration
TZ = "America/New_York"
AS_OF = datetime.fromisoformat("1998-06-20T12:00:00+00:00")  # mid-month: last month's segment differs


def _cdnow() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lifetimes (the CDNOW data set) is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"


def _replay() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    receipts = []
    for n, line in enumerate(_cdnow().read_text().splitlines()[1:], 1):
        customer, day, _cds, dollars = line.split()
        if int(customer) % 8 == 0 and day < "19980620":
            receipts.append((day, orjson.dumps({
                "receipt_id": f"cdnow-{n}", "client_id": customer, "type": "sale",
                "occurred_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00Z", "total": dollars, "currency": "USD"})))
    receipts.sort(key=lambda r: r[0])
    facts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    rp = Replay(Engine([load_ruleset("boostfeel")], tz=TZ), AS_OF, changes.append, lambda _: None,
                on_fact=facts.append)
    for n, (_, line) in enumerate(receipts, 1):
        rp.receipt_line(line, n)
    rp.finish()
    return facts, changes


@pytest.fixture
def proj(fresh_projection: Callable[[str], Projection]) -> Projection:
    return fresh_projection(TZ)


async def test_cdnow_period_reports_equal_the_exact_recomputation(proj: Projection) -> None:
    facts, changes = _replay()
    assert len(facts) > 8_000 and len({f["client_id"] for f in facts}) > 2_500
    prefix = await fill(proj, facts, changes)
    cal = proj.days.cal
    assert await period_clients.currencies(proj.redis, prefix) == ["USD"]
    checked = 0
    for period, start, end in (("month", date(1997, 1, 1), date(1998, 7, 1)),
                               ("week", date(1997, 3, 3), date(1997, 6, 2))):
        for attribution in periods.ATTRIBUTIONS:
            got = await periods.report(proj.redis, prefix, start, end, period, cal, ("boostfeel", ("lost",)),
                                       attribution)
            for row in got:
                span = (date.fromisoformat(row["from"]), date.fromisoformat(row["to"]))
                prev = periods.previous(span, period)
                want, before = _exact(facts, changes, *span, cal), _exact(facts, changes, *prev, cal)
                if attribution == "current":
                    want["revenue_by_segment"] = exact_current(facts, changes, *span, cal, "boostfeel")
                    before["revenue_by_segment"] = exact_current(facts, changes, *prev, cal, "boostfeel")
                assert {k: row[k] for k in want} == want, (period, span, attribution)
                assert row["previous"] == {"from": prev[0].isoformat(), "to": prev[1].isoformat(), **before}
                checked += 1
    assert checked == 2 * (18 + 13)
    last_month = last_month_of(proj.days, int(AS_OF.timestamp()))
    assert last_month == "1998-05"
    for start, end, segment in ((date(1998, 5, 1), date(1998, 6, 1), None),
                                (date(1997, 1, 1), date(1997, 4, 1), None),
                                (date(1998, 5, 1), date(1998, 6, 1), "lost"),
                                (date(1998, 1, 1), date(1998, 7, 1), "at_risk")):
        days = periods.day_labels((start, end))
        got_rows = [r async for chunk in period_clients.iter_clients(proj.redis, prefix, days, "boostfeel", segment)
                    for r in client_rows(chunk, "boostfeel", last_month)]
        want_rows = exact_clients(facts, changes, start, end, cal, "boostfeel", segment, AS_OF, TZ)
        assert len(want_rows) > 20 and as_compared(got_rows) == want_rows, (start, end, segment)

"""The membership history on real purchases nobody here wrote: CDNOW (the CD retailer's
1997-1998 transaction log shipped by ``lifetimes``, a test-only dependency, read as a file;
see tests/app/test_real_data.py). Every 8th customer (~2,950, ~8,700 purchases) through
``loyalty replay``'s core with boostfeel, the changes projected into the real local Redis
with redeliveries, every answer against the exact recomputation from the change events.
CDNOW's customers all made their first purchase in the first quarter of 1997: the cohort
table's three cohorts hold every customer."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.replay import Replay
from app.projection import history_reads as reads
from app.projection.store import Projection, Update
from rules import Engine, load_ruleset
from tests.app import history_exact as exact

pytestmark = pytest.mark.integration
TZ = "America/New_York"
AS_OF = datetime.fromisoformat("1998-07-01T12:00:00+00:00")
NOW = int(AS_OF.timestamp())


def _cdnow() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lifetimes (the CDNOW data set) is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"


def _events() -> tuple[list[dict[str, Any]], set[str]]:
    receipts = []
    for n, line in enumerate(_cdnow().read_text().splitlines()[1:], 1):
        customer, day, _cds, dollars = line.split()
        if int(customer) % 8 == 0:
            receipts.append((day, orjson.dumps({
                "receipt_id": f"cdnow-{n}", "client_id": customer, "type": "sale",
                "occurred_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00Z", "total": dollars, "currency": "USD"})))
    receipts.sort(key=lambda r: r[0])
    events: list[dict[str, Any]] = []
    rp = Replay(Engine([load_ruleset("boostfeel")], tz=TZ), AS_OF, events.append, lambda _: None)
    for n, (_, line) in enumerate(receipts, 1):
        rp.receipt_line(line, n)
    rp.finish()
    return events, {orjson.loads(r)["client_id"] for _, r in receipts}


@pytest.fixture
def proj(fresh_projection: Callable[[str], Projection]) -> Projection:
    return fresh_projection(TZ)


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


async def test_cdnow_answers_equal_the_exact_recomputation(proj: Projection) -> None:
    events, customers = _events()
    assert len(customers) > 2_500 and len(events) > 20_000
    ups = [Update.from_event(e) for e in events]
    rng, done = random.Random(3), 0
    while done < len(ups):  # in order, in batches, re-reading from an earlier offset now and then
        step = rng.randint(200, 2_000)
        back = rng.randint(0, min(done, 1_000)) if rng.random() < 0.3 else 0
        await proj.apply(ups[done - back:done + step])
        done += step
    q2 = (ts("1997-04-01T00:00:00-05:00"), ts("1997-07-01T00:00:00-04:00"))
    q3 = (ts("1997-07-01T00:00:00-04:00"), ts("1997-10-01T00:00:00-04:00"))
    got = {r["client_id"]: r async for r in reads.iter_was(proj, "boostfeel", frozenset({"potentially_loyal"}), *q2,
                                                           None, frozenset({"lost"}))}
    want = exact.was(events, "boostfeel", {"potentially_loyal"}, *q2, "boostfeel", {"lost"})
    assert len(want) > 100 and got == want
    got_e = {r["client_id"]: r["entered"]
             async for r in reads.iter_entered(proj, "boostfeel", frozenset({"at_risk"}), *q3)}
    want_e = exact.entered(events, "boostfeel", {"at_risk"}, *q3)
    assert len(want_e) > 100 and got_e == want_e
    for x in ({"at_risk"}, {"lost"}, {"potentially_loyal"}, {"at_risk", "lost"}):
        assert await reads.stays(proj, "boostfeel", frozenset(x), NOW) == exact.stays(events, "boostfeel", x, NOW)
    active = {"potentially_loyal", "other"}
    rows = await reads.cohorts(proj, "boostfeel", frozenset(active), 1997 * 12, 1997 * 12 + 2, 12, NOW)
    assert rows == exact.cohorts(events, "boostfeel", active, [(1997, 1), (1997, 2), (1997, 3)], 12, NOW, TZ)
    assert sum(r["clients"] for r in rows) == len(customers)
    first = rows[0]["months"]
    assert first[0]["active"] > first[12]["active"]  # CDNOW's customers fade

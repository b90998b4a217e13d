"""``GET /reports/period``, ``GET /reports/clients`` and ``loyalty period-report|client-report``
over a projection in the real local Redis filled from a replay of simulated receipts (facts and
changes): the token, JSON pages that add up to the whole, CSV that parses back to the JSON
values, machine-readable 400s, and the CLI giving the API's answers. The values themselves are
checked against exact recomputations in tests/app/test_period_report.py."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.cli.main import main
from app.projection.store import Projection, drop_generation, namespace
from app.serving.api import Api
from app.serving.reports import CLIENT_CSV, KPI_CSV, SEGMENT_CSV, encode_cursor
from app.serving.web import mount, mount_period_report
from rules import Engine, load_ruleset
from tests.app.test_period_report import as_compared, exact_clients, fill

pytestmark = pytest.mark.integration
TZ = "Europe/Moscow"
AS_OF = datetime.fromisoformat("2026-05-20T12:00:00+03:00")
TOKEN = "reports-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAY = "from=2026-05-01&to=2026-06-01"


@pytest.fixture(scope="module")
def replayed() -> tuple[Engine, list[dict[str, Any]], list[dict[str, Any]]]:
    engine = Engine([load_ruleset("boostfeel"), load_ruleset("rfm")], tz=TZ)
    facts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, changes.append, lambda _: None, on_fact=facts.append)
    for n, line in enumerate(generate(SimConfig(clients=120, days=120, seed=21)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    return engine, facts, changes


@pytest.fixture
async def app_id(redis_url: str, replayed: Any) -> AsyncIterator[str]:
    name = f"reports-{uuid.uuid4().hex[:10]}"
    proj = Projection.from_url(redis_url, namespace(name), TZ)
    await fill(proj, replayed[1], replayed[2])
    yield name
    await drop_generation(proj.redis, proj.ns + ":")
    await proj.close()


def _app(redis_url: str, app_id: str, engine: Engine) -> web.Application:
    app = web.Application()
    api = Api(Projection.from_url(redis_url, namespace(app_id), TZ), engine, lambda: AS_OF)
    mount(app, api, TOKEN, lambda: iter(()))
    mount_period_report(app, api)
    return app


@pytest.fixture
async def client(redis_url: str, app_id: str, replayed: Any) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(_app(redis_url, app_id, replayed[0]))) as c:
        yield c


@pytest.fixture
async def empty(redis_url: str, replayed: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """The API over a namespace with nothing in it (parameters are checked before any read)."""
    async with TestClient(TestServer(_app(redis_url, f"reports-{uuid.uuid4().hex[:10]}", replayed[0]))) as c:
        yield c


async def get(c: TestClient[Any, Any], path: str, status: int = 200) -> Any:
    resp = await c.get(path, headers=AUTH)
    body = await resp.text()
    assert resp.status == status, body
    if resp.content_type == "text/csv":
        return body
    return orjson.loads(body)


def parsed(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def blank(value: Any) -> str:
    return "" if value is None else str(value)


async def test_needs_the_token(client: TestClient[Any, Any]) -> None:
    for path in (f"/reports/period?{MAY}", f"/reports/clients?{MAY}&dimension=boostfeel"):
        assert (await client.get(path)).status == 401


@pytest.mark.parametrize("segment", [None, "lost", "loyal"])
async def test_client_pages_add_up_and_the_csv_parses_back(client: TestClient[Any, Any], replayed: Any,
                                                           segment: str | None) -> None:
    q = f"/reports/clients?{MAY}&dimension=boostfeel" + (f"&segment={segment}" if segment else "")
    whole = await get(client, f"{q}&limit=1000")
    assert whole["next"] is None and whole["currency"] == "RUB" and whole["segment"] == segment
    want = exact_clients(replayed[1], replayed[2], datetime(2026, 5, 1).date(), datetime(2026, 6, 1).date(),
                         replayed[0].cal, "boostfeel", segment, AS_OF, TZ)
    assert len(want) > 5 and as_compared(whole["rows"]) == want
    pages: list[dict[str, Any]] = []
    cursor: str | None = ""
    while cursor is not None:
        body = await get(client, f"{q}&limit=7&cursor={cursor}")
        assert len(body["rows"]) <= 7
        pages += body["rows"]
        cursor = body["next"]
    assert pages == whole["rows"]
    text = await get(client, f"{q}&format=csv")
    assert text.splitlines()[0] == CLIENT_CSV
    assert parsed(text) == [{k: blank(v) for k, v in r.items()} for r in whole["rows"]]


async def test_period_pages_csv_and_attributions(client: TestClient[Any, Any]) -> None:
    q = "/reports/period?from=2026-04-01&to=2026-05-11&period=day&churn=boostfeel:lost"
    whole = await get(client, f"{q}&limit=366")
    assert len(whole["periods"]) == 40 and whole["next"] is None and whole["currency"] == "RUB"
    assert whole["attribution"] == "purchase"
    pages: list[dict[str, Any]] = []
    cursor: str | None = ""
    while cursor is not None:
        body = await get(client, f"{q}&limit=15&cursor={cursor}")
        pages += body["periods"]
        cursor = body["next"]
    assert pages == whole["periods"]
    assert len((await get(client, q))["periods"]) == 40  # the default limit is 100
    text = await get(client, f"{q}&format=csv")
    assert text.splitlines()[0] == KPI_CSV
    rows = parsed(text)
    assert len(rows) == 40
    for row, period in zip(rows, whole["periods"], strict=True):
        prev = {"period": period["previous"]["from"], **period["previous"]}
        assert row == {**{k: blank(period[k]) for k in KPI_CSV.split(",") if not k.startswith("previous_")},
                       **{f"previous_{k}": blank(prev[k]) for k in KPI_CSV.split(",")
                          if not k.startswith("previous_")}}
    for attribution in ("purchase", "current"):
        body = await get(client, f"{q}&limit=366&attribution={attribution}")
        text = await get(client, f"{q}&format=csv&table=segments&attribution={attribution}")
        assert text.splitlines()[0] == SEGMENT_CSV
        got = {(r["period"], r["dimension"], r["segment"]): r for r in parsed(text)}
        want = {}
        for period in body["periods"]:
            for when, key in (("revenue_by_segment", ""), ("previous", "previous_")):
                segs = period[when] if not key else period[when]["revenue_by_segment"]
                for dim, cells in segs.items():
                    for seg, cell in cells.items():
                        row = want.setdefault((period["period"], dim, seg), {
                            "period": period["period"], "dimension": dim, "segment": seg, "revenue": "0.00",
                            "sales": "0", "previous_revenue": "0.00", "previous_sales": "0"})
                        row[f"{key}revenue"], row[f"{key}sales"] = cell["revenue"], str(cell["sales"])
        assert got == want and {d for _, d, _ in got} == {"boostfeel", "rfm", "rfm_score"}
    purchase = await get(client, f"{q}&limit=366")
    current = await get(client, f"{q}&limit=366&attribution=current")
    for a, b in zip(purchase["periods"], current["periods"], strict=True):  # the same money, elsewhere
        assert a["revenue"] == b["revenue"] and a["active"] == b["active"]
    assert any(a["revenue_by_segment"] != b["revenue_by_segment"]
               for a, b in zip(purchase["periods"], current["periods"], strict=True))


@pytest.mark.parametrize(("query", "parameter"), [
    ("/reports/period?to=2026-05-01", "from"),
    ("/reports/period?from=2026-05-01", "to"),
    ("/reports/period?from=2026-05-01&to=2026-04-01", "to"),
    ("/reports/period?from=2024-01-01&to=2026-04-01", "to"),
    ("/reports/period?from=may&to=2026-06-01", "from"),
    (f"/reports/period?{MAY}&period=year", "period"),
    (f"/reports/period?{MAY}&attribution=last", "attribution"),
    (f"/reports/period?{MAY}&format=xml", "format"),
    (f"/reports/period?{MAY}&table=rows", "table"),
    (f"/reports/period?{MAY}&limit=0", "limit"),
    (f"/reports/period?{MAY}&limit=367", "limit"),
    (f"/reports/period?{MAY}&cursor=%%%", "cursor"),
    (f"/reports/period?{MAY}&cursor=" + encode_cursor("c", "c-1"), "cursor"),
    (f"/reports/period?{MAY}&period=week&cursor=" + encode_cursor("p", "2026-05-02"), "cursor"),
    (f"/reports/period?{MAY}&churn=boostfeel", "churn"),
    (f"/reports/clients?{MAY}", "dimension"),
    (f"/reports/clients?{MAY}&dimension=nope", "dimension"),
    ("/reports/clients?from=2026-05-01&dimension=boostfeel", "to"),
    (f"/reports/clients?{MAY}&dimension=boostfeel&limit=1001", "limit"),
    (f"/reports/clients?{MAY}&dimension=boostfeel&cursor=" + encode_cursor("p", "2026-05-01"), "cursor"),
    (f"/reports/clients?{MAY}&dimension=boostfeel&format=pdf", "format"),
])
async def test_errors_name_the_parameter(empty: TestClient[Any, Any], query: str, parameter: str) -> None:
    body = await get(empty, query, 400)
    assert body["error"] == "bad_request" and body["parameter"] == parameter


async def test_cli_gives_the_api_answers(app_id: str, redis_url: str, client: TestClient[Any, Any],
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    for k, v in {"REDIS_URL": redis_url, "LOYALTY_APP_ID": app_id, "LOYALTY_TIMEZONE": TZ,
                 "LOYALTY_CLOCK": AS_OF.isoformat(), "LOYALTY_RULES": "boostfeel,rfm"}.items():
        monkeypatch.setenv(k, v)
    clients = await get(client, f"/reports/clients?{MAY}&dimension=boostfeel&segment=lost&limit=1000")
    weeks = await get(client, "/reports/period?from=2026-03-02&to=2026-05-25&attribution=current")
    segs = await get(client, "/reports/period?from=2026-03-02&to=2026-05-25&format=csv&table=segments")

    async def cli(*argv: str) -> bytes:  # in a thread: the command runs its own event loop
        assert await asyncio.to_thread(main, list(argv)) == 0
        return capsysbinary.readouterr().out

    base = ("--from", "2026-05-01", "--to", "2026-06-01", "--dimension", "boostfeel", "--segment", "lost")
    assert [orjson.loads(line) for line in (await cli("client-report", *base)).splitlines()] == clients["rows"]
    assert parsed((await cli("client-report", *base, "--format", "csv")).decode()) == [
        {k: blank(v) for k, v in r.items()} for r in clients["rows"]]
    out = await cli("period-report", "--from", "2026-03-02", "--to", "2026-05-25", "--attribution", "current")
    assert [orjson.loads(line) for line in out.splitlines()] == weeks["periods"]
    out = await cli("period-report", "--from", "2026-03-02", "--to", "2026-05-25", "--format", "csv",
                    "--table", "segments")
    assert out.decode() == segs
    with pytest.raises(SystemExit, match="no dimension 'nope'"):
        await asyncio.to_thread(main, ["client-report", *base[:4], "--dimension", "nope"])

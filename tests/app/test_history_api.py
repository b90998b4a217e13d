"""``GET /history/*`` and ``loyalty history`` over a projection in the real local Redis,
filled from a replay of simulated receipts: the token, JSON pages that add up to the whole,
CSV, errors, and the CLI giving the same answers."""

from __future__ import annotations

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
from app.projection import history_reads as reads
from app.projection.store import Projection, Update, drop_generation, namespace
from app.serving.api import Api
from app.serving.web import mount
from rules import Engine, load_ruleset
from tests.app import history_exact as exact

pytestmark = pytest.mark.integration
TZ = "Europe/Moscow"
AS_OF = datetime.fromisoformat("2026-06-01T00:00:00+03:00")
NOW = int(AS_OF.timestamp())
TOKEN = "history-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Q1 = "from=2026-01-01&to=2026-04-01"


@pytest.fixture(scope="module")
def replayed() -> tuple[Engine, list[dict[str, Any]]]:
    engine = Engine([load_ruleset("boostfeel"), load_ruleset("rfm")], tz=TZ)
    events: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, events.append, lambda _: None)
    for n, line in enumerate(generate(SimConfig(clients=150, days=240, seed=9)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    return engine, events


@pytest.fixture
async def app_id(redis_url: str, replayed: tuple[Engine, list[dict[str, Any]]]) -> AsyncIterator[str]:
    name = f"hist-{uuid.uuid4().hex[:10]}"
    proj = Projection.from_url(redis_url, namespace(name), TZ)
    await proj.apply([Update.from_event(e) for e in replayed[1]])
    yield name
    await drop_generation(proj.redis, proj.ns + ":")
    await proj.close()


@pytest.fixture
async def client(redis_url: str, app_id: str,
                 replayed: tuple[Engine, list[dict[str, Any]]]) -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application()
    proj = Projection.from_url(redis_url, namespace(app_id), TZ)
    mount(app, Api(proj, replayed[0], lambda: AS_OF), TOKEN, lambda: iter(()))
    async with TestClient(TestServer(app)) as c:
        yield c


async def get(c: TestClient[Any, Any], path: str, status: int = 200) -> Any:
    resp = await c.get(path, headers=AUTH)
    body = await resp.text()
    assert resp.status == status, body
    return orjson.loads(body) if resp.content_type == "application/json" else body


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


async def test_needs_the_token(client: TestClient[Any, Any]) -> None:
    for path in ("/history/was", "/history/entered", "/history/stays", "/history/cohorts"):
        resp = await client.get(f"{path}?dimension=boostfeel&segment=vip&active=vip&{Q1}")
        assert resp.status == 401


async def test_was_pages_add_up_and_csv(client: TestClient[Any, Any], replayed: Any) -> None:
    q = f"/history/was?dimension=boostfeel&segment=vip,loyal&{Q1}&now=at_risk,lost"
    pages: list[dict[str, Any]] = []
    cursor: str | None = ""
    while cursor is not None:
        body = await get(client, f"{q}&limit=5&cursor={cursor}")
        assert len(body["clients"]) <= 5
        pages += body["clients"]
        cursor = body["next_cursor"]
    want = exact.was(replayed[1], "boostfeel", {"vip", "loyal"}, ts("2026-01-01T00:00:00+03:00"),
                     ts("2026-04-01T00:00:00+03:00"), "boostfeel", {"at_risk", "lost"})
    assert want and {r["client_id"]: r for r in pages} == want
    assert [r["client_id"] for r in pages] == sorted(want)
    assert body["now"] == {"dimension": "boostfeel", "segments": ["at_risk", "lost"]}
    text = await get(client, f"{q}&format=csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == sum(len(r["intervals"]) for r in want.values())
    assert {r["client_id"] for r in rows} == set(want)
    assert all(r["now_segment"] in ("at_risk", "lost") for r in rows)
    # the "now" segment in another dimension
    other = await get(client, f"/history/was?dimension=boostfeel&segment=loyal&{Q1}&now_dimension=rfm"
                              "&now=hibernating,lost,at_risk&limit=1000")
    assert {r["client_id"]: r for r in other["clients"]} == exact.was(
        replayed[1], "boostfeel", {"loyal"}, ts("2026-01-01T00:00:00+03:00"), ts("2026-04-01T00:00:00+03:00"),
        "rfm", {"hibernating", "lost", "at_risk"})


async def test_entered_stays_cohorts(client: TestClient[Any, Any], replayed: Any) -> None:
    events = replayed[1]
    body = await get(client, "/history/entered?dimension=boostfeel&segment=at_risk"
                             "&from=2026-03-01T00:00:00%2B03:00&to=2026-05-01&limit=1000")
    want = exact.entered(events, "boostfeel", {"at_risk"}, ts("2026-03-01T00:00:00+03:00"),
                         ts("2026-05-01T00:00:00+03:00"))
    assert want and {r["client_id"]: r["entered"] for r in body["clients"]} == want
    text = await get(client, "/history/entered?dimension=boostfeel&segment=at_risk&from=2026-03-01&to=2026-05-01"
                             "&format=csv")
    assert text.splitlines()[1:] == [f"{c},{t}" for c in sorted(want) for t in want[c]]
    body = await get(client, "/history/stays?dimension=boostfeel&segment=loyal")
    assert {k: body[k] for k in ("clients", "completed", "ongoing")} == exact.stays(events, "boostfeel", {"loyal"},
                                                                                   NOW)
    assert body["as_of"] == "2026-05-31T21:00:00Z"
    text = await get(client, "/history/stays?dimension=boostfeel&segment=loyal&format=csv")
    assert text.splitlines()[0] == "stays,count,mean_days,median_days,p90_days"
    assert text.splitlines()[1].startswith(f"completed,{body['completed']['count']},")
    body = await get(client, "/history/cohorts?dimension=boostfeel&active=loyal,vip,potentially_loyal"
                             "&from=2025-10&to=2026-05&months=6")
    months = [(2025, 10), (2025, 11), (2025, 12)] + [(2026, m) for m in range(1, 6)]
    assert body["cohorts"] == exact.cohorts(events, "boostfeel", {"loyal", "vip", "potentially_loyal"}, months, 6,
                                            NOW, TZ)
    text = await get(client, "/history/cohorts?dimension=boostfeel&active=loyal&from=2025-10&to=2026-05&months=6"
                             "&format=csv")
    lines = text.splitlines()
    assert lines[0] == "cohort,clients,m0,m1,m2,m3,m4,m5,m6" and len(lines) == 9
    assert lines[-1].startswith("2026-05,") and lines[-1].endswith(",,,,,,")  # none of May's ends is past


@pytest.mark.parametrize(("query", "parameter"), [
    ("/history/was?segment=vip&" + Q1, "dimension"),
    ("/history/was?dimension=nope&segment=vip&" + Q1, "dimension"),
    ("/history/was?dimension=boostfeel&" + Q1, "segment"),
    ("/history/was?dimension=boostfeel&segment=vip&from=2026-04-01", "to"),
    ("/history/was?dimension=boostfeel&segment=vip&from=yesterday&to=2026-04-01", "from"),
    ("/history/was?dimension=boostfeel&segment=vip&from=2026-04-01T00:00:00&to=2026-05-01", "from"),
    ("/history/was?dimension=boostfeel&segment=vip&from=2026-04-01&to=2026-04-01", "to"),
    ("/history/was?dimension=boostfeel&segment=vip&format=xml&" + Q1, "format"),
    ("/history/was?dimension=boostfeel&segment=vip&now_dimension=nope&now=x&" + Q1, "now_dimension"),
    ("/history/entered?dimension=boostfeel&segment=vip&limit=0&" + Q1, "limit"),
    ("/history/cohorts?dimension=boostfeel", "active"),
    ("/history/cohorts?dimension=boostfeel&active=vip&from=2026-13", "from"),
    ("/history/cohorts?dimension=boostfeel&active=vip&from=2026-05&to=2026-01", "from"),
    ("/history/cohorts?dimension=boostfeel&active=vip&months=13", "months"),
])
async def test_errors_name_the_parameter(client: TestClient[Any, Any], query: str, parameter: str) -> None:
    body = await get(client, query, 400)
    assert body["error"] == "bad_request" and body["parameter"] == parameter


def test_cli_gives_the_api_answers(app_id: str, redis_url: str, replayed: Any, monkeypatch: pytest.MonkeyPatch,
                                   capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    for k, v in {"REDIS_URL": redis_url, "LOYALTY_APP_ID": app_id, "LOYALTY_TIMEZONE": TZ,
                 "LOYALTY_CLOCK": AS_OF.isoformat(), "LOYALTY_RULES": "boostfeel,rfm"}.items():
        monkeypatch.setenv(k, v)
    events = replayed[1]
    assert main(["history", "was", "--dimension", "boostfeel", "--segment", "vip,loyal", "--from", "2026-01-01",
                 "--to", "2026-04-01", "--now", "at_risk,lost"]) == 0
    rows = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert {r["client_id"]: r for r in rows} == exact.was(
        events, "boostfeel", {"vip", "loyal"}, ts("2026-01-01T00:00:00+03:00"), ts("2026-04-01T00:00:00+03:00"),
        "boostfeel", {"at_risk", "lost"})
    assert main(["history", "entered", "--dimension", "boostfeel", "--segment", "lost", "--from", "2025-10-01",
                 "--to", "2026-06-01", "--csv"]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    want = exact.entered(events, "boostfeel", {"lost"}, ts("2025-10-01T00:00:00+03:00"), NOW)
    assert lines == ["client_id,entered"] + [f"{c},{t}" for c in sorted(want) for t in want[c]]
    assert main(["history", "stays", "--dimension", "boostfeel", "--segment", "at_risk"]) == 0
    body = orjson.loads(capsysbinary.readouterr().out)
    assert {k: body[k] for k in ("clients", "completed", "ongoing")} == exact.stays(events, "boostfeel", {"at_risk"},
                                                                                   NOW)
    assert main(["history", "cohorts", "--dimension", "boostfeel", "--active", "loyal", "--from", "2025-12",
                 "--to", "2026-02", "--months", "3"]) == 0
    got = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert got == exact.cohorts(events, "boostfeel", {"loyal"}, [(2025, 12), (2026, 1), (2026, 2)], 3, NOW, TZ)
    with pytest.raises(SystemExit, match="no dimension 'nope'"):
        main(["history", "stays", "--dimension", "nope", "--segment", "x"])


async def test_segments_seen(app_id: str, redis_url: str) -> None:
    proj = Projection.from_url(redis_url, namespace(app_id), TZ)
    try:
        seen = await reads.segments_seen(proj, "boostfeel")
        assert set(seen) <= {"other", "potentially_loyal", "loyal", "vip", "at_risk", "lost"} and "other" in seen
    finally:
        await proj.close()

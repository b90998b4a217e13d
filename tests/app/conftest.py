"""Shared data of the HTTP tests: a replay of simulated receipts and its projection in the
real local Redis (a fresh namespace per test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from agents.projector import state_updates
from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.projection.store import Projection, Update, drop_generation, namespace
from app.wire import codecs
from rules import Engine, load_ruleset
from rules.record.state import dumps as dump_state

AS_OF = datetime.fromisoformat("2026-06-15T00:00:00+00:00")
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RULES = ["boostfeel", "rfm"]


@dataclass
class Data:
    engine: Engine
    events: list[dict[str, Any]]
    segments: dict[str, dict[str, str]]
    metrics: dict[str, dict[str, Any]]
    table: dict[bytes, bytes]


@pytest.fixture(scope="module")
def data() -> Data:
    engine = Engine([load_ruleset(r) for r in RULES])
    events: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, events.append, lambda _: None)
    for n, line in enumerate(generate(SimConfig(clients=80, days=60, seed=3)), 1):
        rp.receipt_line(line, n)
    rows = rp.finish()
    table = {cid.encode(): codecs.table_value(engine.next_due(st), dump_state(st))
             for cid, st in rp.states.items()}
    return Data(engine, events, {r["client_id"]: r["segments"] for r in rows},
                {r["client_id"]: r["metrics"] for r in rows}, table)


@pytest.fixture
async def ns(redis_url: str) -> AsyncIterator[str]:
    name = namespace(f"api-{uuid.uuid4().hex[:10]}")
    yield name
    cleanup = Projection.from_url(redis_url, name)
    await drop_generation(cleanup.redis, name + ":")
    await cleanup.close()


async def filled(redis_url: str, ns: str, data: Data) -> Projection:
    """The projection of ``data`` (its change events, then the table's metrics)."""
    proj = Projection.from_url(redis_url, ns)
    await proj.apply([Update.from_event(e) for e in data.events])
    await proj.apply([u for cid, value in data.table.items()
                      for u in state_updates(data.engine, cid.decode(), value)])
    await proj.snapshot("2026-06-14")
    return proj


@pytest.fixture
async def fresh_projection(redis_url: str) -> AsyncIterator[Callable[[str], Projection]]:
    """Make projections in fresh namespaces of the real local Redis (a business time zone
    each); they are dropped after the test."""
    made: list[Projection] = []

    def make(tz: str) -> Projection:
        made.append(Projection.from_url(redis_url, namespace(f"test-{uuid.uuid4().hex[:10]}"), tz))
        return made[-1]

    yield make
    for p in made:
        await drop_generation(p.redis, p.ns + ":")
        await p.close()

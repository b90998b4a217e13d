"""``loyalty projection rebuild`` rebuilds the membership history: change events in real
Kafka (every one published twice: a producer retry), the clients changelog after them, a
rebuild into a new generation of the real local Redis with LOYALTY_HISTORY_DAYS, and the
history and its indexes equal those of the same changes applied directly. Twice: with every
change in the topic and no projection before; with only the last 30 days left in the topic
(its retention) and the projection that saw everything before: the older intervals are
copied from it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.projector import rebuild
from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.projection import history_reads as reads
from app.projection.history import decode, field
from app.projection.store import Projection, Update, drop_generation, namespace
from app.settings import Settings
from app.wire import codecs
from app.wire.kafka_io import ensure_topics, produce
from rules import Engine, load_ruleset
from rules.record.state import dumps as dump_state
from tests.integration.harness import unique_env

pytestmark = pytest.mark.integration
AS_OF = datetime.fromisoformat("2026-06-15T00:00:00+00:00")


async def _snapshot(proj: Projection, clients: list[str], dim: str) -> dict[str, Any]:
    """Every client's decoded history, every hix: and hfirst: zset of the dimension."""
    pre = await proj.prefix_now()
    table = await reads.names(proj, pre, dim)
    out: dict[str, Any] = {}
    for cid in clients:
        raw = (await proj.client(cid)).get(field(dim))
        out[cid] = decode(raw, table) if raw else None
    for seg in await reads.segments_seen(proj, dim):
        out[f"hix:{seg}"] = await proj.redis.zrange(f"{pre}hix:{dim}:{seg}", 0, -1, withscores=True)
    out["hfirst"] = await proj.redis.zrange(f"{pre}hfirst:{dim}", 0, -1, withscores=True)
    return out


@pytest.mark.parametrize("truncated", [False, True])
def test_rebuild_rebuilds_the_history(tmp_path: Path, kafka_bootstrap: str, redis_url: str,
                                      monkeypatch: pytest.MonkeyPatch, truncated: bool) -> None:
    for name, value in unique_env(kafka_bootstrap, tmp_path, REDIS_URL=redis_url, LOYALTY_HISTORY_DAYS="45").items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.history_days == 45
    engine = Engine([load_ruleset("boostfeel")])
    events: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, events.append, lambda _: None)
    for n, line in enumerate(generate(SimConfig(clients=60, days=150, seed=8)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    values = {cid.encode(): codecs.table_value(engine.next_due(st), dump_state(st)) for cid, st in rp.states.items()}
    clients = sorted({e["subject"] for e in events})

    async def run() -> None:
        await ensure_topics(settings, [settings.topic_changes, settings.clients_changelog])
        kept = events
        if truncated:  # the projection saw every change; the topic has kept the last 30 days
            live = Projection.from_url(settings.redis_url, namespace(settings.app_id))
            live.history_days = 45
            await live.apply([Update.from_event(e) for e in events])
            await live.close()
            end = datetime.fromisoformat(events[-1]["time"]).timestamp()
            kept = [e for e in events if datetime.fromisoformat(e["time"]).timestamp() >= end - 30 * 86_400]
        lines = [orjson.dumps(e) for e in kept for _ in range(2)]
        await produce(settings, settings.topic_changes, lines,
                      key_fn=lambda line: orjson.loads(line)["subject"].encode())
        keys = {v: k for k, v in values.items()}
        await produce(settings, settings.clients_changelog, list(values.values()), key_fn=keys.__getitem__)
        await rebuild(settings, engine, say=lambda _: None, settle=0.0)
        rebuilt = Projection.from_url(settings.redis_url, namespace(settings.app_id))
        direct = Projection.from_url(settings.redis_url, namespace(f"test-{uuid.uuid4().hex[:10]}"))
        direct.history_days = 45
        try:
            await direct.apply([Update.from_event(e) for e in events])
            got, want = await _snapshot(rebuilt, clients, "boostfeel"), await _snapshot(direct, clients, "boostfeel")
            assert got == want
            histories = [h for k, h in got.items() if not k.startswith("h") and h is not None]
            assert any(h.before for h in histories)  # 45 days cut
            oldest = min(datetime.fromisoformat(e["time"]).timestamp() for e in kept)
            assert any(h.intervals[0].entered < oldest for h in histories) == truncated  # copied from before
        finally:
            await drop_generation(direct.redis, direct.ns + ":")
            await rebuilt.close()
            await direct.close()

    asyncio.run(run())

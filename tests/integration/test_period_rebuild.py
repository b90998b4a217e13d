"""``loyalty projection rebuild`` rebuilds the period keys (app.projection.period_copy): receipt
facts in real Kafka (every one published twice: a producer retry), a rebuild into a new
generation of the real local Redis, and every period key (pd: pa: pc: pv: pseen: of each day,
pdays, pfirst, pcur) and the monthly report equal those of the same facts counted directly.
Twice: with every fact in the topic and no projection before; with only the facts of the last
30 days left in the topic (its retention) and a projection that counted everything before,
except one fact of the retention's boundary day that only the topic holds (the live projector
had not counted it yet): older days are copied, the boundary day is replaced and recounted."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.projector import rebuild
from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.projection import periods
from app.projection.store import Projection, drop_generation, namespace, text
from app.settings import Settings
from app.wire import codecs
from app.wire.kafka_io import ensure_topics, produce
from rules import Engine, load_ruleset
from rules.record.state import dumps as dump_state
from tests.integration.harness import unique_env

pytestmark = pytest.mark.integration
AS_OF = datetime.fromisoformat("2026-06-15T00:00:00+00:00")


async def _keys(proj: Projection) -> dict[str, Any]:
    """Every period key of the current generation, decoded."""
    p, r = await proj.prefix_now(), proj.redis
    out: dict[str, Any] = {"pdays": await r.zrange(f"{p}pdays", 0, -1, withscores=True),
                           "pfirst": await r.hgetall(f"{p}pfirst"), "pcur": await r.smembers(f"{p}pcur")}
    for day in [text(d) for d, _ in out["pdays"]]:
        for kind in periods.DAY_KEYS:
            key = f"{p}{kind}:{day}"
            out[f"{kind}:{day}"] = await (r.smembers(key) if kind in ("pa", "pseen") else r.hgetall(key))
    return out


@pytest.mark.parametrize("truncated", [False, True])
def test_rebuild_keeps_the_period_days(tmp_path: Path, kafka_bootstrap: str, redis_url: str,
                                       monkeypatch: pytest.MonkeyPatch, truncated: bool) -> None:
    for name, value in unique_env(kafka_bootstrap, tmp_path, REDIS_URL=redis_url).items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    engine = Engine([load_ruleset("boostfeel")])
    facts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, changes.append, lambda _: None, on_fact=facts.append)
    for n, line in enumerate(generate(SimConfig(clients=60, days=150, seed=8)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    values = {cid.encode(): codecs.table_value(engine.next_due(st), dump_state(st)) for cid, st in rp.states.items()}
    t = [datetime.fromisoformat(f["time"]).timestamp() for f in facts]
    cut = max(t) - 30 * 86_400
    boundary = datetime.fromtimestamp(cut, UTC).date().isoformat()  # UTC: the settings' business time zone
    late = {**facts[0], "receipt_id": "late-on-the-boundary", "time": datetime.fromtimestamp(cut + 1, UTC).isoformat(),
            "amount": "12.34"}  # a fact of the boundary day the old projection has not counted

    async def run() -> dict[str, Any]:
        assert settings.facts_topic
        await ensure_topics(settings, [settings.topic_changes, settings.clients_changelog, settings.facts_topic])
        kept = [*facts, late]
        if truncated:  # the projection counted every fact (but the late one); the topic kept the last 30 days
            live = Projection.from_url(settings.redis_url, namespace(settings.app_id))
            await periods.count(live.redis, await live.prefix_now(), periods.facts(orjson.dumps(f) for f in facts),
                                live.days.cal)
            await live.close()
            kept = [f for f, at in zip(facts, t, strict=True) if at >= cut] + [late]
        await produce(settings, settings.topic_changes, [orjson.dumps(e) for e in changes],
                      key_fn=lambda line: orjson.loads(line)["subject"].encode())
        keys = {v: k for k, v in values.items()}
        await produce(settings, settings.clients_changelog, list(values.values()), key_fn=keys.__getitem__)
        await produce(settings, settings.facts_topic, [orjson.dumps(f) for f in kept for _ in range(2)],
                      key_fn=lambda line: orjson.loads(line)["client_id"].encode())
        stats = await rebuild(settings, engine, say=lambda _: None, settle=0.0)
        rebuilt = Projection.from_url(settings.redis_url, namespace(settings.app_id))
        direct = Projection.from_url(settings.redis_url, namespace(f"test-{uuid.uuid4().hex[:10]}"))
        try:
            await periods.count(direct.redis, await direct.prefix_now(),
                                periods.facts(orjson.dumps(f) for f in [*facts, late]), direct.days.cal)
            assert await _keys(rebuilt) == await _keys(direct)
            months = [await periods.report(pr.redis, await pr.prefix_now(), date(2026, 1, 1), date(2026, 7, 1),
                                           "month", pr.days.cal) for pr in (rebuilt, direct)]
            assert months[0] == months[1] and sum(int(m["sales"]) for m in months[0]) > 1000
        finally:
            await drop_generation(direct.redis, direct.ns + ":")
            await rebuilt.close()
            await direct.close()
        return stats

    stats = asyncio.run(run())
    if truncated:  # the topic's facts, and the late one again on the boundary day replaced by the old one
        assert stats["receipt_facts"] == sum(at >= cut for at in t) + 2, stats
        assert stats["fact_days_copied"] > 60 and stats["fact_days_recounted"] == 1, (stats, boundary)
    else:
        assert stats["receipt_facts"] == len(facts) + 1, stats
        assert stats["fact_days_copied"] == stats["fact_days_replaced"] == 0, stats

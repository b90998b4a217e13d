"""``loyalty projection rebuild`` projects the hashed contacts too: the clients changelog
(real Kafka) into a new generation of the real local Redis, then the audience export."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from agents.projector import rebuild
from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.projection.audience import AudienceCount, iter_audience
from app.projection.store import Projection, namespace
from app.settings import Settings
from app.wire import codecs
from app.wire.kafka_io import ensure_topics, produce
from rules import Engine, load_ruleset
from rules.record.state import dumps as dump_state
from tests.integration.harness import unique_env

pytestmark = pytest.mark.integration
AS_OF = datetime.fromisoformat("2026-06-15T00:00:00+00:00")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_rebuild_projects_the_digests(tmp_path: Path, kafka_bootstrap: str, redis_url: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in unique_env(kafka_bootstrap, tmp_path, REDIS_URL=redis_url).items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    engine = Engine([load_ruleset("boostfeel")])
    events: list[dict[str, object]] = []
    rp = Replay(engine, AS_OF, events.append, lambda _: None)
    for n, line in enumerate(generate(SimConfig(clients=40, days=60, seed=5)), 1):
        rp.receipt_line(line, n)
    rp.finish()
    expected: dict[str, tuple[str, str]] = {}
    values: dict[bytes, bytes] = {}
    for n, (cid, state) in enumerate(sorted(rp.states.items())):
        email = sha(f"{cid}@example.com") if n % 3 else ""
        phone = sha(f"7903{n:07d}") if n % 3 != 1 else ""
        state.profile.update({k: v for k, v in (("email_sha256", email), ("phone_sha256", phone)) if v})
        values[codecs.table_value(engine.next_due(state), dump_state(state))] = cid.encode()
        if state.segments:
            expected[cid] = (email, phone)

    async def run() -> dict[str, tuple[str, str]]:
        await ensure_topics(settings, [settings.topic_changes, settings.clients_changelog])
        await produce(settings, settings.topic_changes, [orjson.dumps(e) for e in events],
                      key_fn=lambda line: orjson.loads(line)["subject"].encode())
        await produce(settings, settings.clients_changelog, list(values), key_fn=values.__getitem__)
        stats = await rebuild(settings, engine, say=lambda _: None, settle=0.0)
        assert stats["clients"] == len(values)
        proj = Projection.from_url(settings.redis_url, namespace(settings.app_id))
        try:
            got = {}
            for cid in expected:
                h = await proj.client(cid)
                got[cid] = (h.get("email_sha256", ""), h.get("phone_sha256", ""))
            for seg in {str(s[0]) for st in rp.states.values() for s in st.segments.values()}:
                count = AudienceCount()
                rows = [r async for chunk in iter_audience(proj, "boostfeel", seg, count) for r in chunk]
                members = {c for c, st in rp.states.items() if st.segments.get("boostfeel", [None])[0] == seg}
                assert sorted(rows) == sorted(expected[c] for c in members if any(expected[c]))
                assert count.left_out == sum(1 for c in members if not any(expected[c]))
            return got
        finally:
            await proj.close()

    assert asyncio.run(run()) == expected

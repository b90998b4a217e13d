"""Communication events through the real broker: routed, deduplicated, rejected to the DLQ
with reasons, and the same change events (ids included) as ``loyalty replay``'s core."""

from __future__ import annotations

import collections
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from app.batch.simulate import SimConfig, generate
from app.wire import codecs
from rules import Engine, load_ruleset
from tests.integration.harness import (
    Worker,
    change_diff,
    final_segments,
    produce_lines,
    read_topic,
    unique_env,
)

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "manzana", "netix_contact"]
BAD = [  # (line, reason)
    (b'{"event_id": "bad-1", "client_id": "c-1", "occurred_at": "2026-05-01T10:00:00Z", '
     b'"channel": "fax", "event": "sent"}', "unknown_channel"),
    (b'{"event_id": "bad-2", "client_id": "c-1", "occurred_at": "2026-05-01T10:00:00Z", '
     b'"channel": "sms", "event": "liked"}', "unknown_event"),
    (b'{"client_id": "c-1", "occurred_at": "2026-05-01T10:00:00Z", "channel": "sms", "event": "sent"}',
     "missing_field"),
    (b'{"event_id": "bad-4", "client_id": "c-1", "occurred_at": "2026-05-01T10:00:00", '
     b'"channel": "sms", "event": "sent"}', "naive_timestamp"),
    (b"not json", "invalid_json"),
]


def communications(clients: list[str], seed: int) -> list[bytes]:
    """Messages over April-May 2026: responders, ignorers, unsubscribes, duplicates, and
    clients known only from communications."""
    rnd = random.Random(seed)
    start = datetime(2026, 4, 1, 9, tzinfo=UTC)
    out: list[bytes] = []
    for n, cid in enumerate(clients):
        answers = rnd.choice((0.0, 0.2, 0.8))
        for m in range(rnd.randint(1, 8)):
            t = start + timedelta(days=rnd.randint(0, 60), minutes=rnd.randint(0, 600))
            channel = rnd.choice(("email", "sms", "push"))
            base = {"client_id": cid, "channel": channel, "campaign": f"camp-{m % 3}"}

            def event(kind: str, at: datetime, k: int, base: dict[str, str] = base,
                      prefix: str = f"{cid}-{m}") -> bytes:
                return orjson.dumps({**base, "event_id": f"{prefix}-{k}", "event": kind,
                                     "occurred_at": at.isoformat()})
            out.append(event("sent", t, 0))
            if rnd.random() < answers:
                out.append(event(rnd.choice(("opened", "clicked")), t + timedelta(hours=2), 1))
            if rnd.random() < 0.03:
                out.append(event("unsubscribed", t + timedelta(hours=3), 2))
        if n % 10 == 0:
            out.append(out[-1])  # a duplicate delivery
    rnd.shuffle(out)
    return out


def _client(line: bytes) -> str | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    cid = doc.get("client_id") if isinstance(doc, dict) else None
    return cid if isinstance(cid, str) else None


def _wait_quiet(settings: object, timeout: float = 180.0) -> None:
    """Until the change topic has held the same number of records for 4 polls 2 s apart."""
    deadline, last, same = time.monotonic() + timeout, -1, 0
    while time.monotonic() < deadline and same < 4:
        time.sleep(2.0)
        n = len(read_topic(settings, settings.topic_changes))  # type: ignore[attr-defined]
        same = same + 1 if n == last and n > 0 else 0
        last = n


def test_streaming_with_communications_equals_replay(tmp_path: Path, kafka_bootstrap: str) -> None:
    receipts = list(generate(SimConfig(clients=120, days=60, seed=21)))
    buyers = sorted({_client(r) for r in receipts} - {None})
    comms = communications([c for c in buyers if hash(c) % 2] + [f"lead-{i}" for i in range(15)], 5)
    env = unique_env(kafka_bootstrap, tmp_path / "w", LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF)
    worker = Worker(env, tmp_path / "w.log")
    settings = worker.settings
    produce_lines(settings, receipts)
    produce_lines(settings, comms + [line for line, _ in BAD], topic=settings.topic_communications)
    worker.start()
    try:
        # the expected count is replay's over the order the worker saw (below): wait for quiet
        _wait_quiet(settings)
    finally:
        worker.stop()
    events = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_changes)]

    # replay's core over each client's inputs in the order the worker applied them: the
    # client-events partitions (the two routers interleave receipts and communications)
    engine = Engine([load_ruleset(r) for r in RULES])
    from app.batch.replay import Replay

    expected: list[dict[str, object]] = []
    rp = Replay(engine, datetime.fromisoformat(AS_OF), expected.append, lambda row: None)
    kinds = collections.Counter()
    records = sorted(read_topic(settings, settings.topic_client_events), key=lambda r: (r.partition, r.offset))
    for n, record in enumerate(records):
        kind, payload = record.value[:1], record.value[1:]
        kinds[kind] += 1
        if kind == codecs.RECEIPT:
            rp.receipt_line(payload, n)
        elif kind == codecs.COMMUNICATION:
            rp.communication_line(payload, n)
    rp.finish()
    assert kinds[codecs.COMMUNICATION] >= len(set(comms))
    diff = change_diff(events, expected)
    assert not diff, diff
    assert final_segments(events) == final_segments(expected)
    by_cause = collections.Counter(e["data"]["cause"] for e in events)
    assert by_cause["communication"] > 50, by_cause
    print(f"{len(events)} changes ({dict(by_cause)}), {kinds[codecs.COMMUNICATION]} communication "
          f"envelopes, {kinds[codecs.RECEIPT]} receipts")
    leads = {e["subject"] for e in events if e["subject"].startswith("lead-")}
    assert len(leads) == 15  # known only from communications: placed by netix_contact
    # bad communication events: in the DLQ with their reasons, from the communications topic
    dlq = read_topic(settings, settings.topic_dlq)
    from_comms = [dict(r.headers) for r in dlq
                  if dict(r.headers)["source-topic"].decode() == settings.topic_communications]
    assert sorted(h["reason"].decode() for h in from_comms) == sorted(reason for _, reason in BAD)

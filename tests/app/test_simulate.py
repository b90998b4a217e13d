"""The simulator's profiles and communication events: deterministic, valid against the input
contracts, and realistic enough that the demo shows active and passive clients."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

import rules
from app.batch.simulate import SimConfig, generate, profile_docs, profiles
from app.batch.simulate_comm import communications
from app.cli.main import main as cli_main
from rules import RejectedInput, loads, parse_profile
from rules.inputs.communications import CHANNELS, EVENTS, RESPONSES, parse_communication

CFG = SimConfig(clients=300, days=90, seed=3)
NOW = CFG.end.astimezone(UTC)
COMMUNICATION = Draft202012Validator(json.loads(
    (Path(rules.__file__).parent / "schemas" / "communication.schema.json").read_text(encoding="utf-8")))
PROFILE = Draft202012Validator(json.loads(
    (Path(rules.__file__).parent / "schemas" / "profile.schema.json").read_text(encoding="utf-8")))
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
EMAIL = re.compile(r"[A-Za-z]+\.[0-9]{7}@example\.(com|org|net)\Z")
PHONE = re.compile(r"(\+79[0-9]{9}|\+7 \(9[0-9]{2}\) [0-9]{3}-[0-9]{2}-[0-9]{2})\Z")


@pytest.fixture(scope="module")
def comm_lines() -> list[bytes]:
    return list(communications(CFG))


@pytest.fixture(scope="module")
def events(comm_lines: list[bytes]) -> list[dict[str, Any]]:
    """The well-formed events, duplicates removed."""
    out: dict[str, dict[str, Any]] = {}
    for raw in comm_lines:
        try:
            comm = parse_communication(loads(raw), NOW)
        except RejectedInput:
            continue
        doc = orjson.loads(raw)
        assert out.setdefault(f"{comm.client_id}/{comm.event_id}", doc) == doc  # a duplicate is a copy
    return sorted(out.values(), key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["event_id"]))


def test_the_same_seed_gives_the_same_lines_and_another_seed_others() -> None:
    small = SimConfig(clients=80, days=30, seed=9)
    assert list(communications(small)) == list(communications(small))
    assert list(profiles(small)) == list(profiles(small))
    other = SimConfig(clients=80, days=30, seed=10)
    assert list(communications(small)) != list(communications(other))
    assert list(profiles(small)) != list(profiles(other))


def test_receipts_do_not_depend_on_the_newer_outputs() -> None:
    """Receipts (and the profiles' first fields) come from their own random streams: the
    communications and the newer profile fields change nothing there."""
    small = SimConfig(clients=50, days=30, seed=4)
    assert list(generate(small)) == list(generate(SimConfig(clients=50, days=30, seed=4, new_clients=0.5)))
    first = ("client_id", "birth_date", "gender", "city", "registered_at", "tags")
    few = [{k: d[k] for k in first} for d in profile_docs(small)]
    more = [{k: d[k] for k in first} for d in profile_docs(SimConfig(clients=50, days=30, seed=4, new_clients=0.5))]
    assert more[:len(few) - 2] == few[:-2]  # the last 2 are the profile-only clients


def test_profiles_are_valid_and_carry_the_new_fields() -> None:
    docs = list(profile_docs(SimConfig()))
    end = SimConfig().end
    for doc in docs:
        fields = parse_profile(loads(orjson.dumps(doc)), NOW).fields
        assert PROFILE.is_valid(doc), doc
        kept = {"email_sha256" if k == "email" else "phone_sha256" if k == "phone" else k for k in doc} - {"client_id"}
        assert set(fields) == kept, doc  # every field is in the contract; contacts only as digests
        assert all(DAY.match(d) and date.fromisoformat(d) <= end.date() for d in doc["children"])
        assert doc["children"] == sorted(doc["children"])
        if "spouse_birth_date" in doc:
            assert DAY.match(doc["spouse_birth_date"])
        assert isinstance(doc["legal_entity"], bool)
        if "app_registered_at" in doc:
            assert doc["registered_at"] <= doc["app_registered_at"] <= end.isoformat()
        assert isinstance(doc.get("discount_card", ""), str)
        assert all(isinstance(v, str | bool) for v in doc["attributes"].values())
        assert set(doc["consent"]) <= set(CHANNELS)
        assert all(isinstance(v, bool) for v in doc["consent"].values())
        assert "email" not in doc or EMAIL.match(doc["email"]), doc["email"]
        assert "phone" not in doc or PHONE.match(doc["phone"]), doc["phone"]
    names = Counter(d.get("first_name") for d in docs)
    assert names["Татьяна"] >= 10 and names["Tatyana"] + names["Tatiana"] >= 3
    labels = Counter(label for d in docs for label in d["labels"])
    assert labels["black_list"] >= 3 and labels["vip_list"] >= 10 and labels["red"] >= 5
    assert 5 <= sum(d["legal_entity"] for d in docs) <= 50
    assert sum(bool(d["children"]) for d in docs) > 100 and sum("spouse_birth_date" in d for d in docs) > 100
    assert Counter(v for d in docs for v in d["attributes"].values())["cat"] > 10
    assert sum("app_registered_at" in d for d in docs) > 100
    assert sum(d["consent"].get("sms") is False for d in docs) > 50


def test_some_clients_only_have_a_profile_registered_lately() -> None:
    cfg = SimConfig(clients=500, days=60, seed=7)
    buyers = {orjson.loads(r)["client_id"] for r in generate(cfg) if r.startswith(b'{"receipt_id":"r-')}
    docs = list(profile_docs(cfg))
    only = [d for d in docs if d["client_id"] not in buyers]
    fresh = [d for d in only if datetime.fromisoformat(d["registered_at"]) > cfg.end - timedelta(days=14)]
    assert len(fresh) == 20 and len({d["client_id"] for d in docs}) == len(docs)


def test_communication_lines_agree_with_the_contract(comm_lines: list[bytes]) -> None:
    ok = bad = 0
    for raw in comm_lines:
        try:
            doc = loads(raw)
        except RejectedInput as exc:
            assert exc.reason == "invalid_json"
            bad += 1
            continue
        try:
            parse_communication(doc, NOW)
            good = True
        except RejectedInput:
            good = False
        assert COMMUNICATION.is_valid(doc) == good, raw
        ok += good
        bad += not good
    assert ok > 5000 and 0 < bad < ok / 100


def test_duplicates_late_arrivals_and_no_future(comm_lines: list[bytes], events: list[dict[str, Any]]) -> None:
    well_formed = [raw for raw in comm_lines if raw.startswith(b'{"event_id":"e-')]
    assert len(well_formed) - len(events) > 20  # webhook retries
    times = [datetime.fromisoformat(orjson.loads(raw)["occurred_at"]) for raw in well_formed]
    assert any(b < a for a, b in pairwise(times))  # arrival order is not event order
    assert max(times) <= CFG.end and min(times) >= CFG.end - timedelta(days=CFG.days)


def test_each_message_is_sent_then_delivered_then_answered(events: list[dict[str, Any]]) -> None:
    messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        messages[e["event_id"].rsplit("-", 1)[0]].append(e)
    for key, chain in messages.items():
        kinds = [e["event"] for e in chain]
        assert kinds[0] == "sent", (key, kinds)
        assert len({e["channel"] for e in chain}) == 1 and len({e.get("campaign") for e in chain}) == 1
        if chain[0]["channel"] == "call":
            assert set(kinds) <= {"sent", "answered", "unsubscribed"}, kinds
        elif "bounced" in kinds:
            assert kinds == ["sent", "bounced"]
        elif set(kinds) & RESPONSES:
            assert kinds[1] == "delivered", kinds
    assert {e["event"] for e in events} == set(EVENTS)
    assert {e["channel"] for e in events} == set(CHANNELS)


def test_client_types_bounces_unsubscribes_and_calls(events: list[dict[str, Any]]) -> None:
    by_client: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_client[e["client_id"]].append(e)
    share = {cid: sum(e["event"] in RESPONSES for e in es) / max(1, sum(e["event"] == "sent" for e in es))
             for cid, es in by_client.items()}
    assert sum(s >= 0.6 for s in share.values()) > 30  # responders
    assert sum(0 < s < 0.35 for s in share.values()) > 30  # occasional
    assert sum(s == 0 for s in share.values()) > 30  # ignorers
    at: dict[str, datetime] = {e["event_id"]: datetime.fromisoformat(e["occurred_at"]) for e in events}
    hours = [(at[i] - at[i.replace("-opened", "-delivered")]).total_seconds() / 3600
             for i in at if i.endswith("-opened")]
    assert hours and sorted(hours)[len(hours) // 2] < 12  # most answers within hours
    unsub = Counter(e["channel"] for e in events if e["event"] == "unsubscribed")
    assert unsub["email"] >= 3 and len(unsub) >= 3
    for e in events:  # nothing is sent on a channel after its client unsubscribed from it
        if e["event"] == "unsubscribed":
            k = int(e["event_id"].split("-")[2])
            later = [x for x in by_client[e["client_id"]] if x["channel"] == e["channel"]
                     and x["event"] == "sent" and int(x["event_id"].split("-")[2]) > k]
            assert not later, e
    assert sum(e["event"] == "bounced" for e in events) > 10
    calls = Counter(e["event"] for e in events if e["channel"] == "call")
    assert calls["answered"] > 10 and calls["sent"] > calls["answered"] * 1.2


def test_only_profiled_clients_on_consented_channels(events: list[dict[str, Any]]) -> None:
    docs = {d["client_id"]: d for d in profile_docs(CFG)}
    for e in events:
        doc = docs[e["client_id"]]
        assert "black_list" not in doc["labels"]
        if e["channel"] != "call":
            assert doc["consent"].get(e["channel"]) is True, (e, doc["consent"])
        assert e["occurred_at"] >= doc["registered_at"]


def test_cli_writes_the_three_files_and_replay_shows_active_and_passive(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    r, p, c = (tmp_path / f"{k}.jsonl" for k in ("receipts", "profiles", "communications"))
    assert cli_main(["simulate", "--clients", "150", "--days", "60", "--seed", "7", "--out", str(r),
                     "--profiles-out", str(p), "--communications-out", str(c)]) == 0
    cfg = SimConfig(clients=150, days=60, seed=7)
    assert c.read_bytes() == b"".join(line + b"\n" for line in communications(cfg))
    assert p.read_bytes() == b"".join(line + b"\n" for line in profiles(cfg))
    assert r.read_bytes() == b"".join(line + b"\n" for line in generate(cfg))
    seg = tmp_path / "segments.jsonl"
    assert cli_main(["replay", "--rules", "manzana", "--rules", "netix_contact", "--input", str(r),
                     "--profiles", str(p), "--communications", str(c), "--as-of", "2026-06-01T00:00:00+03:00",
                     "--tz", "Europe/Moscow", "--quiet", "--segments-out", str(seg)]) == 0
    summary = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["communications"] > 1000 and summary["communication_duplicates"] > 0
    sizes: Counter[str] = Counter()
    for line in seg.read_bytes().splitlines():
        sizes.update(f"{dim}={s}" for dim, s in orjson.loads(line)["segments"].items())
    assert sizes["manzana_activity=active"] > 20 and sizes["manzana_activity=passive"] > 10, sizes
    assert sizes["manzana_activity=not_contacted"] > 10, sizes
    assert sizes["netix_contact=contacted_month"] > 20 and sizes["netix_contact=no_contact_2m"] > 10, sizes



def test_produce_sends_the_simulated_communications_to_their_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.wire.kafka_io as kafka_io

    sent: dict[str, Any] = {}

    async def ensure_topics(settings: Any) -> None:
        return None

    async def produce(settings: Any, topic: str, lines: Any, rate: float = 0.0) -> tuple[int, float]:
        sent[topic] = list(lines)
        return len(sent[topic]), 1.0

    monkeypatch.setattr(kafka_io, "ensure_topics", ensure_topics)
    monkeypatch.setattr(kafka_io, "produce", produce)
    monkeypatch.setenv("LOYALTY_TOPIC_COMMUNICATIONS", "t.comm")
    assert cli_main(["produce", "--communications", "--clients", "60", "--days", "30", "--seed", "2"]) == 0
    assert sent == {"t.comm": list(communications(SimConfig(clients=60, days=30, seed=2)))}

"""Personal data never leaves the client's record, apart from the hashed contacts of the
audience export (docs/explanation/personal-data.md).

CRM profiles carrying every personal field (names, birth dates, children, spouse, attributes,
labels, discount card, e-mail, phone, consent), valid, rejected and malformed, go through
``loyalty replay`` (the CLI, every output file) and through the stream's path without Kafka
(the router's envelope and DLQ copy, the clients handler, the Prometheus counters it moves,
the projector into the real local Redis, the HTTP API). Every output is searched, case
insensitively, for each raw value (and its normalized forms) and for the SHA-256 digests of
the contacts. The digests may appear only in the client's record, the projection's two
digest fields of the client's hash, the stream's internal envelope (how they reach the
record) and the audience export; raw values nowhere but the record.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from agents.handler import ClientHandler, route
from agents.pipeline import _to_dlq
from agents.projector import Projector
from app.cli.main import main
from app.metrics import Metrics
from app.projection.store import Projection, Update, drop_generation, namespace
from app.serving.api import Api
from app.serving.web import mount
from app.settings import Settings
from app.wire import codecs
from rules import Engine, RejectedInput, load_ruleset
from rules.calendar import to_epoch
from rules.inputs.receipts import rejected_profile_copy
from rules.record.state import loads as load_state
from rules.ruleset import loads as load_ruleset_text

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
NOW = datetime.fromisoformat(AS_OF)
RULES = ["boostfeel", "demographics"]
# a rule set reading the personal profile metrics: rules may read them, outputs never show them
PROBE = """\
ruleset: pd_probe
description: reads the personal profile metrics
dimensions:
  - id: pd_probe
    default: other
    segments:
      - id: named_pet_owner
        when: first_name != "" && has(attributes.pet) && size(labels) > 0
      - id: parent
        when: days_until_child_birthday < 400 && days_until_spouse_birthday >= 0
"""
TOKEN = "personal-data-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIENTS = (1, 2, 3, 4)  # contacts: 1 both, 2 e-mail only, 3 phone only, 4 none (8, 9: both)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def person(n: int) -> dict[str, Any]:
    """Client n's personal fields (ASCII, so that no JSON escaping hides them from a search)."""
    doc: dict[str, Any] = {
        "first_name": f"Zyxfirst{n}", "last_name": f"Zyxlast{n}", "middle_name": f"Zyxmiddle{n}",
        "birth_date": f"1983-07-1{n}", "children": [f"2012-04-2{n}", f"2015-11-0{n}"],
        "spouse_birth_date": f"1981-02-1{n}",
        "attributes": {"pet": f"axolotl{n}zyx", "favourite_dish": f"kulebyaka{n}zyx"},
        "labels": [f"zyxlabel{n}"], "discount_card": f"77009381746{n}",
        "consent": {"email": True, "sms": True},
    }
    if n in (1, 2, 8, 9):
        doc["email"] = f"  Zyx.Person{n}+Promo@Example.COM "
    if n in (1, 3, 8, 9):
        doc["phone"] = f"+7 (916) 555-0{n}-23"
    return doc


def raw_values(doc: dict[str, Any]) -> list[str]:
    """Every personal value of a profile, raw and normalized (lowercase: searched so)."""
    return [v.lower() for v in (
        doc["first_name"], doc["last_name"], doc["middle_name"], doc["birth_date"], *doc["children"],
        doc["spouse_birth_date"], *doc["attributes"].values(), *doc["labels"], doc["discount_card"],
    )] + raw_contacts(doc)


def raw_contacts(doc: dict[str, Any]) -> list[str]:
    """The profile's e-mail and phone, raw and normalized (never stored nor forwarded)."""
    out = []
    if "email" in doc:
        email = doc["email"].strip()
        out += [email, email.split("@")[0]]
    if "phone" in doc:
        digits = "".join(c for c in doc["phone"] if c.isdigit())
        out += [doc["phone"], digits, "+" + digits, digits[1:]]  # raw, E.164 digits, with +, national
    return [v.lower() for v in out]


def digests(doc: dict[str, Any]) -> dict[str, str]:
    """The contacts' digests under every normalization a platform might use."""
    out = {}
    if "email" in doc:
        out["email"] = sha(doc["email"].strip().lower())
    if "phone" in doc:
        digits = "".join(c for c in doc["phone"] if c.isdigit())
        out["phone"], out["phone+"] = sha(digits), sha("+" + digits)
    return out


def profile_line(cid: str, **extra: Any) -> bytes:
    n = int(cid.split("-")[1]) % 10
    doc = {"client_id": cid, "updated_at": "2026-03-01T10:00:00+03:00", "gender": "f", "city": "Kazan",
           "registered_at": "2025-01-10T10:00:00+03:00", "tags": [], **person(n), **extra}
    return orjson.dumps(doc)


def receipt_lines() -> list[bytes]:
    return [orjson.dumps({
        "receipt_id": f"r-{n}-{k}", "client_id": f"pd-{n}", "store_id": "s-1",
        "occurred_at": f"2026-0{3 + k}-1{n}T10:00:00+03:00", "type": "sale", "total": "500.00",
        "currency": "RUB", "items": [{"sku": "latte", "category": "coffee", "qty": 1, "amount": "500.00"}]})
        for n in CLIENTS for k in range(3)]


# valid profiles; one rejected (bad gender) carrying every personal field; one malformed line
VALID = [profile_line(f"pd-{n}") for n in CLIENTS]
REJECTED = profile_line("pd-9", gender="q")
MALFORMED = profile_line("pd-8")[:-40]  # a truncated export line: not JSON
ALL_DOCS = [{**person(n), "client_id": f"pd-{n}"} for n in (*CLIENTS, 8, 9)]
RAW = sorted({v for d in ALL_DOCS for v in raw_values(d)})
CONTACTS = sorted({v for d in ALL_DOCS for v in raw_contacts(d)})
DIGESTS = sorted({h for d in ALL_DOCS for h in digests(d).values()})


def leaks(text: str, hashes: bool = True) -> list[str]:
    """The raw values (and, with ``hashes``, the digests) found in ``text``."""
    low = text.lower()
    return [v for v in RAW if v in low] + ([h for h in DIGESTS if h in low] if hashes else [])


def clean(found: dict[str, list[str]]) -> None:
    """Fail naming every output that holds personal data and what it holds."""
    bad = {name: values for name, values in found.items() if values}
    assert not bad, "personal data in: " + "; ".join(f"{n}: {', '.join(v)}" for n, v in bad.items())


def contact_leaks(text: str) -> list[str]:
    """The raw contacts found in ``text`` (what may reach the record: all but these)."""
    low = text.lower()
    return [v for v in CONTACTS if v in low]


@pytest.fixture
def logs() -> Iterator[list[logging.LogRecord]]:
    """Every log record of the test, at DEBUG, whatever the loggers' own levels."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler, level = Keep(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def rendered(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in records)


def test_replay_outputs_carry_no_personal_data(tmp_path: Path, logs: list[logging.LogRecord],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "receipts.jsonl").write_bytes(b"\n".join(receipt_lines()) + b"\n")
    (tmp_path / "profiles.jsonl").write_bytes(b"\n".join([*VALID, REJECTED]) + b"\n")
    (tmp_path / "probe.yaml").write_text(PROBE)
    outs = {name: tmp_path / f"{name}.jsonl" for name in ("segments", "changes", "rejects", "summary")}
    rules = [*RULES, str(tmp_path / "probe.yaml")]
    args = ["replay", *[a for r in rules for a in ("--rules", r)], "--input", str(tmp_path / "receipts.jsonl"),
            "--profiles", str(tmp_path / "profiles.jsonl"), "--as-of", AS_OF, "--quiet",
            *[a for name, path in outs.items() for a in (f"--{name}-out", str(path))]]
    assert main(args) == 0
    out, err = capsys.readouterr()
    texts = {name: path.read_text() for name, path in outs.items()} | {
        "stdout": out, "stderr": err, "logs": rendered(logs)}
    assert "pd-9" in texts["rejects"] and len(texts["changes"].splitlines()) > 8  # the outputs are real
    assert '"named_pet_owner"' in texts["changes"]  # the probe read the personal metrics
    clean({name: leaks(text) for name, text in texts.items()})


def test_a_malformed_profile_line_is_not_kept_whole(tmp_path: Path) -> None:
    """A line that is not JSON cannot be filtered field by field: its DLQ copy and rejects
    row must still not carry it (today both keep the line as it came)."""
    (tmp_path / "receipts.jsonl").write_bytes(receipt_lines()[0] + b"\n")
    (tmp_path / "profiles.jsonl").write_bytes(MALFORMED + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    assert main(["replay", "--rules", "boostfeel", "--input", str(tmp_path / "receipts.jsonl"), "--quiet",
                 "--profiles", str(tmp_path / "profiles.jsonl"), "--as-of", AS_OF,
                 "--rejects-out", str(rejects)]) == 0
    assert "invalid_json" in rejects.read_text()
    clean({"rejects": leaks(rejects.read_text()),
           "DLQ value": leaks(codecs.dlq_copy(rejected_profile_copy(MALFORMED))[0].decode())})


@dataclass
class Event:
    """A Faust event as the DLQ writer reads it (weakly referenced: a class, not a namespace)."""

    key: bytes | None
    message: Any


class Stream:
    """The stream's path for the test inputs, without Kafka: route, DLQ, clients handler."""

    def __init__(self) -> None:
        self.engine = Engine([*(load_ruleset(r) for r in RULES), load_ruleset_text(PROBE, "probe.yaml")])
        self.metrics = Metrics.create()
        self.table: dict[bytes, bytes] = {}
        self.envelopes: list[bytes] = []
        self.dlq: list[tuple[bytes, list[tuple[str, bytes]]]] = []
        self.events: list[dict[str, Any]] = []
        self.handler = ClientHandler(self.engine, lambda: NOW)
        self.value_dims = {d.id for _, d in self.engine.dims if d.value is not None}

    async def send_dlq(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.dlq.append((value, headers))

    async def route(self, raw: bytes, kind: bytes) -> None:
        kept = rejected_profile_copy(raw) if kind == codecs.PROFILE else raw  # as agents.pipeline's router
        try:
            cid, env, _ = route(raw, kind, NOW)
        except RejectedInput as exc:
            p = SimpleNamespace(metrics=self.metrics, guard=None, dlq=SimpleNamespace(send=self.send_dlq))
            event = Event(None, SimpleNamespace(topic="crm.client-profiles", partition=0, offset=len(self.dlq)))
            await _to_dlq(p, event, kept, exc, "profiles")  # type: ignore[arg-type]
            return
        assert cid is not None
        self.envelopes.append(env)
        self.handle(cid.encode(), env)

    def handle(self, key: bytes, message: bytes) -> None:
        out = self.handler.handle(key.decode(), message, self.table.get(key), self.table.get)
        for change in out.events:  # the counters agents.pipeline moves per handled message
            d = change["data"]
            self.metrics.transition(d["dimension"], d["from"], d["to"], d["dimension"] in self.value_dims)
        if out.kind == "receipt":
            self.metrics.receipts.labels(out.outcome).inc()
        self.metrics.processing.labels(out.kind).observe(0.001)
        self.events += out.events
        if out.value is not None:
            self.table[key] = out.value
        self.table.update(out.archive)

    async def run(self) -> None:
        for raw in [*VALID, REJECTED, MALFORMED]:
            await self.route(raw, codecs.PROFILE)
        for raw in receipt_lines():
            await self.route(raw, codecs.RECEIPT)
        until = to_epoch(NOW)
        for key in sorted(k for k in self.table if k.startswith(b"pd-")):
            self.handle(key, codecs.tick(until, until))  # the due scanner's ticks up to now

    def profile(self, cid: str) -> dict[str, Any]:
        profile: dict[str, Any] = load_state(codecs.split_table_value(self.table[cid.encode()])[1]).profile
        return profile


@pytest.fixture
async def stream(logs: list[logging.LogRecord]) -> Stream:
    s = Stream()
    await s.run()
    return s


@pytest.fixture
async def served(stream: Stream, redis_url: str) -> AsyncIterator[tuple[Projection, TestClient[Any, Any]]]:
    """The projector's writes of the stream's outputs (real Redis) and the API over them."""
    proj = Projection.from_url(redis_url, namespace(f"pd-{uuid.uuid4().hex[:10]}"))
    await proj.apply([Update.from_event(e) for e in stream.events])
    pipeline = SimpleNamespace(metrics=stream.metrics, engine=stream.engine, scenarios=None)
    records = [SimpleNamespace(key=k, value=v, topic="changelog", partition=0) for k, v in stream.table.items()]
    await Projector(Settings.from_env(), pipeline, proj).apply_metrics(records)
    app = web.Application()
    mount(app, Api(proj, stream.engine, lambda: NOW), TOKEN, lambda: stream.table.items())
    try:
        async with TestClient(TestServer(app)) as client:
            yield proj, client
    finally:
        await drop_generation(proj.redis, proj.ns + ":")
        await proj.close()


async def test_stream_outputs_carry_no_personal_data(stream: Stream, logs: list[logging.LogRecord]) -> None:
    assert len(stream.dlq) == 2 and len(stream.events) > 8  # the rejected and the malformed profile
    texts = {
        "change events": "\n".join(orjson.dumps(e).decode() for e in stream.events),
        "DLQ values": "\n".join(v.decode("utf-8", "replace") for v, _ in stream.dlq[:1]),
        "DLQ headers": "\n".join(repr(h) for _, h in stream.dlq),
        "metrics": generate_latest(stream.metrics.registry).decode(),
        "logs": rendered(logs),
    }
    found = {name: leaks(text) for name, text in texts.items()}
    # the internal topic to the record carries what the record keeps: digests, not contacts
    found["envelopes"] = contact_leaks("\n".join(e.decode() for e in stream.envelopes))
    clean(found)


async def test_contacts_reach_the_record_hashed_only(stream: Stream) -> None:
    for n in CLIENTS:
        doc, profile = person(n), stream.profile(f"pd-{n}")
        want = digests(doc)
        assert profile.get("email_sha256") == want.get("email")
        assert profile.get("phone_sha256") in ({want["phone"], want["phone+"]} if "phone" in want else {None})
        assert contact_leaks(orjson.dumps(profile).decode()) == []


async def test_projection_and_api_carry_only_the_exported_digests(
        stream: Stream, served: tuple[Projection, TestClient[Any, Any]], logs: list[logging.LogRecord]) -> None:
    proj, client = served
    # every key and value of the projection: digests only as the two fields of a client's hash
    dump: list[str] = []
    async for raw_key in proj.redis.scan_iter(match=f"{proj.ns}:*"):
        key = raw_key.decode()
        kind = (await proj.redis.type(key)).decode()
        if kind == "hash":
            for f, v in (await proj.redis.hgetall(key)).items():
                if f.decode() not in ("email_sha256", "phone_sha256"):
                    dump.append(f"{key} {f.decode()} {v.decode()}")
        elif kind == "set":
            dump += [f"{key} {m.decode()}" for m in await proj.redis.smembers(key)]
        elif kind == "zset":
            dump += [f"{key} {m.decode()}" for m in await proj.redis.zrange(key, 0, -1)]
        else:
            dump.append(f"{key} {await proj.redis.get(key)!r}")
    assert len(dump) > 20
    # every response but the audience export
    bodies: list[str] = []
    exports: dict[str, str] = {}
    for path in [*(f"/clients/pd-{n}" for n in CLIENTS), "/segments"]:
        bodies.append(await (await client.get(path, headers=AUTH)).text())
    sizes = orjson.loads(bodies[-1])["dimensions"]
    for dim, row in sizes.items():
        for path in (f"/reports/transitions?dimension={dim}", f"/reports/revenue?dimension={dim}",
                     f"/reports/sizes?dimension={dim}"):
            bodies.append(await (await client.get(path, headers=AUTH)).text())
        exports[dim] = ""
        for seg in row["segments"]:
            path = f"/segments/{dim}/{seg}/members"
            for fmt in ("json", "csv"):
                bodies.append(await (await client.get(path, params={"format": fmt}, headers=AUTH)).text())
            exports[dim] += await (await client.get(path, params={"format": "audience"}, headers=AUTH)).text()
    clean({"Redis keys and values": leaks("\n".join(dump)), "API responses": leaks("\n".join(bodies)),
           "logs": leaks(rendered(logs)),
           "audience exports (raw values)": leaks("\n".join(exports.values()), hashes=False)})
    assert any(r.name == "loyalty.audience" for r in logs)  # the logs were captured
    # every client is in one boostfeel segment: that dimension's exports hold exactly the
    # digests of the records (the record's normalization, whichever of DIGESTS it is)
    held = {d for n in CLIENTS for f in ("email_sha256", "phone_sha256")
            if (d := stream.profile(f"pd-{n}").get(f))}
    assert held and {h for h in DIGESTS if h in exports["boostfeel"]} == held

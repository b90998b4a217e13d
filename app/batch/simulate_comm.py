"""Communication events for the simulated clients: what the CRM, the e-mail/SMS/push service
and the call centre report about the business's messages and the clients' answers.

Only clients with a CRM profile (:func:`app.batch.simulate.profile_docs`) are written to, on
the channels they have a contact and consent for (e-mail, SMS, push for app users, a
messenger), never the black-listed; calls go to clients with a phone who did not refuse calls.
Campaigns are the same for everybody: a weekly e-mail digest, an SMS promo every other week,
push offers twice a week, messenger news on Fridays; plus a welcome message for a client
registered during the period, a birthday message, calls (every 10-20 days to VIP-listed and
legal-entity clients, now and then to the others).

A message is ``sent``, then ``delivered`` (or ``bounced``: a dead address bounces every
time, and after two bounces the channel is suppressed), then perhaps ``opened``, ``clicked``
or ``replied``; a call is ``sent`` (dialled), then perhaps ``answered``. How a client answers
depends on their type: responders open most messages within hours, occasional responders a
few, ignorers none, lapsing responders answer like responders until a day in the period and
never after. A delivered message may make its client unsubscribe from that channel (ignorers
more often); nothing is sent there afterwards. Events after the end of the period have not
happened. Like the receipts: duplicate sends (a webhook retried with the same ``event_id``),
late arrivals and a small share of malformed lines, in arrival order. Deterministic for a
given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson

from app.batch.simulate import SimConfig, profile_docs

CLIENT_TYPES = (  # name, share, P(a delivered message is answered), mean hours to answer
    ("responder", 0.25, 0.8, 2.0),
    ("occasional", 0.35, 0.15, 12.0),
    ("ignorer", 0.30, 0.0, 0.0),
    ("lapsing", 0.10, 0.8, 3.0),  # a responder until a day in the period, an ignorer after it
)
ANSWER_CALL = {"responder": 0.75, "occasional": 0.4, "ignorer": 0.08, "lapsing": 0.6}
UNSUBSCRIBE = {"responder": 0.001, "occasional": 0.004, "ignorer": 0.012, "lapsing": 0.004}  # per message
DELIVERED = {"email": 0.95, "sms": 0.97, "push": 0.9, "messenger": 0.98}
DEAD_ADDRESS = {"email": 0.04, "sms": 0.02}  # every message bounces
# what an answer is on each channel: (event, probability) after the first one
FOLLOW_UPS = {
    "email": (("clicked", 0.4), ("replied", 0.02)),
    "push": (),
    "sms": (("replied", 0.3),),
    "messenger": (("clicked", 0.3), ("replied", 0.2)),
}
FIRST_ANSWER = {"email": "opened", "push": "opened", "sms": "clicked", "messenger": "opened"}
MALFORMED = (
    b"{not json",
    b'{"event_id": "bad-c1", "occurred_at": "2026-01-01T10:00:00+03:00", "channel": "email",'
    b' "event": "opened"}',
    b'{"event_id": "bad-c2", "client_id": "c-x", "occurred_at": "2026-01-01T10:00:00+03:00",'
    b' "channel": "fax", "event": "sent"}',
    b'{"event_id": "bad-c3", "client_id": "c-x", "occurred_at": "2026-01-01T10:00:00+03:00",'
    b' "channel": "email", "event": "read"}',
    b'{"event_id": "bad-c4", "client_id": "c-x", "occurred_at": "2026-01-01T10:00:00",'
    b' "channel": "sms", "event": "delivered"}',
    b'"a string"',
)

Send = tuple[datetime, str, str | None]  # when, channel, campaign


def campaigns(cfg: SimConfig) -> list[tuple[datetime, str, str, float]]:
    """The period's campaigns, the same for every client: (when, channel, campaign, share of
    the reachable clients it goes to)."""
    tz = cfg.end.tzinfo
    first = (cfg.end - timedelta(days=cfg.days)).date()
    out = []
    for d in range(cfg.days + 1):
        day = first + timedelta(days=d)
        weekday, stamp = day.weekday(), day.isoformat()
        if weekday == 1:
            out.append((datetime.combine(day, time(11, 0), tz), "email", f"digest-{stamp}", 1.0))
        if weekday == 3 and day.isocalendar().week % 2 == 0:
            out.append((datetime.combine(day, time(12, 30), tz), "sms", f"promo-{stamp}", 0.7))
        if weekday in (0, 4):
            out.append((datetime.combine(day, time(18, 0), tz), "push", f"offer-{stamp}", 0.8))
        if weekday == 4:
            out.append((datetime.combine(day, time(15, 0), tz), "messenger", f"news-{stamp}", 0.9))
    return out


def _reachable(doc: dict[str, Any]) -> list[str]:
    consent = doc.get("consent") or {}
    has = {"email": "email" in doc, "sms": "phone" in doc, "messenger": "phone" in doc,
           "push": "app_registered_at" in doc}
    return [c for c in ("email", "sms", "push", "messenger") if has[c] and consent.get(c) is True]


def _sends(rng: random.Random, cfg: SimConfig, doc: dict[str, Any],
           plan: list[tuple[datetime, str, str, float]]) -> list[Send]:
    """What the business sends one client, in time order (before unsubscribes and bounces)."""
    since = datetime.fromisoformat(doc["registered_at"])
    channels = _reachable(doc)
    out: list[Send] = []
    for at, channel, campaign, share in plan:
        if at >= since and channel in channels and rng.random() < share:
            out.append((at + timedelta(seconds=rng.randrange(2400)), channel, campaign))
    start = cfg.end - timedelta(days=cfg.days)
    if since > start and channels:  # registered during the period
        out.append((since + timedelta(minutes=rng.uniform(1, 30)), channels[0], "welcome"))
    born = date.fromisoformat(doc["birth_date"])
    for year in sorted({start.year, cfg.end.year}):
        if born.month == 2 and born.day == 29:
            continue
        day = datetime.combine(born.replace(year=year), time(9, 0), cfg.end.tzinfo)
        if since <= day <= cfg.end and channels:
            out.append((day + timedelta(seconds=rng.randrange(600)), channels[0], "birthday"))
    if "phone" in doc and (doc.get("consent") or {}).get("call") is not False:
        special = doc.get("legal_entity") or "vip_list" in doc.get("labels", ())
        t = since + timedelta(days=rng.uniform(0, 20))
        while t < cfg.end:
            if special or rng.random() < 0.1:
                at = datetime.combine(t.date(), time(rng.randrange(10, 19), rng.randrange(60)), t.tzinfo)
                out.append((at, "call", None if special else "feedback"))
            t += timedelta(days=rng.uniform(10, 20))
    out.sort(key=lambda s: s[0])
    return out


def _client_type(rng: random.Random, doc: dict[str, Any]) -> str:
    if "vip_list" in doc.get("labels", ()) and rng.random() < 0.6:
        return "responder"
    roll, acc = rng.random(), 0.0
    for name, share, _p, _h in CLIENT_TYPES:
        acc += share
        if roll < acc:
            return name
    return CLIENT_TYPES[-1][0]


def _client_events(rng: random.Random, cfg: SimConfig, doc: dict[str, Any],
                   plan: list[tuple[datetime, str, str, float]]) -> Iterator[dict[str, Any]]:
    if "black_list" in doc.get("labels", ()):
        return
    kind = _client_type(rng, doc)
    _, _, answer_p, hours = next(t for t in CLIENT_TYPES if t[0] == kind)
    start = cfg.end - timedelta(days=cfg.days)
    lapse = start + timedelta(days=cfg.days * rng.uniform(0.2, 0.6)) if kind == "lapsing" else cfg.end
    dead = {c for c, p in DEAD_ADDRESS.items() if rng.random() < p}
    bounces: dict[str, int] = {}
    stopped: set[str] = set()  # unsubscribed or suppressed
    cid = doc["client_id"]
    for k, (sent, channel, campaign) in enumerate(_sends(rng, cfg, doc, plan)):
        if channel in stopped or sent > cfg.end:
            continue
        events = [(sent, "sent")]
        answers = sent < lapse
        if channel == "call":
            if rng.random() < (ANSWER_CALL[kind] if answers else ANSWER_CALL["ignorer"]):
                events.append((sent + timedelta(seconds=rng.randrange(5, 40)), "answered"))
                if rng.random() < UNSUBSCRIBE[kind] * 5:  # "please don't call me again"
                    events.append((sent + timedelta(minutes=rng.uniform(1, 5)), "unsubscribed"))
                    stopped.add(channel)
        elif channel in dead or rng.random() < 0.005:
            events.append((sent + timedelta(seconds=rng.randrange(5, 300)), "bounced"))
            bounces[channel] = bounces.get(channel, 0) + 1
            if bounces[channel] >= 2:
                stopped.add(channel)
        elif rng.random() < DELIVERED[channel]:
            t = sent + timedelta(seconds=rng.randrange(1, 180))
            events.append((t, "delivered"))
            if answers and rng.random() < answer_p:
                t += timedelta(hours=min(rng.expovariate(1 / hours), 72.0), minutes=1)
                events.append((t, FIRST_ANSWER[channel]))
                for event, p in FOLLOW_UPS[channel]:
                    if rng.random() < p:
                        events.append((t + timedelta(seconds=rng.randrange(10, 900)), event))
            if rng.random() < UNSUBSCRIBE[kind]:
                events.append((t + timedelta(minutes=rng.uniform(1, 600)), "unsubscribed"))
                stopped.add(channel)
        for at, event in events:
            if at > cfg.end:
                continue
            line: dict[str, Any] = {"event_id": f"e-{cid[2:]}-{k}-{event}", "client_id": cid,
                                    "occurred_at": at.replace(microsecond=0).isoformat(),
                                    "channel": channel, "event": event}
            if campaign is not None:
                line["campaign"] = campaign
            yield line


def communications(cfg: SimConfig) -> Iterator[bytes]:
    """JSON lines in arrival order (event-time order, with the configured disorder)."""
    rng = random.Random(cfg.seed + 1_299_709)
    plan = campaigns(cfg)
    rows: list[tuple[datetime, int, dict[str, Any]]] = []
    for doc in profile_docs(cfg):
        for e in _client_events(rng, cfg, doc, plan):
            rows.append((datetime.fromisoformat(e["occurred_at"]), len(rows), e))
    arrivals = []
    for t, s, e in rows:
        arrive = t + timedelta(days=rng.uniform(0.01, 3.0)) if rng.random() < cfg.late_rate else t
        arrivals.append((min(arrive, cfg.end), s, e))
        if rng.random() < cfg.dup_rate:  # a webhook retried
            arrivals.append((min(arrive + timedelta(minutes=rng.uniform(0, 30)), cfg.end), s, e))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    for _arrive, _s, e in arrivals:
        if rng.random() < cfg.malformed_rate:
            yield rng.choice(MALFORMED)
        yield orjson.dumps(e)

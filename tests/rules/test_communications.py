"""Communication events: the contract, the per-client record, the metrics and the presets
that read them (manzana activity, netix_contact)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import RejectedInput
from rules.calendar import BusinessCalendar
from rules.inputs.communications import CHANNELS, EVENTS, Communication, parse_communication
from rules.metrics import MetricView
from rules.record.comm import STREAK_CAP, CommState
from rules.record.state import dumps, loads
from tests.rules.rules_testkit import DAY, MSK, at, changes, engine, feed, iso, rcpt, ts

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def comm_doc(eid: str, when: int, event: str = "sent", channel: str = "email",
             client: str = "c-1", **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "client_id": client, "occurred_at": at(when), "channel": channel,
            "event": event, **extra}


def comm(eid: str, when: int, event: str = "sent", channel: str = "email", **kw: Any) -> Communication:
    return parse_communication(comm_doc(eid, when, event, channel, **kw), None)


# -- the contract -------------------------------------------------------------------------------


def test_a_valid_event_parses() -> None:
    c = parse_communication(comm_doc("e-1", ts("2026-03-02T10:15:00+03:00"), "opened",
                                     campaign="spring", action_id="a-1"), NOW)
    assert (c.event_id, c.client_id, c.channel, c.event, c.campaign, c.action_id) == (
        "e-1", "c-1", "email", "opened", "spring", "a-1")
    assert c.at == ts("2026-03-02T07:15:00Z")


@pytest.mark.parametrize(("change", "reason", "field"), [
    ({"event_id": None}, "missing_field", "event_id"),
    ({"client_id": None}, "missing_field", "client_id"),
    ({"client_id": "a\nb"}, "bad_value", "client_id"),
    ({"channel": "fax"}, "unknown_channel", "channel"),
    ({"channel": None}, "missing_field", "channel"),
    ({"event": "liked"}, "unknown_event", "event"),
    ({"occurred_at": "2026-03-02T10:15:00"}, "naive_timestamp", "occurred_at"),
    ({"occurred_at": "2026-03-20T10:15:00Z"}, "future_timestamp", "occurred_at"),
    ({"occurred_at": "1969-12-31T10:15:00Z"}, "too_old_timestamp", "occurred_at"),
    ({"campaign": 5}, "bad_type", "campaign"),
])
def test_bad_events_are_rejected_with_a_reason(change: dict[str, Any], reason: str, field: str) -> None:
    doc = comm_doc("e-1", ts("2026-03-02T10:15:00Z"))
    for key, value in change.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    with pytest.raises(RejectedInput) as exc:
        parse_communication(doc, NOW)
    assert (exc.value.reason, exc.value.field) == (reason, field)


def test_a_reused_event_id_with_other_content_is_a_conflicting_duplicate() -> None:
    eng = engine("manzana")
    t = ts("2026-01-05T10:00:00Z")
    s = eng.communication(None, comm("e-1", t)).state
    assert eng.communication(s, comm("e-1", t)).outcome.value == "duplicate"
    with pytest.raises(RejectedInput) as exc:
        eng.communication(s, comm("e-1", t, "opened"))
    assert exc.value.reason == "conflicting_duplicate"


# -- metrics ------------------------------------------------------------------------------------


def metrics(eng: Any, s: Any, t: int) -> dict[str, Any]:
    view = MetricView(s, t, eng.cal)
    return {m: view.raw(m) for m in ("days_since_last_contact", "days_since_last_response",
                                     "messages_90d", "responses_90d", "unanswered_streak",
                                     "unsubscribed")}


def test_metrics_worked_example() -> None:
    eng = engine("manzana")
    t0 = ts("2026-01-05T10:00:00Z")
    s = None
    for c in [comm("m1", t0), comm("m1-o", t0 + 3600, "opened"),
              comm("m2", t0 + 10 * DAY), comm("m3", t0 + 20 * DAY, channel="sms"),
              comm("m3-d", t0 + 20 * DAY + 60, "delivered", "sms"),
              comm("u", t0 + 21 * DAY, "unsubscribed", "sms")]:
        s = eng.communication(s, c).state
    assert s is not None
    assert metrics(eng, s, t0 + 30 * DAY) == {
        "days_since_last_contact": 9, "days_since_last_response": 29, "messages_90d": 3,
        "responses_90d": 1, "unanswered_streak": 2, "unsubscribed": ["sms"]}
    # the first message leaves the 90-day window at the start of its 90th business day after
    assert metrics(eng, s, t0 + 89 * DAY)["messages_90d"] == 3
    assert metrics(eng, s, t0 + 90 * DAY)["messages_90d"] == 2
    assert metrics(eng, s, t0 + 90 * DAY)["responses_90d"] == 0


def test_consent_in_a_later_profile_resubscribes() -> None:
    from rules import parse_profile
    eng = engine("manzana")
    t0 = ts("2026-01-05T10:00:00Z")
    s = eng.communication(None, comm("u", t0, "unsubscribed", "sms")).state
    assert metrics(eng, s, t0)["unsubscribed"] == ["sms"]
    s.profile["consent"] = {"sms": True}  # the profile contract's consent map
    s.profile_at = t0 + DAY
    assert metrics(eng, s, t0 + DAY)["unsubscribed"] == []
    s.profile["consent"] = {"email": False, "sms": True}
    assert metrics(eng, s, t0 + DAY)["unsubscribed"] == ["email"]
    assert parse_profile  # the consent map itself is validated by parse_profile


def test_the_streak_saturates_and_a_late_response_still_counts_exactly() -> None:
    eng = engine("manzana")
    t0 = ts("2024-01-01T10:00:00Z")
    s = None
    for i in range(STREAK_CAP + 50):  # a message every 3 days for 450 days, never answered
        s = eng.communication(s, comm(f"m{i}", t0 + i * 3 * DAY)).state
    assert s is not None and s.comm is not None
    assert metrics(eng, s, t0 + 500 * DAY)["unanswered_streak"] == STREAK_CAP
    assert len(s.comm.rows) == STREAK_CAP  # the horizon (32 messages) is inside the streak
    # a late response after message 139: 10 messages after it
    s = eng.communication(s, comm("late", t0 + 139 * 3 * DAY + 60, "clicked")).state
    assert metrics(eng, s, t0 + 500 * DAY)["unanswered_streak"] == 10
    assert len(dumps(s)) < 3000


# -- order independence and duplicates ------------------------------------------------------------


def _history(seed: int) -> list[Communication]:
    rnd = random.Random(seed)
    t0 = ts("2025-06-01T08:00:00Z")
    out = []
    for i in range(rnd.randint(1, 60)):
        t = t0 + rnd.randint(0, 400) * DAY + rnd.randint(0, DAY - 1)
        out.append(comm(f"e{i}", t, rnd.choice(EVENTS), rnd.choice(CHANNELS)))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), order=st.randoms(use_true_random=False),
       dups=st.lists(st.integers(0, 59), max_size=10))
def test_any_order_with_duplicates_gives_the_same_record_and_metrics(
        seed: int, order: random.Random, dups: list[int]) -> None:
    eng = engine("manzana", "netix_contact", tz=MSK)
    history = _history(seed)
    shuffled = history + [history[i % len(history)] for i in dups]
    order.shuffle(shuffled)
    records = []
    for events in (history, shuffled):
        s = None
        for c in events:
            s = eng.communication(s, c).state
        assert s is not None
        records.append(s)
    end = max(c.at for c in history) + 30 * DAY
    assert metrics(eng, records[0], end) == metrics(eng, records[1], end)
    a, b = records
    assert a.comm is not None and b.comm is not None
    assert (a.comm.first_contact, a.comm.last_contact, a.comm.last_response, a.comm.unsubscribed) == (
        b.comm.first_contact, b.comm.last_contact, b.comm.last_response, b.comm.unsubscribed)
    # the windows read on every day of the last 90 agree as well
    for d in range(0, 120, 7):
        t = end - d * DAY
        assert metrics(eng, a, t)["messages_90d"] == metrics(eng, b, t)["messages_90d"]


def test_the_record_round_trips() -> None:
    eng = engine("manzana")
    s = None
    for c in _history(7):
        s = eng.communication(s, c).state
    assert s is not None
    assert loads(dumps(s)).comm == s.comm
    assert isinstance(loads(dumps(s)).comm, CommState)


# -- presets: worked examples in the seeds' words -------------------------------------------------


def test_manzana_activity_follows_answers_to_mailings() -> None:
    """Seed 002: "Активные — готовы открывать письма ... Пассивные — не дающие реакцию на
    предыдущие письма рассылки"."""
    eng = engine("manzana")
    t0 = ts("2026-01-05T10:00:00Z")
    s, ev = feed(eng, [rcpt("r1", t0)])
    assert changes(ev, "manzana_activity") == [(iso(t0), "not_contacted")]
    ev = eng.communication(s, comm("m1", t0 + DAY)).events
    assert changes(ev, "manzana_activity") == [(iso(t0 + DAY), "new_contact")]
    ev = eng.communication(s, comm("m1-o", t0 + DAY + 7200, "opened")).events
    assert changes(ev, "manzana_activity") == [(iso(t0 + DAY + 7200), "active")]
    # two mails later, none opened: still active while the last answer is under 90 days old
    for i, d in enumerate((20, 40)):
        ev = eng.communication(s, comm(f"m{i + 2}", t0 + d * DAY)).events
        assert changes(ev, "manzana_activity") == []
    ev = eng.advance(s, t0 + 200 * DAY)
    assert changes(ev, "manzana_activity") == [(iso(t0 + DAY + 7200 + 90 * DAY), "passive")]
    ev = eng.communication(s, comm("m4-c", t0 + 201 * DAY, "clicked")).events
    assert changes(ev, "manzana_activity") == [(iso(t0 + 201 * DAY), "active")]


def test_manzana_passive_needs_two_unanswered_messages() -> None:
    eng = engine("manzana")
    t0 = ts("2026-01-05T10:00:00Z")
    s, _ = feed(eng, [rcpt("r1", t0)])
    eng.communication(s, comm("m1", t0 + DAY))
    assert eng.segments(s)["manzana_activity"] == "new_contact"
    ev = eng.communication(s, comm("m2", t0 + 8 * DAY)).events
    assert changes(ev, "manzana_activity") == [(iso(t0 + 8 * DAY), "passive")]


def test_netix_contact_month_and_two_months_with_exact_instants() -> None:
    """Seed 004: "клиенты делятся на тех с кем общались в последний месяц, и на тех клиентов
    с которыми не общались более двух месяцев"."""
    eng = engine("netix_contact")
    t0 = ts("2026-01-05T10:00:00Z")
    s, ev = feed(eng, [rcpt("r1", t0)])
    assert changes(ev) == [(iso(t0), "no_contact_2m")]  # never talked to
    ev = eng.communication(s, comm("call-1", t0 + DAY, "answered", "call")).events
    assert changes(ev) == [(iso(t0 + DAY), "contacted_month")]
    assert eng.next_due(s) == t0 + DAY + 31 * DAY
    ev = eng.advance(s, t0 + 100 * DAY)
    assert changes(ev) == [(iso(t0 + 32 * DAY), "between"), (iso(t0 + 62 * DAY), "no_contact_2m")]
    assert eng.next_due(s) is None


def test_netix_contact_places_clients_known_only_from_communications() -> None:
    eng = engine("netix_contact", "manzana")
    t0 = ts("2026-01-05T10:00:00Z")
    res = eng.communication(None, comm("m1", t0, "sent", "sms"))
    assert changes(res.events) == [(iso(t0), "contacted_month")]  # manzana: buyers only
    assert res.state is not None and eng.segments(res.state) == {"netix_contact": "contacted_month"}


def test_next_due_of_contact_silence_equals_a_brute_force_scan() -> None:
    eng = engine("netix_contact", "manzana", tz=MSK)
    cal = BusinessCalendar(MSK)
    rnd = random.Random(3)
    t0 = ts("2026-01-05T10:00:00Z")
    for trial in range(20):
        s, _ = feed(eng, [rcpt(f"r{trial}", t0)])
        for i in range(rnd.randint(1, 6)):
            s = eng.communication(s, comm(f"e{trial}-{i}", t0 + rnd.randint(0, 50 * DAY),
                                          rnd.choice(("sent", "opened", "answered")))).state
        due = eng.next_due(s)
        before = dict(eng.segments(s))
        # scan every hour after the clock for the first instant some segment differs
        probe, found = s.clock, None
        while probe < s.clock + 200 * DAY and found is None:
            probe += 3600
            if eng._changes(s, probe):
                found = probe
        assert due is not None and found is not None
        assert found - 3600 < due <= found, (trial, iso(due), iso(found), before)
        assert eng._changes(s, due) and not eng._changes(s, due - 1)
    assert cal is not None


def test_a_client_known_only_from_a_profile_is_placed_by_clients_all_rule_sets() -> None:
    from rules import parse_profile
    eng = engine("netix_contact", "boostfeel")
    t0 = ts("2026-01-05T10:00:00Z")
    res = eng.profile(None, parse_profile({"client_id": "c-9", "updated_at": at(t0)}, None))
    assert changes(res.events) == [(iso(t0), "no_contact_2m")]  # boostfeel: buyers only
    assert res.state is not None and res.state.clock == t0
    # without updated_at there is no instant to evaluate at: nothing yet, unless registered_at
    assert eng.profile(None, parse_profile({"client_id": "c-8", "city": "Omsk"}, None)).events == []
    lead = parse_profile({"client_id": "c-7", "registered_at": at(t0 - DAY)}, None)
    assert changes(eng.profile(None, lead).events) == [(iso(t0 - DAY), "no_contact_2m")]
    # the first sale places the client in the buyers' dimensions too
    s, ev = feed(eng, [rcpt("r1", t0 + DAY, client="c-9")], res.state)
    assert {e["data"]["dimension"] for e in ev} == {"boostfeel"}
    assert eng.segments(s) == {"netix_contact": "no_contact_2m", "boostfeel": "other"}

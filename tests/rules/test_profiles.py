"""Profiles (issue #18 part 6): the new fields, hashed contacts, the profile metrics, CEL over
attributes and the exactness of the birthday countdowns' due instants."""

from __future__ import annotations

import calendar as cal_module
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from rules_testkit import ts

from rules import Engine, RejectedInput, parse_profile
from rules.calendar import BusinessCalendar
from rules.engine import FOREVER
from rules.errors import RuleSetError
from rules.evaluate import Plan
from rules.inputs.communications import CHANNELS
from rules.inputs.profiles import CONSENT_CHANNELS
from rules.inputs.receipts import known_profile_fields
from rules.metrics import CATALOGUE, MetricView
from rules.record.state import ClientState, apply_profile, dumps, initialize, loads
from rules.ruleset import loads as load_text

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SECRETS = {"first_name": "Tatyana", "email": " Tatyana.Sentinel@Example.ORG ", "phone": "+7 (900) 123-45-67",
           "name": "Tatyana Sentinel", "address": "Sentinel st. 1"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def state_of(**doc: Any) -> ClientState:
    return apply_profile(initialize("c-1"), parse_profile({"client_id": "c-1", **doc}, None))


def ruleset(*conditions: str, clients: str = "all") -> Any:
    """One dimension per condition: segment ``yes`` when it holds, else ``no``."""
    dims = "".join(f"  - id: d{i}\n    default: 'no'\n    segments:\n      - id: 'yes'\n"
                   f"        when: {json.dumps(c)}\n" for i, c in enumerate(conditions))
    return load_text(f"ruleset: t\nclients: {clients}\ndimensions:\n{dims}")


# -- parsing and hashing ---------------------------------------------------------------------


def test_new_fields_are_parsed_and_contacts_only_hashed() -> None:
    p = parse_profile({"client_id": "c-1", **SECRETS, "children": ["2019-11-02", "2015-02-28"],
                       "spouse_birth_date": "1988-02-29", "legal_entity": False, "discount_card": " D-42 ",
                       "app_registered_at": "2025-06-01T10:00:00+03:00", "labels": ["vip_list", "red", "red"],
                       "attributes": {"pet": "dog", "kids": 2, "gone": None}, "consent": {"sms": False, "call": None}},
                      NOW)
    assert p.fields == {
        "first_name": "Tatyana", "children": [date(2015, 2, 28), date(2019, 11, 2)],
        "spouse_birth_date": date(1988, 2, 29), "legal_entity": False, "discount_card": "D-42",
        "app_registered_at": datetime(2025, 6, 1, 7, 0, tzinfo=UTC), "labels": ["red", "vip_list"],
        "attributes": {"pet": "dog", "kids": 2}, "consent": {"sms": False},
        "email_sha256": sha("tatyana.sentinel@example.org"), "phone_sha256": sha("79001234567"),
    }


@pytest.mark.parametrize(("phone", "digits"), [
    ("+7 (900) 123-45-67", "79001234567"), ("  79001234567 ", "79001234567"), (79001234567, "79001234567"),
    (79001234567.0, "79001234567"), ("+44 20.7946.0958", "442079460958"), ("1234567", "1234567"),
    ("+123456789012345", "123456789012345"),
])
def test_phone_is_hashed_as_its_e164_digits(phone: Any, digits: str) -> None:
    assert parse_profile({"client_id": "c", "phone": phone}, NOW).fields == {"phone_sha256": sha(digits)}


def test_a_raw_contact_wins_over_a_digest_sent_with_it() -> None:
    p = parse_profile({"client_id": "c", "email": "A@B.C", "email_sha256": "f" * 64, "phone_sha256": "e" * 64}, NOW)
    assert p.fields == {"email_sha256": sha("a@b.c"), "phone_sha256": "e" * 64}


@pytest.mark.parametrize(("doc", "reason", "field"), [
    ({"phone": "+7 900 CALL-ME"}, "bad_value", "phone"), ({"phone": "123456"}, "bad_value", "phone"),
    ({"phone": "1234567890123456"}, "bad_value", "phone"), ({"phone": ["7900"]}, "bad_type", "phone"),
    ({"email": "no-at-sign"}, "bad_value", "email"), ({"email": True}, "bad_type", "email"),
    ({"email_sha256": "Tatyana.Sentinel@Example.ORG"}, "bad_value", "email_sha256"),
    ({"first_name": "  "}, "bad_value", "first_name"), ({"children": ["2015-02-29"]}, "bad_value", "children"),
    ({"children": "2015-02-28"}, "bad_type", "children"),
    ({"labels": [f"{i}" for i in range(33)]}, "bad_value", "labels"),
    ({"attributes": {"pet": ["dog"]}}, "bad_type", "attributes"), ({"consent": {"fax": True}}, "bad_value", "consent"),
    ({"legal_entity": "no"}, "bad_type", "legal_entity"),
    ({"spouse_birth_date": 19880229}, "bad_type", "spouse_birth_date"),
])
def test_rejections_name_the_field_and_never_quote_the_value(doc: dict[str, Any], reason: str, field: str) -> None:
    with pytest.raises(RejectedInput) as info:
        parse_profile({"client_id": "c-1", **doc}, NOW)
    assert (info.value.reason, info.value.field) == (reason, field)
    for value in doc.values():
        for text in (value if isinstance(value, list) else [value]):
            assert len(str(text)) < 4 or str(text).strip() not in str(info.value), info.value


def test_the_edge_filter_hashes_contacts_and_round_trips() -> None:
    raw = orjson.dumps({"client_id": "c-1", **SECRETS, "labels": ["vip_list"], "attributes": {"pet": "dog"},
                        "children": ["2015-02-28"], "gender": "f"})
    kept = known_profile_fields(raw)
    for secret in ("Sentinel", "900", "123-45-67", "79001234567"):
        assert secret.encode() not in kept
    doc = orjson.loads(kept)
    assert doc["email_sha256"] == sha("tatyana.sentinel@example.org") and doc["phone_sha256"] == sha("79001234567")
    assert set(doc) == {"client_id", "first_name", "labels", "attributes", "children", "gender",
                        "email_sha256", "phone_sha256"}
    # the envelope parses to the same fields as the message as sent
    assert parse_profile(doc, NOW).fields == parse_profile(orjson.loads(raw), NOW).fields


def test_the_edge_filter_drops_invalid_contacts_and_digests() -> None:
    raw = orjson.dumps({"client_id": "c-1", "gender": "?", "phone": "Tatyana-Sentinel-7900",
                        "email": "Sentinel at example", "phone_sha256": "+79001234567"})
    assert orjson.loads(known_profile_fields(raw)) == {"client_id": "c-1", "gender": "?"}
    assert known_profile_fields(b"{not json, t@example.org") == b"{not json, t@example.org"  # as before


# -- the record ------------------------------------------------------------------------------


def test_the_record_keeps_json_values_and_a_later_profile_replaces_a_field_wholesale() -> None:
    first = parse_profile({"client_id": "c-1", "updated_at": "2026-03-01T00:00:00Z", "children": ["2015-02-28"],
                           "attributes": {"pet": "dog", "size": "L"}, "consent": {"sms": False},
                           "labels": ["red"], "app_registered_at": "2025-06-01T10:00:00+03:00"}, NOW)
    s = apply_profile(initialize("c-1"), first)
    assert s.profile == {"children": ["2015-02-28"], "attributes": {"pet": "dog", "size": "L"},
                         "consent": {"sms": False}, "labels": ["red"], "app_registered_at": ts("2025-06-01T07:00:00Z")}
    first.fields["attributes"]["pet"] = "cat"  # the record shares nothing with the input
    first.fields["labels"].append("x")
    assert s.profile["attributes"]["pet"] == "dog" and s.profile["labels"] == ["red"]
    later = parse_profile({"client_id": "c-1", "updated_at": "2026-03-02T00:00:00Z", "attributes": {"size": "M"},
                           "consent": {"email": True}, "labels": []}, NOW)
    apply_profile(s, later)
    assert s.profile["attributes"] == {"size": "M"} and s.profile["consent"] == {"email": True}
    assert s.profile["labels"] == [] and s.profile["children"] == ["2015-02-28"]  # not given: kept
    older = parse_profile({"client_id": "c-1", "updated_at": "2026-02-01T00:00:00Z", "labels": ["old"]}, NOW)
    assert apply_profile(s, older).profile["labels"] == []
    assert loads(dumps(s)).profile == s.profile


def test_consent_channels_are_the_communication_channels() -> None:
    assert CONSENT_CHANNELS == CHANNELS


# -- metrics ---------------------------------------------------------------------------------


def _metrics(s: ClientState, at: str = "2026-03-10T12:00:00Z", tz: str = "UTC") -> dict[str, Any]:
    view = MetricView(s, ts(at), BusinessCalendar(tz))
    names = ("first_name", "labels", "attributes", "legal_entity", "has_app", "has_discount_card",
             "days_until_birthday", "days_until_child_birthday", "days_until_spouse_birthday")
    return {n: view.out(n) for n in names}


def test_profile_metrics_and_their_unknown_values() -> None:
    assert _metrics(initialize("c")) == {
        "first_name": "", "labels": [], "attributes": {}, "legal_entity": False, "has_app": False,
        "has_discount_card": False, "days_until_birthday": -1, "days_until_child_birthday": -1,
        "days_until_spouse_birthday": -1}
    s = state_of(first_name="Tatyana", labels=["vip_list"], attributes={"pet": "dog"}, legal_entity=True,
                 app_registered_at="2025-06-01T10:00:00Z", discount_card="D-1", birth_date="1990-03-10",
                 children=["2019-03-17", "2015-03-12"], spouse_birth_date="1988-03-09")
    assert _metrics(s) == {
        "first_name": "Tatyana", "labels": ["vip_list"], "attributes": {"pet": "dog"}, "legal_entity": True,
        "has_app": True, "has_discount_card": True, "days_until_birthday": 0, "days_until_child_birthday": 2,
        "days_until_spouse_birthday": 364}
    # business days: 23:30 UTC on 10 March is 11 March in Moscow
    assert _metrics(s, "2026-03-10T23:30:00Z", "Europe/Moscow")["days_until_birthday"] == 364


def test_personal_metrics_are_marked() -> None:
    assert {n for n, m in CATALOGUE.items() if m.personal} >= {
        "first_name", "labels", "attributes", "days_until_birthday", "days_until_child_birthday",
        "days_until_spouse_birthday"}  # a countdown and the event's time tell the day of birth
    assert not any(CATALOGUE[n].personal for n in ("legal_entity", "has_app"))


def test_change_events_carry_no_personal_metric() -> None:
    eng = Engine([ruleset('first_name == "Tatyana" && "vip_list" in labels && has(attributes.pet)')])
    res = eng.profile(None, parse_profile({"client_id": "c-1", "updated_at": "2026-03-01T00:00:00Z",
                                           "first_name": "Tatyana", "labels": ["vip_list"],
                                           "attributes": {"pet": "dog"}}, NOW))
    assert [e["data"]["to"] for e in res.events] == ["yes"]
    assert not set(res.events[0]["data"]["metrics"]) & {"first_name", "labels", "attributes"}


# -- CEL over attributes ---------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "pet_dog", "no_pet"), [
    ('attributes["pet"] == "dog"', "yes", "no"),
    ('attributes.pet == "dog"', "yes", "no"),
    ("has(attributes.pet)", "yes", "no"),
    ('has(attributes.pet) && attributes.pet == "dog"', "yes", "no"),
    ('"pet" in attributes', "yes", "no"),
    ('!has(attributes.pet) || attributes.pet != "cat"', "yes", "yes"),
    ('attributes["pet"] != "cat"', "yes", "no"),  # a missing key is an error: no match
    ("attributes.kids >= 2", "yes", "no"),
    ('has(attributes.since) && attributes.since >= "2020-01-01"', "yes", "no"),  # a date as text
    ("attributes.vegan", "yes", "no"),
])
def test_attributes_read_and_has(condition: str, pet_dog: str, no_pet: str) -> None:
    plan = Plan([ruleset(condition)])
    cal = BusinessCalendar()
    full = state_of(attributes={"pet": "dog", "kids": 2, "since": "2021-05-01", "vegan": True})
    assert plan.verdicts(full, ts("2026-03-10T00:00:00Z"), cal)[0].segment == pet_dog
    assert plan.verdicts(state_of(attributes={"x": 1}), ts("2026-03-10T00:00:00Z"), cal)[0].segment == no_pet
    assert plan.verdicts(initialize("c-2"), ts("2026-03-10T00:00:00Z"), cal)[0].segment == no_pet


def test_a_missing_attribute_is_not_cached_as_zero() -> None:
    plan = Plan([ruleset("attributes['n'] < 3")])  # keyed by interval: a missing key apart
    cal, t = BusinessCalendar(), ts("2026-03-10T00:00:00Z")
    assert plan.verdicts(state_of(attributes={"n": 0}), t, cal)[0].segment == "yes"
    assert plan.verdicts(state_of(attributes={}), t, cal)[0].segment == "no"
    assert plan.errors == 1


@pytest.mark.parametrize("condition", [
    "attributes.pet + 1 > 'x'", "attributes.pet", "attributes.a - attributes.b > 'x'",
    "attributes", "first_name > 3", "legal_entity == 'yes' || labels > 1",
])
def test_attribute_rules_still_type_check_at_load(condition: str) -> None:
    if condition == "attributes.pet":  # a bool attribute is a condition: accepted
        ruleset(condition)
        return
    with pytest.raises(RuleSetError, match=r"type error|must be boolean"):
        ruleset(condition)


def test_attributes_have_no_default_keys() -> None:
    rs = ruleset("attributes['pet'] == 'dog' && category_share['tea'] > 0.5")
    assert rs.map_keys == {"category_share": ("tea",)}  # category_share reads 0.0, attributes none


# -- countdowns: exact against a brute-force scan --------------------------------------------


def naive_days_until(born: date, today: date) -> int:
    """Walk forward a day at a time to the celebrated birthday."""
    d = today
    while True:
        if (d.month, d.day) == (born.month, born.day) or (
                (born.month, born.day) == (2, 29) and not cal_module.isleap(d.year) and (d.month, d.day) == (2, 28)):
            return (d - today).days
        d += timedelta(days=1)


CONDITIONS = (
    "days_until_birthday <= 7", "days_until_birthday == 0", "days_until_birthday > 300",
    "days_until_birthday >= 365", "days_until_birthday != 3", "days_until_child_birthday < 2",
    "days_until_child_birthday >= 0 && days_until_child_birthday <= 10",
    "days_until_spouse_birthday == 1 || days_until_birthday == 364",
    "days_until_birthday <= attributes.remind",
)
FAMILIES = [
    ("Europe/Berlin", {"birth_date": "2000-02-29", "children": ["2016-12-31", "2019-01-01", "2012-02-29", "2011-03-28"],
                       "spouse_birth_date": "1990-03-01", "attributes": {"remind": 3}}),
    ("America/New_York", {"birth_date": "1985-11-07", "children": ["2010-03-14"], "spouse_birth_date": "1984-02-28",
                          "attributes": {"remind": 30}}),
    ("Europe/Moscow", {"birth_date": "1999-12-31", "attributes": {"remind": 0}}),
]


@pytest.mark.parametrize(("tz", "profile"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_countdown_flips_are_all_candidates(tz: str, profile: dict[str, Any]) -> None:
    cal = BusinessCalendar(tz)
    s = state_of(**profile)
    plan = Plan([ruleset(*CONDITIONS)])
    first, last = cal.day_of_date(date(2027, 1, 1)), cal.day_of_date(date(2029, 7, 1))
    candidates = set(plan.candidates(s, cal.day_start(first), cal.day_start(last), cal))
    born = date.fromisoformat(profile["birth_date"])
    before = [v.segment for v in plan.verdicts(s, cal.day_start(first), cal)]
    flips = 0
    for day in range(first + 1, last + 1):
        start = cal.day_start(day)
        view = MetricView(s, start, cal)
        assert view.raw("days_until_birthday") == naive_days_until(born, cal.date_of_day(day))
        now = [v.segment for v in plan.verdicts(s, start, cal, view)]
        assert [v.segment for v in plan.verdicts(s, cal.day_start(day + 1) - 1, cal)] == now  # all day long
        if now != before:
            flips += 1
            assert start in candidates, (tz, cal.date_of_day(day), before, now)
        before = now
    assert flips >= 15
    # the candidates are the flips' instants and few others: about 2 per date and threshold a year
    assert len(candidates) < 3 * flips, (len(candidates), flips)


@pytest.mark.parametrize(("tz", "profile"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_next_due_walks_the_brute_force_changes_exactly(tz: str, profile: dict[str, Any]) -> None:
    eng = Engine([ruleset(*CONDITIONS)], tz=tz)
    cal = eng.cal
    start = cal.day_start(cal.day_of_date(date(2027, 1, 1)))
    s = eng.profile(None, parse_profile({"client_id": "c-1", "updated_at": datetime.fromtimestamp(start, UTC)
                                         .isoformat(), **profile}, None)).state
    assert s is not None and s.clock == start
    end = cal.day_start(cal.day_of_date(date(2029, 7, 1)))
    plan = Plan([ruleset(*CONDITIONS)])
    expected, before = [], [v.segment for v in plan.verdicts(s, start, cal)]
    for day in range(cal.day(start) + 1, cal.day(end) + 1):
        now = [v.segment for v in plan.verdicts(s, cal.day_start(day), cal)]
        if now != before:
            expected.append(cal.day_start(day))
        before = now
    walked = []
    while (due := eng.next_due(s)) is not None and due <= end:
        assert eng.advance(s, due - 1) == []
        assert eng.advance(s, due)
        walked.append(due)
    assert walked == expected


def test_a_rare_yearly_value_after_a_long_wait_is_found() -> None:
    """365 days to the birthday happens only in a cycle with a 29 February; combined with a
    day counter that flips 19 years on, the change is past the countdown horizon counted from
    now (12 years), not from the last other candidate."""
    eng = Engine([ruleset("days_until_birthday >= 365 && days_since_registration >= 7000")], tz="Europe/Berlin")
    s = eng.profile(None, parse_profile({"client_id": "c-1", "updated_at": "2027-01-01T00:00:00+01:00",
                                         "birth_date": "1990-06-15", "registered_at": "2020-01-01T00:00:00+01:00"},
                                        None)).state
    assert s is not None
    # day 7000 after registration: 2039-03-02; the first later 366-day cycle starts 2039-06-16
    assert eng.next_due(s) == ts("2039-06-16T00:00:00+02:00")
    eng.advance(s, ts("2039-06-16T00:00:00+02:00"))
    assert eng.next_due(s) == ts("2039-06-17T00:00:00+02:00")


@pytest.mark.parametrize("birth", ["1990-06-15", "2000-02-29", "1999-12-31"])
def test_one_date_lists_two_years_past_the_other_inputs_and_stays_exact(birth: str) -> None:
    """One birthday compared with steps up to 364 repeats every cycle: the short horizon."""
    conditions = ("days_until_birthday <= 7 && days_since_registration >= 1500", "days_until_birthday == 363",
                  "days_until_birthday > 300 || days_since_registration < 1000")
    eng = Engine([ruleset(*conditions)], tz="America/New_York")
    cal = eng.cal
    s = eng.profile(None, parse_profile({"client_id": "c-1", "updated_at": "2027-01-01T00:00:00-05:00",
                                         "birth_date": birth, "registered_at": "2026-12-01T12:00:00-05:00"},
                                        None)).state
    assert s is not None
    plan, end = Plan([ruleset(*conditions)]), ts("2032-01-01T00:00:00-05:00")
    expected, before, t = [], [v.segment for v in plan.verdicts(s, s.clock, cal)], s.clock
    while t < end:  # every business midnight and every instant a day counter steps
        steps = [ts("2026-12-01T12:00:00-05:00") + n * 86_400 for n in (1000, 1500)]
        nxt = min([cal.day_start(cal.day(t) + 1), *(a for a in steps if a > t)])
        now = [v.segment for v in plan.verdicts(s, nxt, cal)]
        if now != before:
            expected.append(nxt)
        before, t = now, nxt
    walked = []
    while (due := eng.next_due(s)) is not None and due <= end:
        assert eng.advance(s, due - 1) == [] and eng.advance(s, due)
        walked.append(due)
    assert walked == expected and len(walked) > 8


def test_the_2100_gap_in_leap_years() -> None:
    eng = Engine([ruleset("days_until_birthday >= 365")])
    s = eng.profile(None, parse_profile({"client_id": "c-1", "updated_at": "2097-03-05T00:00:00Z",
                                         "birth_date": "2000-03-01"}, None)).state
    assert s is not None
    assert eng.next_due(s) == ts("2103-03-02T00:00:00Z")  # 2100 is no leap year: no 366-day cycle before


def test_candidates_up_to_forever_stay_few() -> None:
    plan = Plan([ruleset(*CONDITIONS)])
    s = state_of(**FAMILIES[0][1])
    cal = BusinessCalendar("Europe/Berlin")
    found = plan.candidates(s, ts("2027-01-01T00:00:00Z"), FOREVER, cal)
    assert 100 < len(found) < 1000 and max(found) < ts("2040-01-01T00:00:00Z")

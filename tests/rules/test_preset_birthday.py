"""Worked examples of the birthday preset (seed 001: Boostfeel's birthday funnel), including
the exact instants of its time-based changes."""

from __future__ import annotations

from typing import Any

from rules_testkit import MSK, changes, engine, rcpt, ts

from rules import Engine, load_ruleset, parse_profile
from rules.record.state import ClientState
from rules.ruleset import loads as load_text


def profile(eng: Engine, state: ClientState | None = None, **doc: Any) -> tuple[ClientState, list[dict[str, Any]]]:
    res = eng.profile(state, parse_profile({"client_id": "c-1", **doc}, None))
    assert res.state is not None
    return res.state, res.events


def walk(eng: Engine, s: ClientState, until: str) -> list[tuple[str, str]]:
    """Every time-based change up to ``until``, each checked to be due to the second."""
    out = []
    while (due := eng.next_due(s)) is not None and due <= ts(until):
        assert eng.advance(s, due - 1) == []
        out += changes(eng.advance(s, due))
    return out


def test_the_birthday_week_and_day_in_moscow_without_a_purchase() -> None:
    eng = engine("birthday", tz=MSK)
    s, ev = profile(eng, birth_date="1990-06-15", updated_at="2026-03-03T10:00:00+03:00")
    assert changes(ev) == [("2026-03-03T07:00:00Z", "none")]  # clients: all: no purchase needed
    assert ev[0]["data"]["metrics"] == {}  # the countdowns are personal: never in change events
    assert walk(eng, s, "2027-01-01T00:00:00+03:00") == [
        ("2026-06-07T21:00:00Z", "birthday_week"),  # 8 June 00:00 in Moscow: 7 days before
        ("2026-06-14T21:00:00Z", "birthday_today"),
        ("2026-06-15T21:00:00Z", "none"),  # the day after
    ]
    assert eng.next_due(s) == ts("2027-06-08T00:00:00+03:00")


def test_a_leap_day_birthday_is_celebrated_on_28_february_in_common_years() -> None:
    eng = Engine([load_ruleset("birthday"), load_ruleset("demographics")], tz="Europe/Berlin")
    s = eng.receipt(None, rcpt("r1", "2027-01-10T10:00:00+01:00")).state  # demographics: buyers only
    assert s is not None
    s, _ = profile(eng, s, birth_date="1992-02-29", updated_at="2027-01-11T10:00:00+01:00")
    assert walk(eng, s, "2028-03-02T00:00:00+01:00") == [
        ("2027-02-20T23:00:00Z", "birthday_week"),   # 21 February 2027
        ("2027-02-27T23:00:00Z", "birthday_today"),  # 28 February: 2027 has no 29th
        ("2027-02-28T23:00:00Z", "none"),
        ("2027-02-28T23:00:00Z", "age_35_39"),       # age (35), a legal count, steps up on 1 March
        ("2028-02-21T23:00:00Z", "birthday_week"),   # 22 February 2028: 7 days before the 29th
        ("2028-02-28T23:00:00Z", "birthday_today"),  # 29 February 2028
        ("2028-02-29T23:00:00Z", "none"),
    ]


def test_children_and_spouse_after_the_clients_own_birthday() -> None:
    eng = engine("birthday")
    s, ev = profile(eng, birth_date="1990-09-03", children=["2019-09-01", "2021-12-30"],
                    spouse_birth_date="1991-01-02", updated_at="2026-08-20T12:00:00Z")
    assert changes(ev) == [("2026-08-20T12:00:00Z", "none")]
    assert walk(eng, s, "2027-01-10T00:00:00Z") == [
        ("2026-08-25T00:00:00Z", "child_birthday_week"),  # 7 days before 1 September
        ("2026-08-27T00:00:00Z", "birthday_week"),        # the client's own wins (first match)
        ("2026-09-03T00:00:00Z", "birthday_today"),
        ("2026-09-04T00:00:00Z", "none"),
        ("2026-12-23T00:00:00Z", "child_birthday_week"),  # the second child's, before the spouse's
        ("2026-12-31T00:00:00Z", "spouse_birthday_week"),
        ("2027-01-03T00:00:00Z", "none"),
    ]


def test_the_week_is_a_parameter() -> None:
    eng = Engine([load_ruleset("birthday", {"birthday_days": 3})])
    s, _ = profile(eng, birth_date="1990-06-15", updated_at="2026-06-01T00:00:00Z")
    assert walk(eng, s, "2026-06-30T00:00:00Z") == [("2026-06-12T00:00:00Z", "birthday_week"),
                                                     ("2026-06-15T00:00:00Z", "birthday_today"),
                                                     ("2026-06-16T00:00:00Z", "none")]


def test_no_birth_date_no_change() -> None:
    eng = engine("birthday")
    s, ev = profile(eng, first_name="Tatyana", updated_at="2026-06-01T00:00:00Z")
    assert changes(ev) == [("2026-06-01T00:00:00Z", "none")] and eng.next_due(s) is None
    s, ev = profile(eng, s, birth_date="1990-06-03", updated_at="2026-06-02T09:00:00Z")  # a later profile
    assert changes(ev) == [("2026-06-02T09:00:00Z", "birthday_week")]
    assert eng.next_due(s) == ts("2026-06-03T00:00:00Z")


def test_tatyanas_day_is_a_rule_of_your_own() -> None:
    """Seed 001: "в праздник «Татьянин день» поздравить всех Танюш" (25 January): the
    segment of the Tatyanas; the greeting is a campaign sent on the day."""
    rs = load_text('ruleset: name_day\nclients: all\ndimensions:\n  - id: name_day\n    default: other\n'
                   '    segments:\n      - id: tatyana\n'
                   '        when: first_name in ["Татьяна", "Таня", "Tatiana", "Tatyana"]\n')
    eng = Engine([rs])
    _, ev = profile(eng, first_name="Таня", updated_at="2026-01-20T10:00:00Z")
    assert changes(ev) == [("2026-01-20T10:00:00Z", "tatyana")]
    _, ev = profile(eng, first_name="Tamara", updated_at="2026-01-20T10:00:00Z")
    assert changes(ev) == [("2026-01-20T10:00:00Z", "other")]

"""Worked examples for every preset, including the instants of time-based changes."""

from __future__ import annotations

from datetime import date

import pytest
from rules_testkit import DAY, MSK, changes, engine, feed, iso, rcpt, ts

from rules import Engine, load_ruleset, parse_profile, preset_names
from rules.calendar import BusinessCalendar
from rules.events import EVENT_TYPE


def test_every_preset_has_examples_here() -> None:
    # abc, rfm_quantiles and profsalon's own average check: tests/rules/test_population.py;
    # manzana's activity and netix_contact: tests/rules/test_communications.py;
    # birthday: tests/rules/test_preset_birthday.py; churn_risk: tests/rules/test_predictive.py
    assert preset_names() == ["abc", "basket", "birthday", "boostfeel", "check_bands", "churn_risk",
                              "demographics", "manzana",
                              "netix", "netix_contact", "profsalon", "rfm", "rfm_quantiles"]


# -- boostfeel --------------------------------------------------------------------------------


def _month_of_visits(first: str, n_more: int, total: str) -> list:
    """One visit at ``first`` then ``n_more`` daily visits at 12:00 MSK from 7 March 2026."""
    out = [rcpt("r0", first, total)]
    out += [rcpt(f"r{i}", f"2026-03-{6 + i:02d}T12:00:00+03:00", total)
            for i in range(1, n_more + 1)]
    return out


def test_boostfeel_vip_counts_business_days_in_moscow() -> None:
    # 25 visits: 1 March 00:30 MSK (still 28 February in UTC) and 7..30 March
    visits = _month_of_visits("2026-03-01T00:30:00+03:00", 24, "400.00")
    msk, _ = feed(engine("boostfeel", tz=MSK), visits)
    utc_engine = engine("boostfeel")
    utc, _ = feed(utc_engine, visits)
    assert engine("boostfeel", tz=MSK).segments(msk) == {"boostfeel": "vip"}
    assert utc_engine.segments(utc) == {"boostfeel": "loyal"}  # 24 visits in the UTC window


def test_boostfeel_vip_thresholds() -> None:
    eng = engine("boostfeel")
    base = ts("2026-03-01T10:00:00Z")
    vip, _ = feed(eng, [rcpt(f"v{i}", base + i * DAY, "400.00") for i in range(25)])
    assert eng.segments(vip)["boostfeel"] == "vip"
    cheap, _ = feed(eng, [rcpt(f"v{i}", base + i * DAY, "399.99") for i in range(25)])
    assert eng.segments(cheap)["boostfeel"] == "loyal"
    few, _ = feed(eng, [rcpt(f"v{i}", base + i * DAY, "900.00") for i in range(24)])
    assert eng.segments(few)["boostfeel"] == "loyal"


def test_boostfeel_loyal_thresholds_and_other() -> None:
    eng = engine("boostfeel")
    base = ts("2026-03-01T10:00:00Z")
    _, ev = feed(eng, [rcpt(f"v{i}", base + i * DAY, "200.00") for i in range(10)])
    assert changes(ev) == [(iso(base), "other"), (iso(base + 9 * DAY), "loyal")]
    cheap, _ = feed(eng, [rcpt(f"v{i}", base + i * DAY, "199.99") for i in range(10)])
    nine, _ = feed(eng, [rcpt(f"v{i}", base + i * DAY, "500.00") for i in range(9)])
    assert eng.segments(cheap)["boostfeel"] == eng.segments(nine)["boostfeel"] == "other"


def test_boostfeel_vip_decays_at_moscow_midnight_then_at_risk_and_lost_to_the_second() -> None:
    eng = engine("boostfeel", tz=MSK)
    visits = _month_of_visits("2026-03-01T00:30:00+03:00", 24, "500.00")
    last = ts("2026-03-30T12:34:56+03:00")
    visits[-1] = rcpt("last", last, "500.00")
    s, ev = feed(eng, visits)
    assert changes(ev)[-1] == (iso(last), "vip")
    # 1 March (MSK) leaves the 30-day window when 31 March begins in Moscow
    leave = ts("2026-03-31T00:00:00+03:00")
    assert eng.metrics(s, leave - 1)["visits_30d"] == 25 and eng.metrics(s, leave)["visits_30d"] == 24
    # but a vip stays vip at least 10 days (min_days): loyal when the stay ends, to the second
    assert eng.advance(s, leave) == [] and eng.next_due(s) == last + 10 * DAY
    assert eng.advance(s, last + 10 * DAY - 1) == []
    ev = eng.advance(s, last + 10 * DAY)
    assert changes(ev) == [("2026-04-09T09:34:56Z", "loyal")]
    # the 10 days loyal end with the 20th day of silence: at risk on time
    ev = eng.advance(s, last + 20 * DAY - 1)
    assert all(to != "at_risk" for _, to in changes(ev))
    ev = eng.advance(s, last + 20 * DAY)
    assert changes(ev)[-1] == (iso(last + 20 * DAY), "at_risk")
    assert iso(last + 20 * DAY) == "2026-04-19T09:34:56Z"
    assert eng.advance(s, last + 40 * DAY - 1) == []
    ev = eng.advance(s, last + 40 * DAY)
    assert changes(ev) == [("2026-05-09T09:34:56Z", "lost")]
    e = ev[0]
    assert e["type"] == EVENT_TYPE and e["data"]["cause"] == "time"
    assert e["data"]["from"] == "at_risk" and e["data"]["rule"] == "boostfeel.lost"
    assert e["data"]["metrics"]["days_since_last_purchase"] == 40
    assert eng.advance(s, last + 3 * 365 * DAY) == []


def test_boostfeel_at_risk_and_lost_exact_instants_utc() -> None:
    eng = engine("boostfeel")
    last = ts("2026-03-02T10:11:12Z")
    s, ev = feed(eng, [rcpt("a", last - 3 * DAY, "250.00"), rcpt("b", last, "250.00")])
    assert changes(ev) == [(iso(last - 3 * DAY), "other")]
    assert eng.next_due(s) == last + 20 * DAY
    assert eng.advance(s, last + 20 * DAY - 1) == []
    assert changes(eng.advance(s, last + 20 * DAY)) == [("2026-03-22T10:11:12Z", "at_risk")]
    assert eng.next_due(s) == last + 40 * DAY
    assert changes(eng.advance(s, last + 40 * DAY)) == [("2026-04-11T10:11:12Z", "lost")]
    assert eng.next_due(s) is None


def test_boostfeel_potentially_loyal_after_a_week() -> None:
    eng = engine("boostfeel")
    t = ts("2026-03-02T10:00:00Z")
    s, _ = feed(eng, [rcpt("a", t, "300.00")])
    assert eng.segments(s) == {"boostfeel": "other"} and eng.next_due(s) == t + 7 * DAY
    assert changes(eng.advance(s, t + 7 * DAY)) == [(iso(t + 7 * DAY), "potentially_loyal")]
    # a second visit makes visits_30d == 2: no longer potentially loyal
    res = eng.receipt(s, rcpt("b", t + 8 * DAY, "300.00"))
    assert changes(res.events) == [(iso(t + 8 * DAY), "other")]


def test_boostfeel_potentially_loyal_waits_a_week_after_the_welcome_bonus() -> None:
    eng = engine("boostfeel")
    t = ts("2026-03-02T10:00:00Z")
    s, _ = feed(eng, [rcpt("a", t, "300.00")])
    bonus = t + 2 * DAY
    res = eng.profile(s, parse_profile({"client_id": "c-1", "welcome_bonus_at": iso(bonus),
                                        "updated_at": iso(bonus)}, None))
    assert res.events == [] and eng.next_due(s) == bonus + 7 * DAY
    assert eng.advance(s, bonus + 7 * DAY - 1) == []
    ev = eng.advance(s, bonus + 7 * DAY)
    assert changes(ev) == [("2026-03-11T10:00:00Z", "potentially_loyal")]


def test_boostfeel_next_due_in_moscow() -> None:
    eng = engine("boostfeel", tz=MSK)
    s, _ = feed(eng, [rcpt("a", "2026-03-02T10:00:00+03:00", "300.00")])
    assert eng.next_due(s) == ts("2026-03-09T10:00:00+03:00")


# -- profsalon -------------------------------------------------------------------------------


def _profsalon(tz: str = "UTC") -> Engine:
    """A fixed average check of 2000 (the default reads the salon's own: test_population)."""
    return Engine([load_ruleset("profsalon", {"salon_avg_check": 2000.0})], tz=tz)


def test_profsalon_vip_after_three_months_of_three_average_checks() -> None:
    eng = _profsalon(tz=MSK)
    s, ev = feed(eng, [
        rcpt("jan", "2026-01-15T12:00:00+03:00", "6000.00"),
        rcpt("feb1", "2026-02-10T12:00:00+03:00", "3500.00"),
        rcpt("feb2", "2026-02-20T12:00:00+03:00", "2500.00"),  # February: 6000 in two visits
        rcpt("mar", "2026-03-05T12:00:00+03:00", "6000.00"),
    ])
    assert changes(ev) == [("2026-01-15T09:00:00Z", "irregular"),
                           ("2026-02-20T09:00:00Z", "regular"),
                           ("2026-03-05T09:00:00Z", "vip")]
    assert ev[-1]["data"]["metrics"]["min_month_revenue_3m"] == "6000.00"
    # April without a visit keeps the streak Jan-Mar; it breaks when May begins in Moscow
    may = ts("2026-05-01T00:00:00+03:00")
    assert eng.advance(s, may - 1) == []
    assert changes(eng.advance(s, may)) == [("2026-04-30T21:00:00Z", "irregular")]
    sleep = ts("2026-03-05T12:00:00+03:00") + 90 * DAY
    assert changes(eng.advance(s, sleep)) == [(iso(sleep), "sleeping")]


def test_profsalon_one_month_short_is_not_vip() -> None:
    eng = _profsalon()
    s, _ = feed(eng, [rcpt("jan", "2026-01-15T12:00:00Z", "6000.00"),
                      rcpt("feb", "2026-02-10T12:00:00Z", "5999.99"),
                      rcpt("mar", "2026-03-05T12:00:00Z", "9000.00")])
    assert eng.segments(s) == {"profsalon": "regular"}
    gap, _ = feed(eng, [rcpt("jan", "2026-01-15T12:00:00Z", "9000.00"),
                        rcpt("mar", "2026-03-05T12:00:00Z", "9000.00"),
                        rcpt("apr", "2026-04-05T12:00:00Z", "9000.00")])
    # no February: the streak is Mar-Apr only; Feb-Apr hold 2 visits, so not regular either
    assert eng.segments(gap) == {"profsalon": "irregular"}


# -- netix -----------------------------------------------------------------------------------


def test_netix_ivanov_every_two_months() -> None:
    eng = engine("netix")
    first = ts("2025-01-10T10:00:00Z")
    s, ev = feed(eng, [rcpt(f"iv{i}", first + i * 60 * DAY, "3000.00") for i in range(4)])
    last = first + 180 * DAY
    assert changes(ev) == [(iso(first), "ok")]
    # rhythm 60 days * 1.5 = 90: "losing" once more than 90 whole days have passed
    assert eng.next_due(s) == last + 91 * DAY
    assert eng.advance(s, last + 91 * DAY - 1) == []
    assert changes(eng.advance(s, last + 91 * DAY)) == [("2025-10-08T10:00:00Z", "losing")]
    four_months = ts("2025-11-09T10:00:00Z")
    assert eng.advance(s, four_months) == [] and eng.segments(s) == {"netix": "losing"}
    assert changes(eng.advance(s, last + 365 * DAY)) == [("2026-07-09T10:00:00Z", "lost")]
    assert eng.next_due(s) is None


def test_netix_rare_and_one_time_clients_wait_half_a_year() -> None:
    eng = engine("netix")
    t = ts("2025-01-10T10:00:00Z")
    s, _ = feed(eng, [rcpt("one", t)])
    assert changes(eng.advance(s, t + 400 * DAY)) == [
        (iso(t + 182 * DAY), "losing"), (iso(t + 365 * DAY), "lost")]
    # a comeback resets to ok
    back = eng.receipt(s, rcpt("back", t + 401 * DAY))
    assert changes(back.events) == [(iso(t + 401 * DAY), "ok")]


def test_netix_one_visit_paid_in_two_receipts_is_one_purchase_day() -> None:
    """The rhythm counts purchase days, not receipts: two receipts of one visit are a
    one-time client (losing after half a year), not a rhythm of 0 days (losing after 7)."""
    eng = engine("netix")
    t = ts("2025-01-10T10:00:00Z")
    s, _ = feed(eng, [rcpt("part-1", t), rcpt("part-2", t + 600)])
    m = eng.metrics(s, t + DAY)
    assert m["lifetime_visits"] == 2 and m["mean_interval_days"] == 0.0
    last = t + 600  # the second receipt
    assert changes(eng.advance(s, last + 182 * DAY - 1)) == []
    assert changes(eng.advance(s, last + 182 * DAY)) == [(iso(last + 182 * DAY), "losing")]
    # a second purchase day 30 days later: a rhythm of 30 days, losing after 46 days
    s, _ = feed(eng, [rcpt("part-1", t), rcpt("part-2", last), rcpt("next", t + 30 * DAY)])
    assert eng.metrics(s, t + 30 * DAY)["mean_interval_days"] == 30.0
    assert eng.next_due(s) == t + 76 * DAY


# -- rfm --------------------------------------------------------------------------------------


def test_rfm_champion_545_then_decays_with_months() -> None:
    eng = engine("rfm")
    first = ts("2025-06-15T10:00:00Z")
    s, _ = feed(eng, [rcpt(f"m{i}", first + i * 30 * DAY, "4500.00") for i in range(12)])
    assert eng.segments(s) == {"rfm": "champions", "rfm_score": "545"}
    last = first + 330 * DAY
    ev = eng.advance(s, ts("2026-06-01T00:00:00Z"))
    assert changes(ev) == [(iso(last + 15 * DAY), "445"),
                           ("2026-06-01T00:00:00Z", "potential_loyalist"),
                           ("2026-06-01T00:00:00Z", "434")]


def test_rfm_one_time_buyer_new_promising_about_to_sleep_lost() -> None:
    eng = engine("rfm")
    t = ts("2026-03-02T10:00:00Z")
    s, ev = feed(eng, [rcpt("one", t, "1000.00")])
    assert changes(ev) == [(iso(t), "new"), (iso(t), "511")]
    ev = eng.advance(s, t + 200 * DAY)
    assert changes(ev) == [
        (iso(t + 15 * DAY), "411"),
        (iso(t + 31 * DAY), "promising"), (iso(t + 31 * DAY), "311"),
        (iso(t + 61 * DAY), "about_to_sleep"), (iso(t + 61 * DAY), "211"),
        (iso(t + 121 * DAY), "lost"), (iso(t + 121 * DAY), "111"),
    ]


def test_rfm_cannot_lose() -> None:
    eng = engine("rfm")
    t = ts("2026-01-05T10:00:00Z")
    s, _ = feed(eng, [rcpt(f"x{i}", t + i * 4 * DAY, "4000.00") for i in range(15)])
    last = t + 56 * DAY
    assert eng.segments(s) == {"rfm": "champions", "rfm_score": "545"}
    eng.advance(s, last + 61 * DAY)
    assert eng.segments(s) == {"rfm": "cannot_lose", "rfm_score": "245"}


# -- manzana ----------------------------------------------------------------------------------


def test_manzana_activity_and_lifecycle() -> None:
    eng = engine("manzana")
    first = ts("2025-01-10T10:00:00Z")
    s, ev = feed(eng, [rcpt(f"z{i}", first + i * 20 * DAY, "100.00") for i in range(12)])
    # activity is the answer to mailings: a client never mailed is not_contacted
    assert changes(ev, "manzana_activity") == [(iso(first), "not_contacted")]
    assert changes(ev, "manzana_lifecycle") == [
        (iso(first), "new"), (iso(first + 30 * DAY), "developing"),
        (iso(first + 180 * DAY), "established")]  # 10th visit on day 180
    last = first + 220 * DAY
    ev = eng.advance(s, last + 365 * DAY)
    assert changes(ev) == [(iso(last + 120 * DAY), "lapsed")]


# -- basket -----------------------------------------------------------------------------------


def _items(**amounts: str) -> list[dict[str, str]]:
    return [{"category": c, "amount": a} for c, a in amounts.items()]


@pytest.mark.parametrize(("items", "segment"), [
    (_items(coffee="300.00", food="200.00"), "coffee_lover"),
    (_items(tea="350.00", coffee="150.00"), "tea_lover"),
    (_items(coffee="250.00", tea="250.00"), "coffee_lover"),  # 50% each: first rule wins
    (_items(food="400.00", tea="100.00"), "food_lover"),
    (_items(coffee="200.00", tea="200.00", food="100.00"), "mixed"),
])
def test_basket_preference(items: list[dict[str, str]], segment: str) -> None:
    eng = engine("basket")
    s, _ = feed(eng, [rcpt("a", "2026-03-02T10:00:00Z", "500.00", items=items)])
    assert eng.segments(s) == {"basket": segment}


def test_basket_coffee_then_tea_as_months_pass() -> None:
    eng = engine("basket", tz=MSK)
    s, _ = feed(eng, [
        rcpt("a", "2026-01-05T10:00:00+03:00", "500.00", items=_items(coffee="500.00")),
        rcpt("b", "2026-03-02T10:00:00+03:00", "400.00", items=_items(tea="400.00"))])
    assert eng.segments(s) == {"basket": "coffee_lover"}  # 500 vs 400 over Jan-Mar
    ev = eng.advance(s, ts("2026-05-01T00:00:00+03:00"))
    assert changes(ev) == [("2026-03-31T21:00:00Z", "tea_lover")]  # January leaves in April


def test_basket_unknown_without_items() -> None:
    eng = engine("basket")
    s, _ = feed(eng, [rcpt("a", "2026-03-02T10:00:00Z", "500.00")])
    assert eng.segments(s) == {"basket": "unknown"}


# -- demographics ----------------------------------------------------------------------------


def test_demographics_age_band_changes_on_the_moscow_birthday() -> None:
    eng = engine("demographics", tz=MSK)
    s, _ = feed(eng, [rcpt("a", "2026-03-02T10:00:00+03:00")])
    assert eng.segments(s) == {"age_band": "unknown", "gender": "unknown"}
    res = eng.profile(s, parse_profile({"client_id": "c-1", "birth_date": "1996-06-15",
                                        "gender": "F", "updated_at": "2026-03-03T10:00:00+03:00"},
                                       None))
    assert changes(res.events) == [("2026-03-03T07:00:00Z", "age_25_29"),
                                   ("2026-03-03T07:00:00Z", "f")]
    birthday = ts("2026-06-15T00:00:00+03:00")
    assert eng.next_due(s) == birthday == BusinessCalendar(MSK).anniversary(date(1996, 6, 15), 30)
    assert eng.advance(s, birthday - 1) == []
    assert changes(eng.advance(s, birthday)) == [("2026-06-14T21:00:00Z", "age_30_34")]
    assert eng.next_due(s) == ts("2031-06-15T00:00:00+03:00")


def test_demographics_leap_day_birthday() -> None:
    eng = engine("demographics")
    s, _ = feed(eng, [rcpt("a", "2026-01-10T10:00:00Z")])
    eng.profile(s, parse_profile({"client_id": "c-1", "birth_date": "2000-02-29"}, None))
    assert eng.segments(s)["age_band"] == "age_25_29"
    assert eng.next_due(s) == ts("2030-03-01T00:00:00Z")  # no 29 February in 2030


# -- check_bands -------------------------------------------------------------------------------


@pytest.mark.parametrize(("totals", "band"), [
    (["0"], "0-499"), (["499.99"], "0-499"), (["500.00"], "500-999"), (["999.99"], "500-999"),
    (["1000"], "1000-1499"), (["1234.50"], "1000-1499"), (["400.00", "700.00"], "500-999"),
])
def test_check_bands(totals: list[str], band: str) -> None:
    eng = engine("check_bands")
    t0 = ts("2026-03-02T10:00:00Z")
    s, _ = feed(eng, [rcpt(f"r{i}", t0 + i, t) for i, t in enumerate(totals)])
    assert eng.segments(s) == {"check_band": band}
    assert eng.next_due(s) is None


# -- events and the time model --------------------------------------------------------------


def test_events_are_cloudevents_with_deterministic_ids() -> None:
    t = ts("2026-03-02T10:00:00Z")
    stream = [rcpt("a", t, "250.00"), rcpt("b", t + DAY, "250.00")]
    runs = []
    for _ in range(2):
        eng = engine("boostfeel")
        s, ev = feed(eng, stream)
        runs.append(ev + eng.advance(s, t + 60 * DAY))
    assert runs[0] == runs[1] and len(runs[0]) == 3
    first = runs[0][0]
    assert {k: first[k] for k in ("specversion", "type", "source", "subject", "datacontenttype")} \
        == {"specversion": "1.0", "type": EVENT_TYPE, "source": "urn:loyalty:segmentation",
            "subject": "c-1", "datacontenttype": "application/json"}
    assert len(first["id"]) == 32 and int(first["id"], 16) >= 0
    assert first["data"] | {"metrics": None} == {
        "client_id": "c-1", "dimension": "boostfeel", "from": None, "to": "other",
        "rule": "boostfeel.default", "ruleset": "boostfeel",
        "rules_version": load_ruleset("boostfeel").version, "cause": "receipt",
        "metrics": None, "receipt_id": "a"}
    assert first["data"]["metrics"]["avg_check_30d"] == "250.00"
    assert len({e["id"] for e in runs[0]}) == 3
    # another rules version is another change
    other = Engine([load_ruleset("boostfeel", {"lost_days": 41})])
    _, ev = feed(other, stream)
    assert ev[0]["id"] != first["id"]


def test_late_receipt_is_evaluated_at_the_clients_clock() -> None:
    eng = engine("boostfeel")
    t = ts("2026-03-02T10:00:00Z")
    s, _ = feed(eng, [rcpt("a", t, "300.00")])
    eng.advance(s, t + 25 * DAY)
    assert eng.segments(s) == {"boostfeel": "at_risk"} and s.clock == t + 20 * DAY
    res = eng.receipt(s, rcpt("late", t + DAY, "300.00"))  # arrives late, inside the horizon
    assert changes(res.events) == [(iso(t + 20 * DAY), "other")]  # never in the past
    assert res.events[0]["data"]["receipt_id"] == "late"
    assert eng.next_due(s) == t + DAY + 20 * DAY

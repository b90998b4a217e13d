"""Per-client state as pure functions: initialize -> update (apply_receipt) -> result.

Written like a quix-streams / Faust table loop with no broker: the state is a value that a
plain ``for`` loop threads through ``apply_receipt``.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from rules_testkit import DAY, MSK, engine, feed, rcpt, ts

from rules import RejectedInput, parse_profile, population, preset_names
from rules.calendar import BusinessCalendar
from rules.inputs.receipts import Receipt
from rules.metrics import MetricView
from rules.record.state import (
    HORIZON_DAYS,
    ClientState,
    Outcome,
    apply_profile,
    apply_receipt,
    canonical,
    dumps,
    initialize,
    loads,
)

UTC_CAL = BusinessCalendar("UTC")
MSK_CAL = BusinessCalendar(MSK)
T0 = ts("2026-03-02T10:00:00+03:00")


def run(receipts: list[Receipt], cal: BusinessCalendar = UTC_CAL,
        state: ClientState | None = None) -> tuple[ClientState, list[Outcome]]:
    """initialize / update over a stream of receipts."""
    state = state or initialize("c-1")
    outcomes = []
    for r in receipts:
        state, outcome = apply_receipt(state, r, cal)
        outcomes.append(outcome)
    return state, outcomes


def result(state: ClientState, at: int, cal: BusinessCalendar = UTC_CAL) -> dict[str, Any]:
    view = MetricView(state, at, cal)
    names = ("lifetime_visits", "lifetime_revenue", "lifetime_returns", "lifetime_return_amount",
             "visits_30d", "revenue_30d", "returns_30d", "avg_check", "visits_this_month")
    return {n: view.raw(n) for n in names}


def test_initialize_is_empty() -> None:
    s = initialize("c-1")
    assert s.client_id == "c-1" and not s.has_purchase and s.visits == 0 and s.revenue == 0
    assert canonical(s) == canonical(loads(dumps(s)))


def test_lifetime_visits_and_revenue() -> None:
    s, outcomes = run([rcpt("a", T0, "100.00"), rcpt("b", T0 + DAY, 200.5),
                       rcpt("c", T0 + 2 * DAY, "300")])
    assert outcomes == [Outcome.APPLIED] * 3
    assert (s.visits, s.revenue, s.returns) == (3, 60050, 0)
    assert (s.first_purchase, s.last_purchase, s.max_seen) == (T0, T0 + 2 * DAY, T0 + 2 * DAY)
    assert s.currency == "RUB" and s.last_store == "s-1"
    r = result(s, T0 + 2 * DAY)
    assert r["lifetime_visits"] == 3 and r["lifetime_revenue"] == 60050
    assert r["visits_30d"] == 3 and r["revenue_30d"] == 60050
    assert r["avg_check"] == pytest.approx(60050 / 3)


def test_late_receipt_moves_first_purchase_back() -> None:
    s, _ = run([rcpt("b", T0 + 5 * DAY), rcpt("a", T0)])
    assert (s.first_purchase, s.last_purchase, s.max_seen) == (T0, T0 + 5 * DAY, T0 + 5 * DAY)


def test_returns_are_net_revenue() -> None:
    s, _ = run([rcpt("a", T0, "500.00"),
                rcpt("ret", T0 + DAY, "200.00", kind="return", original="a")])
    assert (s.visits, s.revenue, s.returns, s.return_amount) == (1, 30000, 1, 20000)
    r = result(s, T0 + DAY)
    assert r["revenue_30d"] == 30000 and r["returns_30d"] == 1 and r["visits_30d"] == 1
    assert r["lifetime_return_amount"] == 20000


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_full_return_cancels_the_visit_in_any_order(order: tuple[int, ...]) -> None:
    stream = [rcpt("a", T0, "500.00"), rcpt("b", T0 + 3 * DAY, "120.00"),
              rcpt("ret-a", T0 + DAY, "500.00", kind="return", original="a")]
    s, _ = run([stream[i] for i in order])
    assert (s.visits, s.revenue, s.returns, s.return_amount) == (1, 12000, 1, 50000)
    r = result(s, T0 + 3 * DAY)
    assert r["visits_30d"] == 1 and r["revenue_30d"] == 12000 and r["visits_this_month"] == 1
    reference, _ = run(stream)
    assert canonical(s) == canonical(reference)


def test_full_return_across_months_cancels_the_sales_month() -> None:
    sale = rcpt("a", ts("2026-02-28T12:00:00Z"), "500.00")
    ret = rcpt("ret", ts("2026-03-01T12:00:00Z"), "500.00", kind="return", original="a")
    one, _ = run([sale, ret])
    two, _ = run([ret, sale])
    assert canonical(one) == canonical(two)
    feb, mar = 2026 * 12 + 1, 2026 * 12 + 2
    assert one.months == {feb: [0, 50000], mar: [0, -50000]}
    assert one.visits == 0 and one.revenue == 0


@pytest.mark.parametrize("return_first", [False, True])
def test_partial_return_does_not_cancel(return_first: bool) -> None:
    sale = rcpt("a", T0, "500.00")
    ret = rcpt("ret", T0 + DAY, "499.99", kind="return", original="a")
    s, _ = run([ret, sale] if return_first else [sale, ret])
    assert (s.visits, s.revenue) == (1, 1)
    assert result(s, T0 + DAY)["visits_30d"] == 1


def test_full_amount_return_without_original_does_not_cancel() -> None:
    s, _ = run([rcpt("a", T0, "500.00"), rcpt("ret", T0 + DAY, "500.00", kind="return")])
    assert (s.visits, s.revenue, s.returns) == (1, 0, 1)


def test_two_full_returns_of_one_sale_cancel_it_once() -> None:
    sale, b = rcpt("a", T0, "500.00"), rcpt("b", T0, "100.00")
    r1 = rcpt("ret1", T0 + DAY, "500.00", kind="return", original="a")
    r2 = rcpt("ret2", T0 + DAY, "500.00", kind="return", original="a")
    states = [run(list(p))[0] for p in itertools.permutations([sale, b, r1, r2])]
    assert {canonical(s) for s in states} == {canonical(states[0])}
    assert states[0].visits == 1 and states[0].revenue == 10000 - 50000


def test_duplicates_are_counted_once() -> None:
    stream = [rcpt("a", T0, "100.00"), rcpt("ret", T0 + DAY, "30.00", kind="return",
                                           original="a")]
    once, _ = run(stream)
    twice, outcomes = run(stream + stream)
    assert outcomes == [Outcome.APPLIED] * 2 + [Outcome.DUPLICATE] * 2
    assert dumps(once) == dumps(twice)
    # a resend with the same type, business day and total is the same receipt
    again, outcome = apply_receipt(twice, rcpt("a", T0 + 3600, "100.00"), UTC_CAL)
    assert outcome is Outcome.DUPLICATE and dumps(again) == dumps(once)


@pytest.mark.parametrize(("when", "total", "kind"), [
    (T0 + 2 * DAY, "100.00", "sale"), (T0, "999.00", "sale"), (T0, "100.00", "return")])
def test_a_reused_receipt_id_with_other_contents_is_rejected(when: int, total: str, kind: str) -> None:
    state, _ = run([rcpt("a", T0, "100.00")])
    before = dumps(state)
    with pytest.raises(RejectedInput) as err:
        apply_receipt(state, rcpt("a", when, total, kind=kind), UTC_CAL)
    assert (err.value.reason, err.value.field) == ("conflicting_duplicate", "receipt_id")
    assert dumps(state) == before


def test_duplicate_via_engine() -> None:
    eng = engine("boostfeel")
    s, _ = feed(eng, [rcpt("a", T0)])
    res = eng.receipt(s, rcpt("a", T0))
    assert res.outcome is Outcome.DUPLICATE and res.events == []
    assert eng.receipt(None, rcpt("x", T0, client=None)).outcome is Outcome.ANONYMOUS


def test_a_receipt_of_any_age_is_folded_in_once() -> None:
    """Older than the horizon and the month buckets: lifetime totals and first purchase; in
    the buckets' range: its month too; a POS retry of it is a duplicate."""
    newest = ts("2026-03-10T12:00:00+03:00")
    s, _ = run([rcpt("new", newest, "100.00")], MSK_CAL)
    s, outcome = apply_receipt(s, rcpt("old", ts("2024-01-15T10:00:00+03:00"), "7.00"), MSK_CAL)
    assert outcome is Outcome.APPLIED
    assert (s.visits, s.revenue) == (2, 10700)
    assert s.first_purchase == ts("2024-01-15T10:00:00+03:00")
    assert set(s.months) == {MSK_CAL.month(newest)}  # 2024-01 is beyond the 14 buckets
    s, outcome = apply_receipt(s, rcpt("mid", ts("2025-12-01T10:00:00+03:00"), "3.00"), MSK_CAL)
    assert set(s.months) == {MSK_CAL.month(newest), MSK_CAL.month(ts("2025-12-01T10:00:00+03:00"))}
    for rid in ("old", "mid"):
        again = rcpt(rid, ts("2024-01-15T10:00:00+03:00" if rid == "old" else "2025-12-01T10:00:00+03:00"),
                     "7.00" if rid == "old" else "3.00")
        s, outcome = apply_receipt(s, again, MSK_CAL)
        assert outcome is Outcome.DUPLICATE
    assert (s.visits, s.revenue) == (3, 11000)
    assert s.max_seen == newest and s.last_purchase == newest


def test_a_business_day_before_1970_is_too_old() -> None:
    """Days are stored as unsigned 16-bit numbers from 1970-01-01 (business time zone)."""
    ny = BusinessCalendar("America/New_York")
    with pytest.raises(RejectedInput) as info:
        apply_receipt(initialize("c-1"), rcpt("a", ts("1970-01-01T03:00:00Z")), ny)
    assert info.value.reason == "too_old_timestamp"
    s, outcome = apply_receipt(initialize("c-1"), rcpt("a", ts("1970-01-01T03:00:00Z")), UTC_CAL)
    assert outcome is Outcome.APPLIED and s.sales[0][1] == 0


def test_duplicate_inside_horizon_wins_over_rejection() -> None:
    s, _ = run([rcpt("a", T0), rcpt("b", T0 + 34 * DAY)])
    s, outcome = apply_receipt(s, rcpt("a", T0), UTC_CAL)
    assert outcome is Outcome.DUPLICATE


def test_old_rows_are_pruned_once_input_is_in_order() -> None:
    """Rows leave with the horizon only after HORIZON_DAYS receipts in a row in order; a
    receipt more than SLACK_DAYS behind the newest restarts the count."""
    s, _ = run([rcpt("a", T0, "10.00"), rcpt("b", T0 + 40 * DAY, "20.00")])
    assert len(s.sales) == 2 and s.streak == 2  # kept: input has not been in order for long
    daily = [rcpt(f"d{i}", T0 + (41 + i) * DAY) for i in range(HORIZON_DAYS)]
    s, _ = run(daily, UTC_CAL, s)
    assert s.streak == HORIZON_DAYS + 2
    assert min(row[1] for row in s.sales) == UTC_CAL.day(T0 + (41 + HORIZON_DAYS) * DAY) - HORIZON_DAYS
    assert (s.visits, s.first_purchase) == (2 + HORIZON_DAYS, T0)
    s, _ = apply_receipt(s, rcpt("late", T0 + 20 * DAY), UTC_CAL)
    assert s.streak == 0 and s.visits == 3 + HORIZON_DAYS
    r = result(s, T0 + (41 + HORIZON_DAYS) * DAY)
    assert r["lifetime_visits"] == 3 + HORIZON_DAYS


def test_last_store_is_the_latest_receipt_and_ties_are_ordered() -> None:
    s, _ = run([rcpt("a", T0 + DAY, store="s-9"), rcpt("b", T0, store="s-1")])
    assert s.last_store == "s-9"
    x, _ = run([rcpt("a", T0, store="s-2"), rcpt("b", T0, store="s-7")])
    y, _ = run([rcpt("b", T0, store="s-7"), rcpt("a", T0, store="s-2")])
    assert x.last_store == y.last_store == "s-7"


def test_apply_profile_keeps_the_newest_update() -> None:
    s = initialize("c-1")
    new = parse_profile({"client_id": "c-1", "updated_at": "2026-03-02T00:00:00Z",
                         "gender": "f", "birth_date": "1990-05-17",
                         "welcome_bonus_at": "2026-03-01T00:00:00Z"}, None)
    old = parse_profile({"client_id": "c-1", "updated_at": "2026-03-01T00:00:00Z",
                         "gender": "m", "city": "Kazan"}, None)
    s = apply_profile(apply_profile(s, new), old)
    assert s.profile == {"gender": "f", "birth_date": "1990-05-17",
                         "welcome_bonus_at": ts("2026-03-01T00:00:00Z")}
    assert s.profile_at == ts("2026-03-02T00:00:00Z")
    unstamped = parse_profile({"client_id": "c-1", "city": "Omsk"}, None)
    assert apply_profile(s, unstamped).profile["city"] == "Omsk"


def test_dumps_loads_round_trip() -> None:
    eng = engine(*preset_names())  # UTC: next_due overflows east of UTC (see test_presets)
    s, _ = feed(eng, [
        rcpt("a", T0, "450.10", items=[{"category": "coffee", "amount": "450.10"}]),
        rcpt("b", T0 + DAY, "100.00", store="s-2"),
        rcpt("ret", T0 + 2 * DAY, "100.00", kind="return", original="b"),
    ])
    s = eng.profile(s, parse_profile({"client_id": "c-1", "birth_date": "1990-05-17",
                                      "tags": ["vip"]}, None)).state
    assert s is not None and s.segments
    raw = dumps(s)
    back = loads(raw)
    assert dumps(back) == raw
    for name in ClientState.__slots__:  # type: ignore[attr-defined]
        if name not in ("sales", "rets", "seen"):  # seen: derived, rebuilt on first use
            assert getattr(back, name) == getattr(s, name), name
    assert sorted(back.sales) == sorted(s.sales) and sorted(back.rets) == sorted(s.rets)
    assert eng.segments(back) == eng.segments(s)
    assert eng.metrics(back, T0 + 3 * DAY) == eng.metrics(s, T0 + 3 * DAY)
    assert eng.next_due(back) == eng.next_due(s)


def _days(state: ClientState, cal: BusinessCalendar = UTC_CAL) -> tuple[int, float]:
    view = MetricView(state, (state.max_seen or T0) + DAY, cal)
    return view.raw("purchase_days"), view.raw("mean_interval_days")


def test_purchase_days_count_days_with_a_visit() -> None:
    two_receipts = [rcpt("a", T0, "100.00"), rcpt("b", T0 + 3600, "50.00")]
    s, _ = run(two_receipts)
    assert s.visits == 2 and _days(s) == (1, 0.0)
    s, _ = run([*two_receipts, rcpt("c", T0 + 10 * DAY), rcpt("d", T0 + 30 * DAY)])
    assert _days(s) == (3, 15.0)
    # the full return of one of the day's two sales leaves the day; of both, the day goes
    one_back = rcpt("ra", T0 + DAY, "100.00", kind="return", original="a")
    s, _ = run([*two_receipts, rcpt("c", T0 + 10 * DAY), one_back])
    assert s.visits == 2 and _days(s) == (2, 10.0)
    both_back = [one_back, rcpt("rb", T0 + DAY, "50.00", kind="return", original="b")]
    s, _ = run([*two_receipts, rcpt("c", T0 + 10 * DAY), *both_back])
    assert s.visits == 1 and _days(s) == (1, 0.0) and s.pday0 == UTC_CAL.day(T0 + 10 * DAY)
    # a partial return or one 35 days later cancels nothing
    s, _ = run([*two_receipts, rcpt("rp", T0 + DAY, "99.99", kind="return", original="a"),
                rcpt("rl", T0 + 35 * DAY, "50.00", kind="return", original="b")])
    assert _days(s) == (1, 0.0) and s.visits == 2


def test_purchase_days_are_business_days() -> None:
    # 23:30 and 00:30 UTC: two days in UTC, one in Moscow (02:30 and 03:30)
    receipts = [rcpt("a", ts("2026-03-02T23:30:00Z")), rcpt("b", ts("2026-03-03T00:30:00Z"))]
    assert _days(run(receipts)[0]) == (2, 1.0)
    assert _days(run(receipts, MSK_CAL)[0], MSK_CAL) == (1, 0.0)


def test_purchase_days_stored_compactly() -> None:
    one, _ = run([rcpt("a", T0)])
    assert b',"d":"' in dumps(one) and len(dumps(one)) - len(dumps(_without_days(one))) == 11
    # three years of daily visits: deflated to a few bytes
    s, _ = run(_three_years_daily(), MSK_CAL, initialize("c-0000001"))
    assert _days(s, MSK_CAL) == (3 * 365, 1.0)
    assert len(dumps(s)) - len(dumps(_without_days(s))) <= 24
    for state in (one, s):
        back = loads(dumps(state))
        assert (back.pdays, back.pday0) == (state.pdays, state.pday0)


def _without_days(state: ClientState) -> ClientState:
    copy = loads(dumps(state))
    copy.pdays = -1
    return copy


def test_a_record_written_before_purchase_days_gets_them_from_its_rows() -> None:
    s, _ = run([rcpt("a", T0), rcpt("b", T0 + 3600), rcpt("c", T0 + 4 * DAY)])
    old = _without_days(s)
    assert b'"d"' not in dumps(old) and loads(dumps(old)).pdays == -1
    assert _days(old) == _days(s) == (2, 4.0)
    after, _ = run([rcpt("d", T0 + 6 * DAY)], state=loads(dumps(old)))
    assert b'"d"' in dumps(after) and _days(after) == (3, 3.0)


def test_loads_rejects_other_versions() -> None:
    with pytest.raises(ValueError, match="version"):
        loads(b'{"v": 99, "id": "c-1"}')


def _three_years_daily() -> list[Receipt]:
    start = ts("2023-03-01T09:30:00+03:00")
    items = [{"category": "coffee", "amount": "300.00"},
             {"category": "dessert", "amount": "200.50"},
             {"category": "food", "amount": "150.00"}]
    return [rcpt(f"r-0000001-{i}", start + i * DAY, "650.50", client="c-0000001", store="s-12",
                 items=items) for i in range(3 * 365)]


def test_three_years_of_daily_visits_fit_in_2kib() -> None:
    stream = _three_years_daily()
    s, outcomes = run(stream, MSK_CAL, initialize("c-0000001"))
    assert set(outcomes) == {Outcome.APPLIED}
    assert s.visits == 3 * 365 and s.revenue == 3 * 365 * 65050
    assert len(s.sales) == HORIZON_DAYS and len(s.months) == 14 and len(s.cats) == 3
    assert len(dumps(s)) <= 2048


def test_three_years_with_every_preset_segment_fit_in_2kib() -> None:
    eng = engine(*preset_names(), tz=MSK)
    s, _ = feed(eng, _three_years_daily())
    # dimensions that read the population (abc, rfm_quantiles, profsalon) wait for a snapshot
    agg = population.initialize(eng.spec)
    population.update(eng.spec, agg, MetricView(s, s.clock, eng.cal))
    snap = population.snapshot(eng.spec, s.clock + 3600, agg)
    assert snap is not None
    eng.set_population(snap)
    eng.catch_up(s)
    assert len(s.segments) == len(eng.dims)  # every dimension of every preset
    # 2 KiB for the 14 dimensions of the first ten presets, ~40 bytes per dimension since
    # (its id, segment, since, previous): measured 2138 bytes with 16
    assert len(dumps(s)) <= 2048 + 48 * (len(eng.dims) - 14)


def test_dedupe_set_stays_in_step_with_the_horizon() -> None:
    """``seen`` (derived, not serialized) always holds exactly the hashes of the kept rows,
    through pruning, returns, duplicates and a serialization round trip."""
    from app.batch.simulate import SimConfig, generate
    from rules import loads as decode
    from rules import parse_receipt
    from rules.record.state import receipt_hash

    states: dict[str, ClientState] = {}
    for n, line in enumerate(itertools.islice(generate(SimConfig(clients=40, days=120, seed=3)), 4000)):
        try:
            r = parse_receipt(decode(line), None)
            if r.client_id is None:
                continue
            state = states.get(r.client_id) or initialize(r.client_id)
            if n % 500 == 0:  # now and then a record comes back from the table
                state = loads(dumps(state))
            states[r.client_id] = apply_receipt(state, r, MSK_CAL)[0]
        except RejectedInput:
            continue
        s = states[r.client_id]
        assert s.seen == {row[0] for row in s.sales} | {row[0] for row in s.rets}
        assert receipt_hash(r.receipt_id) in s.seen
    assert any(s.rets for s in states.values())

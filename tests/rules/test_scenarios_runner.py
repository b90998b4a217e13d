"""Scenario decisions over change events and receipts: one action per eligible trigger,
redelivery, cooldown, caps of unanswered attempts, quiet hours, expiry, conversions."""

from __future__ import annotations

from typing import Any

from rules_testkit import DAY, MSK, rcpt, ts
from test_scenarios import BASE, change, scenario

from rules.calendar import iso
from rules.scenario.policy import ContactPolicy
from rules.scenario_state import (
    ACTION_TYPE,
    CONVERSION_TYPE,
    ClientScenarios,
    ScenarioRunner,
    Step,
    action_id,
    conversion_id,
    dumps,
    ledger,
    loads,
)
from rules.scenarios import Scenario

NOON = ts("2026-03-02T12:00:00+03:00")  # a Monday, 12:00 in Moscow
METRICS = {"days_since_last_purchase": 20, "visits_30d": 0, "avg_check_30d": "0.00"}


class Client:
    """Feeds one client's receipts and change events to a runner, through a serialized state."""

    def __init__(self, *scenarios: Scenario, tz: str = MSK, client: str = "c-1",
                 policy: ContactPolicy | None = None) -> None:
        self.runner = ScenarioRunner(list(scenarios) or [scenario()], tz=tz, policy=policy)
        self.client = client
        self.raw: bytes | None = None
        self.actions: list[dict[str, Any]] = []
        self.conversions: list[dict[str, Any]] = []
        self.skipped: list[tuple[str, str]] = []

    @property
    def state(self) -> ClientScenarios:
        assert self.raw is not None
        return loads(self.raw)

    def _keep(self, state: ClientScenarios | None, step: Step) -> Step:
        if step.changed and state is not None:
            self.raw = dumps(state)  # what the agent stores in its table
        self.actions += step.actions
        self.conversions += step.conversions
        self.skipped += step.skipped
        return step

    def buy(self, when: int, total: str = "400.00", rid: str | None = None, kind: str = "sale") -> Step:
        r = rcpt(rid or f"r-{when}", when, total, client=self.client, kind=kind)
        state, step = self.runner.receipt(loads(self.raw) if self.raw else None, r)
        return self._keep(state, step)

    def history(self, visits: int, total: str = "400.00", last: int = NOON - 30 * DAY) -> None:
        for i in range(visits):
            self.buy(last - i * DAY, total)

    def event(self, event: dict[str, Any], now: int | None = None) -> Step:
        state, step = self.runner.change(loads(self.raw) if self.raw else None, event, now)
        return self._keep(state, step)

    def trigger(self, at: int, to: str = "at_risk", frm: str | None = "loyal", **kw: Any) -> Step:
        now = kw.pop("now", None)
        metrics = kw.pop("metrics", METRICS)
        return self.event(change(to, at, frm, client=self.client, metrics=metrics, **kw), now)


def test_one_action_per_eligible_trigger_with_a_deterministic_id() -> None:
    c = Client()
    c.history(10, "400.00")  # LTV 4000, avg check 400
    event = change("at_risk", NOON, "loyal", metrics=METRICS)
    step = c.event(event)
    assert [a["id"] for a in step.actions] == [action_id(event["id"], "demo")]
    action = step.actions[0]
    assert action["type"] == ACTION_TYPE and action["subject"] == "c-1"
    assert action["specversion"] == "1.0" and action["time"] == iso(NOON)
    data = action["data"]
    assert data["reward"] == "180.00"  # 0.3 * (400 + 0.05 * 4000)
    assert data["inputs"] == {"lifetime_visits": 10, "avg_check": 400.0, "lifetime_value": 4000.0}
    assert data["trigger"] == {"id": event["id"], "dimension": "boostfeel", "from": "loyal",
                               "to": "at_risk", "ruleset": "boostfeel", "time": event["time"]}
    assert data["attempt"] == 1 and data["template"] == "winback_v1" and data["offer"] == "bonus"
    assert data["expires_at"] == data["respond_by"] == iso(NOON + 14 * DAY)
    # another client's runner over the same inputs computes the very same action
    again = Client()
    again.history(10, "400.00")
    assert again.event(event).actions == step.actions


def test_redelivered_trigger_gives_nothing() -> None:
    c = Client()
    c.history(5)
    event = change("at_risk", NOON, "loyal", metrics=METRICS)
    assert len(c.event(event).actions) == 1
    for _ in range(3):  # redelivery after a restart: the stored state remembers the trigger
        step = c.event(event)
        assert step.actions == [] and step.skipped == [("demo", "duplicate")]
    assert len(c.actions) == 1 and c.state.seen == [event["id"][:16]]


def test_unmatched_changes_leave_the_state_alone() -> None:
    runner = ScenarioRunner([scenario()])
    state, step = runner.change(None, change("vip", NOON, "loyal"))
    assert state is None and step == Step()
    state, step = runner.change(None, change("at_risk", NOON, "loyal", dimension="netix"))
    assert state is None and not step.changed


def test_ineligible_and_missing_metrics_are_skipped_with_a_reason() -> None:
    c = Client()
    c.buy(NOON - 30 * DAY)  # one visit: lifetime_visits >= 2 fails
    c.trigger(NOON)
    assert c.actions == [] and c.skipped == [("demo", "ineligible")]
    needs_30d = scenario(**{"lifetime_visits >= 2": "visits_30d == 0"})
    d = Client(needs_30d)
    d.trigger(NOON, metrics={"days_since_last_purchase": 20})
    assert d.skipped == [("demo", "missing_metric")]


def test_cooldown_per_client_and_scenario() -> None:
    c = Client(scenario(**{"max_unanswered: 3": "max_unanswered: 0"}))
    c.history(5)
    made = []
    for day in (0, 10, 29, 30, 45, 61):
        step = c.trigger(NOON + day * DAY)
        made.append((day, len(step.actions), step.skipped))
    assert made == [(0, 1, []), (10, 0, [("demo", "cooldown")]), (29, 0, [("demo", "cooldown")]),
                    (30, 1, []), (45, 0, [("demo", "cooldown")]), (61, 1, [])]
    other = Client(scenario(**{"max_unanswered: 3": "max_unanswered: 0"}), client="c-2")
    other.history(5)
    assert len(other.trigger(NOON + 10 * DAY).actions) == 1  # another client: no cooldown


def test_stop_after_unanswered_attempts_and_resume_after_a_conversion() -> None:
    sc = scenario(**{"cooldown_days: 30": "cooldown_days: 7", "max_unanswered: 3": "max_unanswered: 2"})
    c = Client(sc)
    c.history(5)
    log = []
    for day in (0, 20, 40, 60):  # nobody answers: attempts 1, 2, then capped
        step = c.trigger(NOON + day * DAY)
        log.append([a["data"]["attempt"] for a in step.actions] or [r for _, r in step.skipped])
    assert log == [[1], [2], ["capped"], ["capped"]]
    # a purchase outside every window converts nothing and does not lift the cap
    c.buy(NOON + 65 * DAY)
    assert c.conversions == [] and c.trigger(NOON + 70 * DAY).skipped == [("demo", "capped")]


def test_a_conversion_ends_the_run_of_unanswered_attempts() -> None:
    sc = scenario(**{"cooldown_days: 30": "cooldown_days: 7", "max_unanswered: 3": "max_unanswered: 2"})
    c = Client(sc)
    c.history(5)
    first = c.trigger(NOON).actions[0]
    c.trigger(NOON + 20 * DAY)
    c.buy(NOON + 25 * DAY)  # 5 days after the second attempt: converts it
    assert [v["data"]["action_id"] for v in c.conversions] == [c.actions[1]["id"]]
    assert first["id"] not in {v["data"]["action_id"] for v in c.conversions}
    step = c.trigger(NOON + 40 * DAY)
    assert [a["data"]["attempt"] for a in step.actions] == [1]


def test_an_attempt_still_in_its_window_counts_as_unanswered_so_far() -> None:
    sc = scenario(**{"cooldown_days: 30": "cooldown_days: 0", "max_unanswered: 3": "max_unanswered: 1"})
    c = Client(sc)
    c.history(5)
    assert len(c.trigger(NOON).actions) == 1
    assert c.trigger(NOON + 3 * DAY).skipped == [("demo", "capped")]


def test_conversion_window_and_what_counts_as_a_purchase() -> None:
    c = Client()
    c.history(5)
    action = c.trigger(NOON).actions[0]
    assert c.buy(NOON, rid="same-instant").conversions == []  # not after the action
    assert c.buy(NOON + 2 * DAY, "50.00", kind="return").conversions == []  # a return is no purchase
    step = c.buy(NOON + 3 * DAY + 3600, rid="r-back")
    assert [v["id"] for v in step.conversions] == [conversion_id(action["id"])]
    conv = step.conversions[0]
    assert conv["type"] == CONVERSION_TYPE and conv["time"] == iso(NOON + 3 * DAY + 3600)
    assert conv["data"] == {"client_id": "c-1", "scenario": "demo", "action_id": action["id"],
                            "action_time": iso(NOON), "receipt_id": "r-back",
                            "purchased_at": iso(NOON + 3 * DAY + 3600), "days_after": 3,
                            "campaign": None, "amount": "400.00"}
    assert c.buy(NOON + 4 * DAY).conversions == []  # converted once
    late = Client(client="c-2")
    late.history(5)
    late.trigger(NOON)
    assert late.buy(NOON + 14 * DAY + 1).conversions == []  # the window is 14 days


def test_a_sale_seen_before_its_action_converts_it_when_the_action_is_made() -> None:
    # the receipt reaches the scenario state before the time-based change it follows in event
    # time (the engine fires the due change, then applies the receipt): still a conversion
    c = Client()
    c.history(5)
    c.buy(NOON + 2 * DAY, rid="r-after")
    step = c.trigger(NOON)
    assert [v["data"]["receipt_id"] for v in step.conversions] == ["r-after"]
    assert step.actions[0]["data"]["inputs"]["lifetime_visits"] == 5  # ledger as of the trigger


def test_ledger_dedupes_receipts_and_reads_as_of_an_instant() -> None:
    c = Client()
    c.buy(NOON - 10 * DAY, "300.00", rid="a")
    c.buy(NOON - 10 * DAY, "300.00", rid="a")  # duplicate send
    c.buy(NOON - 5 * DAY, "500.00", rid="b")
    c.buy(NOON - 4 * DAY, "100.00", rid="ret", kind="return")
    c.buy(NOON + DAY, "1000.00", rid="c")
    s = c.state
    assert (s.revenue, s.visits, s.exponent) == (170000, 3, 2)
    assert ledger(s, NOON) == {"lifetime_value": 700.0, "lifetime_revenue": 700.0,
                               "lifetime_visits": 2, "avg_check": 350.0}
    assert ledger(s, NOON + DAY)["lifetime_value"] == 1700.0


def test_quiet_hours_move_the_action_and_the_cooldown_counts_from_there() -> None:
    sc = scenario(**{"max_unanswered: 3": "max_unanswered: 3\nquiet_hours: {start: '22:00', end: '09:00'}"})
    c = Client(sc)
    c.history(5)
    late = ts("2026-03-03T23:40:00+03:00")
    action = c.trigger(late).actions[0]
    assert action["time"] == action["data"]["send_at"] == "2026-03-04T06:00:00Z"  # 09:00 MSK
    assert action["data"]["trigger"]["time"] == iso(late)
    assert action["data"]["respond_by"] == "2026-03-18T06:00:00Z"
    # a purchase during the quiet hours, before the message went out, is not its conversion
    assert c.buy(ts("2026-03-04T08:00:00+03:00")).conversions == []
    assert len(c.buy(ts("2026-03-04T10:00:00+03:00")).conversions) == 1


def test_expiry_campaign_window_and_stale_triggers() -> None:
    sc = scenario(**{"max_unanswered: 3": "max_unanswered: 3\nexpires_days: 7\nresponse_days: 10\n"
                     "valid_from: 2026-03-01T00:00:00+03:00\nvalid_until: '2026-04-01T00:00:00+03:00'\n"
                     "max_age_hours: 48"})
    assert (sc.expires_days, sc.response_days) == (7, 10)
    c = Client(sc)
    c.history(5, last=NOON - 40 * DAY)
    assert c.trigger(ts("2026-02-28T12:00:00+03:00")).skipped == [("demo", "inactive")]
    assert c.trigger(ts("2026-04-01T00:00:00+03:00")).skipped == [("demo", "expired")]
    assert c.trigger(NOON, now=NOON + 49 * 3600).skipped == [("demo", "stale")]
    action = c.trigger(NOON + DAY, now=NOON + DAY + 3600).actions[0]["data"]
    assert action["expires_at"] == iso(NOON + 8 * DAY) and action["respond_by"] == iso(NOON + 11 * DAY)


def test_several_scenarios_on_one_trigger_each_act_once() -> None:
    other = scenario(BASE.replace("scenario: demo", "scenario: other"),
                     **{"  reward: margin * (avg_check + ltv_share * lifetime_value)\n": "",
                        '  floor: "100.00"\n  cap: "1500.00"\n': ""})
    c = Client(scenario(), other)
    c.history(5)
    event = change("at_risk", NOON, "loyal", metrics=METRICS)
    step = c.event(event)
    assert sorted((a["data"]["scenario"], a["data"]["reward"]) for a in step.actions) == [
        ("demo", "150.00"), ("other", None)]
    assert {a["id"] for a in step.actions} == {action_id(event["id"], "demo"), action_id(event["id"], "other")}
    assert c.event(event).skipped == [("demo", "duplicate"), ("other", "duplicate")]


def test_state_round_trips_and_stays_bounded() -> None:
    c = Client(scenario(**{"cooldown_days: 30": "cooldown_days: 0", "max_unanswered: 3": "max_unanswered: 0"}),
               policy=ContactPolicy.unlimited())  # hourly actions: far over the default caps
    for i in range(100):
        c.buy(NOON + i * 3600, rid=f"r{i}")
        c.trigger(NOON + i * 3600 + 1800, frm=f"s{i}")
    s = c.state
    assert loads(dumps(s)) == s
    assert len(s.ids) == 100 and len(s.seen) == 64 and len(s.attempts["demo"]) == 12  # 100 hours: in the horizon
    assert s.receipts == [] and s.watermark == NOON + 99 * 3600 + 1800  # all before the last trigger
    assert s.visits == 100 and len(c.actions) == 99  # the first trigger: one visit, ineligible


def test_positions_skip_redelivery_however_far_back_a_restart_rewinds() -> None:
    runner = ScenarioRunner([scenario()], tz=MSK)
    receipts = [rcpt(f"r{i}", NOON - (100 - i) * DAY, "400.00") for i in range(100)]
    state: ClientScenarios | None = None
    for offset, r in enumerate(receipts):
        state, _ = runner.receipt(state, r, seq=offset)
    assert state is not None and state.visits == 100
    for offset, r in enumerate(receipts):  # the whole partition again, from offset 0
        state, step = runner.receipt(state, r, seq=offset)
        assert not step.changed
    assert (state.visits, state.revenue) == (100, 4_000_000)
    events = [change("at_risk", NOON + i * 40 * DAY, f"s{i}", metrics=METRICS) for i in range(3)]
    made = []
    for offset, e in enumerate(events, 500):
        state, step = runner.change(state, e, None, seq=offset)
        made += step.actions
    assert len(made) == 3
    state, step = runner.change(state, events[0], None, seq=500)
    assert step.actions == [] and step.skipped == [("demo", "duplicate")]


def test_receipts_read_far_ahead_of_the_changes_they_cause() -> None:
    # a backfill: the worker sees all of a client's receipts before its change events
    c = Client()
    for i in range(10):
        c.buy(NOON - (10 - i) * DAY, "400.00", rid=f"before-{i}")
    for i in range(100):
        c.buy(NOON + DAY + i * DAY, "1000.00", rid=f"after-{i}")
    step = c.trigger(NOON)
    # the ledger as of the trigger: 10 visits at 400, none of the 100 later ones
    assert step.actions[0]["data"]["inputs"] == {"lifetime_visits": 10, "avg_check": 400.0,
                                                 "lifetime_value": 4000.0}
    assert [v["data"]["receipt_id"] for v in step.conversions] == ["after-0"]
    assert len(c.state.receipts) == 100 and c.state.watermark == NOON


def test_receipts_sent_again_far_apart_count_once_within_the_horizon() -> None:
    # the router re-publishes a whole batch after a restart: same receipts, new positions
    runner = ScenarioRunner([scenario()], tz=MSK)
    receipts = [rcpt(f"r{i}", NOON + i * 3 * 3600, "400.00") for i in range(200)]  # 25 days
    state: ClientScenarios | None = None
    for offset, r in enumerate(receipts + receipts):
        state, _ = runner.receipt(state, r, seq=offset)
    assert state is not None and (state.visits, state.revenue) == (200, 8_000_000)
    # a receipt older than the engine's retention horizon is ignored, as the engine rejects it
    state, _ = runner.receipt(state, rcpt("old", NOON - 20 * DAY, "999.00"), seq=1000)
    assert state.visits == 200
    state, _ = runner.receipt(state, rcpt("late", NOON - 2 * DAY, "100.00"), seq=1001)
    assert state.visits == 201

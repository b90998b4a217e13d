"""Worked examples of every preset scenario: receipts through the engine and the scenario
runner in the order the worker sees them (a receipt, then the changes it causes)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from rules_testkit import DAY, MSK, rcpt, ts
from test_scenarios import PRESETS, preset

from rules import ClientState, Engine, load_ruleset
from rules.calendar import iso
from rules.scenario_state import ClientScenarios, ScenarioRunner, Step

NOON = ts("2026-01-05T12:00:00+03:00")


class Shop:
    """One client, one engine, one scenario runner; plain loops, no Kafka."""

    def __init__(self, ruleset: str, scenario: str, client: str = "c-1") -> None:
        # profsalon with a fixed average check (its own needs population snapshots)
        fixed = {"salon_avg_check": 2000.0} if ruleset == "profsalon" else None
        self.engine = Engine([load_ruleset(ruleset, fixed)], tz=MSK)
        self.runner = ScenarioRunner([preset(scenario)], tz=MSK)
        self.client = client
        self.state: ClientState | None = None
        self.sc: ClientScenarios | None = None
        self.changes: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.conversions: list[dict[str, Any]] = []
        self.skipped: list[tuple[str, str]] = []

    def _keep(self, step: Step) -> None:
        self.actions += step.actions
        self.conversions += step.conversions
        self.skipped += step.skipped

    def _changes(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.changes.append(e)
            self.sc, step = self.runner.change(self.sc, e)
            self._keep(step)

    def buy(self, when: int, total: str) -> None:
        r = rcpt(f"r-{self.client}-{when}", when, total, client=self.client)
        self.sc, step = self.runner.receipt(self.sc, r)
        self._keep(step)
        result = self.engine.receipt(self.state, r)
        self.state = result.state
        self._changes(result.events)

    def wait(self, until: int) -> None:
        assert self.state is not None
        self._changes(self.engine.advance(self.state, until))

    def rewards(self) -> list[tuple[str, str | None]]:
        return [(a["time"], a["data"]["reward"]) for a in self.actions]


def test_every_preset_has_a_worked_example_here() -> None:
    covered = {"win_back_at_risk", "welcome_potentially_loyal", "third_visit_free",
               "remind_lapsing_netix", "remind_lapsing_rfm", "vip_status", "win_back_churn_risk"}
    assert covered == set(PRESETS)


@pytest.mark.parametrize(("visits", "check", "reward"), [
    (30, "400.00", "300.00"),  # LTV 12000: 0.3 * (400 + 600)
    (10, "250.00", "112.50"),  # LTV 2500: 0.3 * (250 + 125)
    (5, "200.00", "100.00"),  # LTV 1000: 75.00 -> floor
    (60, "1500.00", "1500.00"),  # LTV 90000: 1800.00 -> cap
])
def test_win_back_at_risk_reward_by_ltv_and_basket(visits: int, check: str, reward: str) -> None:
    shop = Shop("boostfeel", "win_back_at_risk")
    last = NOON + (visits - 1) * DAY
    for i in range(visits):
        shop.buy(NOON + i * DAY, check)
    shop.wait(last + 25 * DAY)
    at_risk = last + 20 * DAY  # "с момента последней покупки прошли 20 дней", 12:00: not quiet
    assert shop.rewards() == [(iso(at_risk), reward)]
    data = shop.actions[0]["data"]
    assert data["trigger"]["to"] == "at_risk" and data["trigger"]["time"] == iso(at_risk)
    assert data["inputs"]["lifetime_visits"] == visits
    # coming back 5 days later converts the action
    shop.buy(at_risk + 5 * DAY, check)
    assert [c["data"]["days_after"] for c in shop.conversions] == [5]


# the paper's CDNOW parameters per day, and a spend model (v in minor units)
MODELS = {"used": "mbgnbd", "time_unit": "day", "clients": 1000, "groups": 10,
          "bgnbd": {"r": 0.243, "alpha": 30.898, "a": 0.793, "b": 2.426, "time_unit": "day"},
          "mbgnbd": {"r": 0.243, "alpha": 30.898, "a": 0.793, "b": 2.426, "time_unit": "day"},
          "gamma_gamma": {"p": 6.25, "q": 3.74, "v": 154400.0}}


@pytest.mark.parametrize(("visits", "check", "rewarded"), [
    (12, "2000.00", True),  # a weekly client: high predicted value, a reward sized by it
    (2, "300.00", False),  # predicted 12-month value under min_clv (1000): no reward
])
def test_win_back_churn_risk_reward_by_predicted_value(visits: int, check: str, rewarded: bool) -> None:
    from rules.population import Snapshot

    shop = Shop("churn_risk", "win_back_churn_risk")
    shop.engine.set_population(Snapshot(NOON - 3 * DAY, {"predictive": MODELS}, 1000))
    shop.runner.models_at = shop.engine.models_at
    for i in range(visits):
        shop.buy(NOON + 7 * i * DAY, check)
    shop.wait(NOON + 3 * 365 * DAY)
    high = [e for e in shop.changes if e["data"]["to"] == "high"]
    assert len(high) == 1
    clv = Decimal(high[0]["data"]["metrics"]["predicted_clv_12m"])
    if not rewarded:
        assert clv < 1000 and shop.actions == []
        return
    expected = min(max((Decimal("0.1") * clv).quantize(Decimal("0.01")), Decimal("100.00")), Decimal("1500.00"))
    assert clv >= 1000 and [r for _, r in shop.rewards()] == [str(expected)]
    assert shop.actions[0]["data"]["inputs"]["predicted_clv_12m"] == float(clv)


def test_win_back_leaves_one_visit_clients_to_the_welcome_scenario() -> None:
    shop = Shop("boostfeel", "win_back_at_risk")
    shop.buy(NOON, "400.00")
    shop.wait(NOON + 25 * DAY)
    assert [e["data"]["to"] for e in shop.changes] == ["other", "potentially_loyal", "at_risk"]
    assert shop.actions == [] and shop.skipped == [("win_back_at_risk", "ineligible")]


def test_welcome_bonus_for_a_potentially_loyal_client_outside_quiet_hours() -> None:
    shop = Shop("boostfeel", "welcome_potentially_loyal")
    first = ts("2026-03-03T23:40:00+03:00")  # a Tuesday, late evening
    shop.buy(first, "350.00")
    shop.wait(first + 8 * DAY)
    # potentially_loyal a week later at 23:40 (time-based) -> quiet -> Wednesday 09:00 MSK
    assert shop.changes[-1]["data"]["to"] == "potentially_loyal"
    assert shop.changes[-1]["time"] == iso(first + 7 * DAY)
    assert shop.rewards() == [("2026-03-11T06:00:00Z", "150.00")]
    data = shop.actions[0]["data"]
    assert data["unit"] == "points" and data["attributes"] == {"cashback_percent": 5}
    assert data["expires_at"] == "2026-03-25T06:00:00Z"
    shop.buy(ts("2026-03-14T10:00:00+03:00"), "300.00")  # the second purchase: converted
    assert len(shop.conversions) == 1


def test_welcome_bonus_is_for_new_clients_only() -> None:
    shop = Shop("boostfeel", "welcome_potentially_loyal")
    for when in (NOON - 80 * DAY, NOON - 60 * DAY, NOON):  # an old client, one visit this month
        shop.buy(when, "300.00")
    shop.wait(NOON + 8 * DAY)
    assert [e["data"]["to"] for e in shop.changes][-1] == "potentially_loyal"
    # welcomed once, after the very first visit; not again as a 3-visit client
    assert [a["data"]["inputs"] for a in shop.actions] == [{"lifetime_visits": 1}]
    assert shop.skipped[-1] == ("welcome_potentially_loyal", "ineligible")


@pytest.mark.parametrize(("check", "reward"), [("1800.00", "1800.00"), ("3500.00", "2000.00")])
def test_third_visit_free_for_an_irregular_salon_client(check: str, reward: str) -> None:
    shop = Shop("profsalon", "third_visit_free")
    shop.buy(ts("2026-02-10T14:00:00+03:00"), check)  # first visit: irregular
    assert shop.rewards() == [("2026-02-10T11:00:00Z", reward)]
    data = shop.actions[0]["data"]
    assert (data["offer"], data["unit"], data["attributes"]) == ("free_visit", "currency",
                                                                 {"free_visit_number": 3})
    assert data["trigger"]["from"] is None
    assert data["expires_at"] == "2026-05-11T11:00:00Z"  # 90 days to make the two visits


def test_netix_reminder_stops_after_two_unanswered_messages() -> None:
    # Ivanov came every 2 months (8 visits at 3000.00), then stopped
    shop = Shop("netix", "remind_lapsing_netix")
    visits = [NOON + i * 60 * DAY for i in range(8)]
    for when in visits:
        shop.buy(when, "3000.00")
    last = visits[-1]
    shop.wait(last + 400 * DAY)
    losing, lost = last + 91 * DAY, last + 365 * DAY  # rhythm 1.5 * 60 days; a year
    assert [(e["time"], e["data"]["to"]) for e in shop.changes[-2:]] == [
        (iso(losing), "losing"), (iso(lost), "lost")]
    # 12:00 is outside 21:00-10:00; 10% of the 3000.00 average check
    assert shop.rewards() == [(iso(losing), "300.00"), (iso(lost), "300.00")]
    assert [a["data"]["attempt"] for a in shop.actions] == [1, 2]
    # he comes back on his own after 400 days (not an answer), lapses again: no third SMS
    shop.buy(last + 400 * DAY, "3000.00")
    shop.wait(last + 700 * DAY)
    assert [e["data"]["to"] for e in shop.changes[-2:]] == ["ok", "losing"]
    assert len(shop.actions) == 2 and shop.skipped[-1] == ("remind_lapsing_netix", "capped")
    assert shop.conversions == []


def test_netix_reminder_skips_low_ltv_clients() -> None:
    shop = Shop("netix", "remind_lapsing_netix")
    for i in range(4):
        shop.buy(NOON + i * 30 * DAY, "500.00")  # LTV 2000 < 3000
    shop.wait(NOON + 300 * DAY)
    assert shop.actions == [] and ("remind_lapsing_netix", "ineligible") in shop.skipped


def test_rfm_reminder_each_drift_step_until_two_go_unanswered() -> None:
    shop = Shop("rfm", "remind_lapsing_rfm")
    visits = [NOON + i * 7 * DAY for i in range(5)]  # 5 visits at 500.00: LTV 2500, f = 2
    for when in visits:
        shop.buy(when, "500.00")
    last = visits[-1]
    shop.wait(last + 130 * DAY)
    steps = [(e["time"], e["data"]["to"]) for e in shop.changes if e["data"]["dimension"] == "rfm"]
    assert steps[-2:] == [(iso(last + 61 * DAY), "about_to_sleep"), (iso(last + 121 * DAY), "hibernating")]
    # 10% of 500.00 = 50.00 points, by email at 12:00 MSK
    assert shop.rewards() == [(iso(last + 61 * DAY), "50.00"), (iso(last + 121 * DAY), "50.00")]
    assert shop.actions[0]["data"]["channel"] == "email"


def test_rfm_reminder_answered_converts_and_resets() -> None:
    shop = Shop("rfm", "remind_lapsing_rfm")
    visits = [NOON + i * 7 * DAY for i in range(5)]
    for when in visits:
        shop.buy(when, "500.00")
    last = visits[-1]
    shop.wait(last + 70 * DAY)
    shop.buy(last + 70 * DAY, "500.00")  # 9 days after the email: converted
    assert [c["data"]["days_after"] for c in shop.conversions] == [9]
    shop.wait(last + 70 * DAY + 62 * DAY)
    assert [a["data"]["attempt"] for a in shop.actions] == [1, 1]


def test_vip_status_with_a_gift_sized_by_the_month() -> None:
    shop = Shop("boostfeel", "vip_status")
    for i in range(25):
        shop.buy(NOON + i * DAY, "450.00")
    vip_at = NOON + 24 * DAY  # the 25th visit in 30 days at an average check of 450.00
    assert [e["data"]["to"] for e in shop.changes][-1] == "vip"
    assert shop.rewards() == [(iso(vip_at), "562.50")]  # 0.05 * 450 * 25
    data = shop.actions[0]["data"]
    assert data["offer"] == "status" and data["attributes"]["status"] == "vip"
    assert data["attributes"]["cashback_percent"] == 10
    shop.buy(vip_at + DAY, "450.00")
    assert len(shop.conversions) == 1

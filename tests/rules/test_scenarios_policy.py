"""The contact policy across scenarios (issue #18 part 5): caps per client per period (per
channel and in all), suppression by labels, consent per channel, and the default maximum
trigger age; every skipped action is counted with its reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rules_testkit import DAY, MSK, ts
from test_scenarios import change, scenario

from rules import Engine, RuleSetError, load_ruleset, parse_profile
from rules.inputs.communications import Communication
from rules.record.state import ClientState, initialize
from rules.scenario.policy import ContactPolicy, over_cap
from rules.scenario.policy import loads as load_policy
from rules.scenario_state import ClientScenarios, ScenarioRunner, Step
from rules.scenarios import check_against

NOON = ts("2026-03-02T12:00:00+03:00")
METRICS = {"days_since_last_purchase": 20, "visits_30d": 0, "avg_check_30d": "0.00"}
PLAIN = {"lifetime_visits >= 2": "true", "max_unanswered: 3": "max_unanswered: 0",
         "cooldown_days: 30": "cooldown_days: 0"}


def on(channel: str, sid: str = "demo", **more: str) -> Any:
    return scenario(**PLAIN, **{"scenario: demo": f"scenario: {sid}",
                                "  template: winback_v1": f"  template: winback_v1\n  channel: {channel}"}, **more)


def client(labels: list[str] | None = None, consent: dict[str, bool] | None = None) -> ClientState:
    state = initialize("c-1")
    if labels is not None:
        state.profile["labels"] = labels
    if consent is not None:
        state.profile["consent"] = consent
    return state


def decide(runner: ScenarioRunner, state: ClientScenarios | None, at: int, who: ClientState | None,
           now: int | None = None, frm: str = "loyal") -> tuple[ClientScenarios | None, Step]:
    return runner.change(state, change("at_risk", at, frm, metrics=METRICS), now, client=who)


def test_policy_file_defaults_and_errors() -> None:
    assert load_policy("") == ContactPolicy() == ContactPolicy(7, 3, 2, ("black_list",), 72)
    p = load_policy("period_days: 30\nmax_actions: 4\nmax_per_channel: 0\nsuppress_labels: [black_list, fraud]\n"
                    "max_age_hours: 0\n", "policy.yaml")
    assert (p.period_days, p.max_actions, p.max_per_channel, p.suppress_labels, p.max_age(None)) == (
        30, 4, 0, ("black_list", "fraud"), 0)
    with pytest.raises(RuleSetError, match=r"policy\.yaml:2.*max_actions must be a whole number"):
        load_policy("period_days: 7\nmax_actions: -1\n", "policy.yaml")
    with pytest.raises(RuleSetError, match="unknown key 'max_action'"):
        load_policy("max_action: 3\n", "policy.yaml")


def test_black_list_suppresses_every_offer_and_labels_read_in_when() -> None:
    runner = ScenarioRunner([on("push"), on("email", "other")], tz=MSK)
    _, step = decide(runner, None, NOON, client(["black_list", "vip_list"]))
    assert step.actions == [] and step.skipped == [("demo", "suppressed"), ("other", "suppressed")]
    plain = {k: v for k, v in PLAIN.items() if k != "lifetime_visits >= 2"}
    vip_only = scenario(**plain, **{"lifetime_visits >= 2": '\'"vip_list" in labels\''})
    check_against(vip_only, [load_ruleset("boostfeel")])  # labels: read from the client's record
    runner = ScenarioRunner([vip_only], tz=MSK)
    assert decide(runner, None, NOON, client(["vip_list"]))[1].actions != []
    assert decide(runner, None, NOON, client(["regular"]))[1].skipped == [("demo", "ineligible")]
    assert decide(runner, None, NOON, None)[1].skipped == [("demo", "missing_metric")]  # no record given


def test_consent_per_channel_from_the_profile_and_unsubscribed_events() -> None:
    runner = ScenarioRunner([on("email"), on("push", "app_push"), on("any", "anything")], tz=MSK)
    _, step = decide(runner, None, NOON, client(consent={"email": False}))
    assert step.skipped == [("demo", "no_consent")]
    assert [(a["data"]["scenario"], a["data"]["avoid_channels"]) for a in step.actions] == [
        ("app_push", []), ("anything", ["email"])]
    # an unsubscribed event closes the channel; a later profile update giving consent reopens it
    engine = Engine([load_ruleset("boostfeel")], tz=MSK)
    when = datetime.fromtimestamp(NOON - DAY, UTC)
    state = engine.communication(None, Communication("u1", "c-1", when, "push", "unsubscribed", None, None,
                                                     NOON - DAY)).state
    assert state is not None
    _, step = decide(runner, None, NOON, state)
    assert step.skipped == [("app_push", "no_consent")]
    engine.profile(state, parse_profile({"client_id": "c-1", "updated_at": "2026-03-02T10:00:00+03:00",
                                         "consent": {"push": True}}, None))
    assert decide(runner, None, NOON, state)[1].skipped == []
    closed = client(consent={ch: False for ch in ("email", "sms", "push", "messenger", "call")})
    assert ("anything", "no_consent") in decide(runner, None, NOON, closed)[1].skipped


def test_caps_per_channel_and_in_all_over_the_period() -> None:
    # worked example (default policy: 2 per channel, 3 in all, per 7 days): four scenarios
    # fire on Monday at noon, two email ones and two push ones; the second email is the
    # second on its channel, the second push the fourth in all
    runner = ScenarioRunner([on("email", "e1"), on("email", "e2"), on("push", "p1"), on("push", "p2")], tz=MSK)
    state, step = decide(runner, None, NOON, client())
    assert [a["data"]["scenario"] for a in step.actions] == ["e1", "e2", "p1"]
    assert step.skipped == [("p2", "contact_cap")]
    state, step = decide(runner, state, NOON + 6 * DAY, client(), frm="s1")  # still within 7 days
    assert step.actions == [] and sorted(r for _, r in step.skipped) == [
        "channel_cap", "channel_cap", "contact_cap", "contact_cap"]
    state, step = decide(runner, state, NOON + 7 * DAY, client(), frm="s2")  # the first ones left
    assert [a["data"]["scenario"] for a in step.actions] == ["e1", "e2", "p1"]
    assert over_cap(ContactPolicy(max_actions=0, max_per_channel=0), "sms", NOON, [(NOON, "sms")] * 9) is None


def test_default_maximum_trigger_age_and_overrides() -> None:
    hours = 3600
    runner = ScenarioRunner([on("push")], tz=MSK)  # no max_age_hours: the policy's 72
    assert decide(runner, None, NOON, client(), now=NOON + 72 * hours)[1].skipped == []
    assert decide(runner, None, NOON, client(), now=NOON + 72 * hours + 1)[1].skipped == [("demo", "stale")]
    assert decide(runner, None, NOON, client(), now=None)[1].skipped == []  # replay: its own instant
    forever = ScenarioRunner([on("push", **{"max_unanswered: 0": "max_unanswered: 0\nmax_age_hours: 0"})], tz=MSK)
    assert decide(forever, None, NOON, client(), now=NOON + 400 * DAY)[1].skipped == []
    short = ScenarioRunner([on("push", **{"max_unanswered: 0": "max_unanswered: 0\nmax_age_hours: 2"})], tz=MSK)
    assert decide(short, None, NOON, client(), now=NOON + 3 * hours)[1].skipped == [("demo", "stale")]
    lax = ScenarioRunner([on("push")], tz=MSK, policy=ContactPolicy(max_age_hours=0))
    assert decide(lax, None, NOON, client(), now=NOON + 400 * DAY)[1].skipped == []

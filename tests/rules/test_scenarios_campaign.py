"""One-off campaigns (issue #18 part 5): a scenario with ``trigger: {manual: true}`` sent to
the current members of a segment, through the same conditions, caps and consent."""

from __future__ import annotations

import pytest
from rules_testkit import DAY, ts

from rules import RuleSetError, load_ruleset
from rules.inputs.receipts import parse_receipt
from rules.record.state import ClientState, initialize
from rules.scenario.policy import ContactPolicy
from rules.scenario_state import ScenarioRunner
from rules.scenarios import check_against, loads

AT = ts("2026-03-02T12:00:00+03:00")
SPRING = """\
scenario: spring_sale
description: a one-off spring offer to the sleeping clients
campaign: spring_2026
trigger: {manual: true}
when: days_since_last_purchase >= 30
action: {offer: discount, reward: "10.0", unit: percent, channel: email, template: spring_v1}
response_days: 7
"""


def member(segment: str = "sleeping", labels: list[str] | None = None, bought: bool = True) -> ClientState:
    s = initialize("c-1")
    s.segments = {"boostfeel": [segment, AT - 30 * DAY, None]}
    if bought:  # 40 days ago
        s.first_purchase = s.last_purchase = s.max_seen = AT - 40 * DAY
    if labels:
        s.profile["labels"] = labels
    return s


def runner(**policy: int) -> ScenarioRunner:
    return ScenarioRunner([loads(SPRING)], policy=ContactPolicy(**policy))  # type: ignore[arg-type]


def test_a_member_gets_the_offer_once_per_campaign_id() -> None:
    r = runner()
    state, step = r.campaign(None, member(), "spring_sale", "c-1", "boostfeel", "sleeping", AT, AT)
    assert [a["data"]["scenario"] for a in step.actions] == ["spring_sale"]
    action = step.actions[0]
    assert action["data"]["campaign"] == "spring_2026" and action["data"]["reward"] == "10.00"
    assert action["data"]["trigger"]["campaign"] == "c-1"
    again, step2 = r.campaign(state, member(), "spring_sale", "c-1", "boostfeel", "sleeping", AT, AT)
    assert step2.actions == [] and step2.skipped == [("spring_sale", "duplicate")]
    # the same campaign with another id is another send: the caps and cooldown decide
    _, step3 = r.campaign(again, member(), "spring_sale", "c-2", "boostfeel", "sleeping", AT + 60, AT)
    assert len(step3.actions) == 1


@pytest.mark.parametrize(("client", "reason"), [
    (member("loyal"), "not_member"),  # left the segment since the members were read
    (member(labels=["black_list"]), "suppressed"),
    (member(bought=False), "ineligible"),
])
def test_who_is_skipped_and_why(client: ClientState, reason: str) -> None:
    _, step = runner().campaign(None, client, "spring_sale", "c-1", "boostfeel", "sleeping", AT, AT)
    assert step.actions == [] and step.skipped == [("spring_sale", reason)]


def test_no_consent_and_the_cap_apply() -> None:
    c = member()
    c.profile["consent"] = {"email": False}
    _, step = runner().campaign(None, c, "spring_sale", "c-1", "boostfeel", "sleeping", AT, AT)
    assert step.skipped == [("spring_sale", "no_consent")]
    r = runner(max_actions=1)
    state, _ = r.campaign(None, member(), "spring_sale", "c-1", "boostfeel", "sleeping", AT, AT)
    _, step = r.campaign(state, member(), "spring_sale", "c-2", "boostfeel", "sleeping", AT + DAY, AT + DAY)
    assert step.skipped == [("spring_sale", "contact_cap")]


def test_a_purchase_within_the_window_converts_the_campaign_action() -> None:
    r = runner()
    state, _ = r.campaign(None, member(), "spring_sale", "c-1", "boostfeel", "sleeping", AT, AT)
    sale = parse_receipt({"receipt_id": "r-9", "client_id": "c-1", "type": "sale", "total": "500.00",
                          "occurred_at": "2026-03-05T10:00:00+03:00"}, None)
    _, step = r.receipt(state, sale)
    assert [c["data"]["scenario"] for c in step.conversions] == ["spring_sale"]


def test_a_manual_trigger_is_fired_by_nothing_else_and_checks_against_any_rules() -> None:
    s = loads(SPRING)
    assert not s.trigger.matches({"dimension": "boostfeel", "from": "loyal", "to": "sleeping"})
    check_against(s, [load_ruleset("boostfeel")])
    assert runner().campaign(None, member(), "nope", "c-1", "boostfeel", "sleeping", AT)[1].skipped == [
        ("nope", "unknown_campaign")]
    with pytest.raises(RuleSetError):
        loads(SPRING.replace("{manual: true}", "{manual: true, dimension: boostfeel}"))

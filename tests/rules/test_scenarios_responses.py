"""Response-based "stop after N unanswered" (issue #18 part 4): a response to an action
(opened, clicked, replied, answered) answers it like a purchase; exact in any arrival order,
idempotent under duplicates, and the state stays small."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rules_testkit import DAY, MSK, rcpt, ts
from test_scenarios import change, scenario

from rules.inputs.communications import Communication
from rules.scenario.events import RESPONDED_TYPE, REVENUE_TYPE, action_id, response_id, revenue_id
from rules.scenario.policy import ContactPolicy
from rules.scenario_state import RESPONSES_KEPT, ClientScenarios, ScenarioRunner, Step, dumps, loads

NOON = ts("2026-03-02T12:00:00+03:00")  # a Monday
METRICS = {"days_since_last_purchase": 20, "visits_30d": 0, "avg_check_30d": "0.00"}
# the retailCRM reminder (seed 003): "Если клиент не проявляет интерес на следующие 2−3
# письма, то можно прекратить активность": an email, stop after 2 unanswered, 21 days to respond
REMINDER = scenario(**{"cooldown_days: 30": "cooldown_days: 14",
                       "max_unanswered: 3": "max_unanswered: 2\nresponse_days: 21",
                       "  template: winback_v1": "  template: winback_v1\n  channel: email"})


def comm(eid: str, at: int, event: str = "opened", channel: str = "email",
         action: str | None = None, client: str = "c-1") -> Communication:
    return Communication(eid, client, datetime.fromtimestamp(at, UTC), channel, event, None, action, at)


class Feed:
    """One client through the runner, its state serialized between inputs like the table's."""

    def __init__(self, *scenarios: Any, policy: ContactPolicy | None = None) -> None:
        self.runner = ScenarioRunner(list(scenarios) or [REMINDER], tz=MSK,
                                     policy=policy or ContactPolicy.unlimited())
        self.raw: bytes | None = None
        self.step = Step()

    def _keep(self, state: ClientScenarios | None, step: Step) -> Step:
        if state is not None and step.changed:
            self.raw = dumps(state)
        self.step.add(step)
        return step

    @property
    def state(self) -> ClientScenarios | None:
        return loads(self.raw) if self.raw else None

    def buy(self, at: int, total: str = "400.00", rid: str | None = None) -> Step:
        return self._keep(*self.runner.receipt(self.state, rcpt(rid or f"r-{at}", at, total)))

    def trigger(self, at: int, frm: str = "loyal", now: int | None = None) -> Step:
        event = change("at_risk", at, frm, metrics=METRICS)
        return self._keep(*self.runner.change(self.state, event, now))

    def hear(self, c: Communication) -> Step:
        return self._keep(*self.runner.communication(self.state, c))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.step.events if e["type"] == kind]


def _history(f: Feed) -> None:
    for i in range(5):
        f.buy(NOON - (40 + i) * DAY)


def trigger_id(at: int, frm: str = "loyal") -> str:
    return str(change("at_risk", at, frm, metrics=METRICS)["id"])


def test_worked_example_an_opened_email_answers_the_reminder() -> None:
    # Ivanova gets reminder 1 on 2 March and reminder 2 on 23 March; she opens reminder 2 on
    # 25 March without buying. Purchases alone would stop the reminders (2 unanswered);
    # her open answers reminder 2, so reminder 3 goes out on 13 April as attempt 1 of a new run.
    silent, opener = Feed(), Feed()
    for f in (silent, opener):
        _history(f)
        assert [a["data"]["attempt"] for a in f.trigger(NOON, "s0").actions] == [1]
        assert [a["data"]["attempt"] for a in f.trigger(NOON + 21 * DAY, "s1").actions] == [2]
    second = action_id(trigger_id(NOON + 21 * DAY, "s1"), "demo")
    step = opener.hear(comm("esp-1", NOON + 23 * DAY, "opened", action=second))
    assert [e["id"] for e in step.outcomes] == [response_id(second)]
    data = step.outcomes[0]["data"]
    assert (data["event"], data["matched_by"], data["action_id"]) == ("opened", "action_id", second)
    assert silent.trigger(NOON + 42 * DAY, "s2").skipped == [("demo", "capped")]
    assert [a["data"]["attempt"] for a in opener.trigger(NOON + 42 * DAY, "s2").actions] == [1]
    assert opener.of("loyalty.scenario.converted") == []  # answered, not converted


def test_without_an_action_id_a_response_on_the_channel_within_the_window_answers() -> None:
    f = Feed()
    _history(f)
    first = f.trigger(NOON).actions[0]["id"]
    assert f.hear(comm("sms-1", NOON + DAY, "clicked", channel="sms")).outcomes == []  # another channel
    assert f.hear(comm("e-0", NOON - 60, "opened")).outcomes == []  # before the action
    assert f.hear(comm("e-late", NOON + 21 * DAY + 1, "opened")).outcomes == []  # after its window
    assert f.hear(comm("e-sent", NOON + DAY, "sent")).outcomes == []  # not a response
    assert f.hear(comm("e-unsub", NOON + DAY, "unsubscribed")).outcomes == []
    step = f.hear(comm("e-1", NOON + 2 * DAY, "replied"))
    assert [(e["type"], e["data"]["action_id"], e["data"]["matched_by"]) for e in step.outcomes] == [
        (RESPONDED_TYPE, first, "channel")]
    state = f.state
    assert state is not None and state.attempts["demo"][0].answered == NOON + 2 * DAY


def test_a_response_seen_before_its_action_answers_it_when_the_action_is_made() -> None:
    f = Feed()
    _history(f)
    act = action_id(trigger_id(NOON), "demo")
    assert f.hear(comm("early", NOON + 3 * DAY, "clicked", action=act)).outcomes == []
    state = f.state
    assert state is not None and len(state.responses) == 1  # kept: after the watermark
    step = f.trigger(NOON)
    assert [e["id"] for e in step.outcomes] == [response_id(act)]
    state = f.state
    assert state is not None and state.attempts["demo"][0].answered == NOON + 3 * DAY
    assert state.responses == [r for r in state.responses if r.t > NOON]


def test_an_answer_dated_after_a_trigger_does_not_lift_the_cap_at_that_trigger() -> None:
    # reading ahead (a backfill): the worker sees the open of 20 April before the trigger of
    # 13 April; at 13 April the client had not answered: capped, as in event-time order
    f = Feed()
    _history(f)
    f.trigger(NOON, "s0")
    second = f.trigger(NOON + 21 * DAY, "s1").actions[0]["id"]
    f.hear(comm("later", NOON + 40 * DAY, "opened", action=second))
    assert f.trigger(NOON + 35 * DAY, "s2").skipped == [("demo", "capped")]
    assert [a["data"]["attempt"] for a in f.trigger(NOON + 49 * DAY, "s3").actions] == [1]


def test_the_same_communication_twice_answers_nothing_new() -> None:
    f = Feed()
    _history(f)
    act = f.trigger(NOON).actions[0]["id"]
    c = comm("dup", NOON + DAY, "opened", action=act)
    assert len(f.hear(c).outcomes) == 1
    before = f.raw
    assert f.hear(c).outcomes == [] and f.hear(comm("other-open", NOON + 2 * DAY)).outcomes == []
    assert f.state is not None and f.state.attempts["demo"][0].answered == NOON + DAY
    pending = Feed()  # a duplicate of a kept (pending) response
    pending.hear(c)
    kept = pending.raw
    assert pending.hear(c) == Step() and pending.raw == kept
    assert before is not None


def test_revenue_within_the_response_window_and_one_conversion() -> None:
    f = Feed()
    _history(f)
    act = f.trigger(NOON).actions[0]["id"]
    f.buy(NOON + DAY, "250.00", rid="a")
    f.buy(NOON + 5 * DAY, "120.50", rid="b")
    f.buy(NOON + 21 * DAY + 1, "999.00", rid="late")  # after the window
    assert [e["id"] for e in f.of(REVENUE_TYPE)] == [revenue_id(act, "a"), revenue_id(act, "b")]
    assert [e["data"]["amount"] for e in f.of(REVENUE_TYPE)] == ["250.00", "120.50"]
    conv = f.of("loyalty.scenario.converted")
    assert [(c["data"]["receipt_id"], c["data"]["amount"]) for c in conv] == [("a", "250.00")]
    f.buy(NOON + DAY, "250.00", rid="a")  # a duplicate receipt: no second revenue
    assert len(f.of(REVENUE_TYPE)) == 2


def test_responses_kept_stay_bounded_and_the_state_small() -> None:
    f = Feed()
    _history(f)
    for i in range(200):  # a client opening every mail of a busy sender, ahead of the triggers
        f.hear(comm(f"o{i}", NOON + i * 3600, "opened"))
    state = f.state
    assert state is not None and len(state.responses) == RESPONSES_KEPT
    f.trigger(NOON + 200 * 3600)
    state = f.state
    assert state is not None and state.responses == []  # all before the watermark
    assert len(f.raw or b"") < 1200


# -- order independence ------------------------------------------------------------------

TRIGGERS = [NOON + 1 + k * 4 * DAY for k in range(6)]  # odd seconds: never tied with an input
EMAIL = REMINDER
SMS = scenario(**{"scenario: demo": "scenario: sms_nudge", "cooldown_days: 30": "cooldown_days: 3",
                  "max_unanswered: 3": "max_unanswered: 1\nresponse_days: 5"})
ACTIONS = [action_id(trigger_id(t, f"s{k}"), sid) for k, t in enumerate(TRIGGERS) for sid in ("demo", "sms_nudge")]

inputs = st.lists(st.one_of(
    st.tuples(st.just("buy"), st.integers(0, 24 * 3600 * 2 * 12), st.sampled_from(["100.00", "250.50", "999.99"])),
    st.tuples(st.just("comm"), st.integers(0, 24 * 3600 * 2 * 12),
              st.tuples(st.sampled_from(["opened", "clicked", "replied", "answered", "sent", "bounced"]),
                        st.sampled_from(["email", "sms", "push"]),
                        st.one_of(st.none(), st.sampled_from(ACTIONS))))),
    max_size=14)


def _run(order: list[tuple[str, Any]]) -> dict[str, Any]:
    f = Feed(EMAIL, SMS, policy=ContactPolicy(max_actions=3, max_per_channel=2, suppress_labels=(),
                                              max_age_hours=0))
    for i in range(4):
        f.buy(NOON - (30 + i) * DAY, rid=f"h{i}")
    for kind, item in order:
        if kind == "trigger":
            f.trigger(TRIGGERS[item], f"s{item}")
        elif kind == "buy":
            f.buy(item[0], item[1], rid=item[2])
        else:
            f.hear(item)
    state = f.state
    assert state is not None
    return {"events": sorted((e["type"], e["id"]) for e in f.step.events),
            "revenue": sorted((e["id"], e["data"]["amount"]) for e in f.of(REVENUE_TYPE)),
            "skipped": sorted(f.step.skipped),
            "answered": {k: [(a.action_id, a.answered, a.converted, a.responded) for a in v]
                         for k, v in state.attempts.items()}}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=inputs, data=st.data())
def test_outcomes_are_the_same_in_any_arrival_order_and_with_duplicates(
        items: list[tuple[Any, ...]], data: st.DataObject) -> None:
    timed: list[tuple[int, tuple[str, Any]]] = []
    for n, (kind, offset, what) in enumerate(items):
        at = NOON + 2 * (offset // 2)  # even seconds
        if kind == "buy":
            timed.append((at, ("buy", (at, what, f"r{n}"))))
        else:
            event, channel, act = what
            timed.append((at, ("comm", comm(f"c{n}", at, event, channel, act))))
    reference: list[tuple[str, Any]] = []
    for k, t in enumerate(TRIGGERS):  # event-time order
        reference += [x for at, x in sorted(timed, key=lambda p: p[0]) if (k == 0 or TRIGGERS[k - 1] < at) and at < t]
        reference.append(("trigger", k))
    reference += [x for at, x in sorted(timed, key=lambda p: p[0]) if at > TRIGGERS[-1]]
    # arrival: an input dated t arrives anywhere before the first trigger after t (the stream's
    # watermark guarantee), maybe early (reading ahead), maybe twice; triggers in time order
    slots: list[list[tuple[str, Any]]] = [[] for _ in range(len(TRIGGERS) + 1)]
    for at, x in timed:
        last = next((k for k, t in enumerate(TRIGGERS) if t > at), len(TRIGGERS))
        for _ in range(data.draw(st.integers(1, 2))):  # a duplicate, maybe
            slots[data.draw(st.integers(0, last))].append(x)
    arrival: list[tuple[str, Any]] = []
    for k, slot in enumerate(slots):
        arrival += data.draw(st.permutations(slot))
        if k < len(TRIGGERS):
            arrival.append(("trigger", k))
    assert _run(arrival) == _run(reference)


def test_a_version_1_state_loads_with_converted_actions_answered() -> None:
    old = (b'{"v":1,"c":"c-1","rev":100,"vis":1,"exp":2,"r":[],"i":[],"m":0,"w":5,"rq":-1,"cq":-1,"s":[],'
           b'"a":{"demo":[["a1",100,1],["a2",200,0]]}}')
    state = loads(old)
    assert [(a.action_id, a.answered, a.converted, a.channel) for a in state.attempts["demo"]] == [
        ("a1", 100, True, ""), ("a2", 0, False, "")]
    assert loads(dumps(state)) == state and state.responses == [] and state.calendar == 0

"""Calendar triggers (issue #18 part 5): a date or a yearly date at a local time, for the
members of a segment at that instant; exact and the same whether the client is ticked at
its due instants (the stream) or only caught up by its next input (replay)."""

from __future__ import annotations

from typing import Any

import pytest
from rules_testkit import DAY, MSK, rcpt, ts

from rules import ClientState, Engine, RuleSetError, load_ruleset, parse_profile
from rules.calendar import iso
from rules.scenario.calendar import catch_up, next_occurrence
from rules.scenario.policy import ContactPolicy
from rules.scenario.record import ClientScenarios, Step
from rules.scenario_state import ScenarioRunner
from rules.scenarios import Calendar, Scenario, check_against, loads

MARCH_8 = """scenario: women_day
description: >
  8 March for women (seed 004: "рассылок к популярным праздникам – 23 февраля и 8 марта")
trigger: {yearly: "03-08", at: "10:00", dimension: gender, in: f}
action: {offer: gift, reward: "200", unit: points, channel: sms, template: march8_v1}
campaign: holidays_2026
"""
TATYANA = """scenario: tatyana_day
trigger:
  yearly: "01-25"
  at: "11:30"
when: first_name == "Tatyana"
action: {offer: bonus, reward: "150", template: tatyana_v1, channel: push}
campaign: holidays_2026
"""
AT_RISK_ON_DATE = """scenario: spring_win_back
trigger:
  on: 2026-03-08
  dimension: boostfeel
  in: [at_risk, lost]
action: {offer: bonus, reward: "0.3 * avg_check + 0.01 * double(lifetime_visits)", template: spring_v1}
"""


def sc(text: str) -> Scenario:
    return loads(text, "cal.yaml")


def test_calendar_triggers_parse_and_check() -> None:
    m8 = sc(MARCH_8)
    assert m8.trigger.calendar == Calendar(None, (3, 8), 600) and m8.trigger.members == ("f",)
    assert m8.summary() == "every 03-08 10:00 for gender in f -> gift via sms" and m8.campaign == "holidays_2026"
    once = sc(AT_RISK_ON_DATE)  # a bare `on` (YAML 1.1 reads it as true) works
    assert once.trigger.calendar is not None and once.trigger.calendar.label() == "2026-03-08"
    assert not once.trigger.matches({"dimension": "boostfeel", "from": "loyal", "to": "at_risk"})
    rulesets = [load_ruleset("demographics"), load_ruleset("boostfeel")]
    for text in (MARCH_8, TATYANA, AT_RISK_ON_DATE):
        check_against(sc(text), rulesets)
    with pytest.raises(RuleSetError, match="has no segment 'sleeping'"):
        check_against(sc(AT_RISK_ON_DATE.replace("lost]", "sleeping]")), rulesets)
    with pytest.raises(RuleSetError, match="dimension 'sex' is not defined"):
        check_against(sc(MARCH_8.replace("dimension: gender", "dimension: sex")), rulesets)
    for bad, message in [('yearly: "02-30"', "'yearly' must be"), ('yearly: "03-08", on: 2026-03-08', "exactly one"),
                         ('yearly: "03-08", at: "25:00"', "'at' must be"),
                         ('yearly: "03-08", dimension: gender', "both 'dimension' and 'in'"),
                         ('yearly: "03-08", entered: f', "unknown key 'entered'")]:
        with pytest.raises(RuleSetError, match=message):
            sc(f"scenario: x\ntrigger: {{{bad}}}\naction: {{offer: gift, template: t}}\n")


def test_occurrences_in_the_business_time_zone() -> None:
    from zoneinfo import ZoneInfo

    msk, ny = ZoneInfo(MSK), ZoneInfo("America/New_York")
    m8 = Calendar(None, (3, 8), 600)
    assert iso(next_occurrence(m8, ts("2026-01-01T00:00:00+03:00"), msk) or 0) == "2026-03-08T07:00:00Z"
    assert iso(next_occurrence(m8, ts("2026-03-08T10:00:00+03:00"), msk) or 0) == "2027-03-08T07:00:00Z"
    # New York moves to summer time on 8 March 2026 at 02:00: 10:00 is EDT (UTC-4)
    assert iso(next_occurrence(m8, ts("2026-01-01T00:00:00+00:00"), ny) or 0) == "2026-03-08T14:00:00Z"
    leap = Calendar(None, (2, 29), 0)
    assert iso(next_occurrence(leap, ts("2026-01-01T00:00:00+03:00"), msk) or 0) == "2028-02-28T21:00:00Z"
    assert next_occurrence(Calendar(ts_date("2026-03-08"), None, 600), ts("2026-04-01T00:00:00+03:00"), msk) is None


def ts_date(text: str) -> Any:
    from datetime import date

    return date.fromisoformat(text)


class World:
    """Clients through the engine and the runner in the worker's order: before each input
    (or tick) the calendar catch-up, then the input, then the changes it made."""

    def __init__(self, rules: list[str], *scenarios: Scenario, ticks: bool) -> None:
        self.engine = Engine([load_ruleset(r) for r in rules], tz=MSK)
        self.runner = ScenarioRunner(list(scenarios), tz=MSK, policy=ContactPolicy.unlimited())
        self.ticks = ticks  # the stream's due ticks, or replay (only inputs and the end)
        self.clients: dict[str, ClientState] = {}
        self.sc: dict[str, ClientScenarios | None] = {}
        self.step = Step()
        self.changes: list[dict[str, Any]] = []

    def _pre(self, cid: str, until: int) -> None:
        state = self.clients.get(cid)
        if state is None:
            return
        events, self.sc[cid], step = catch_up(self.engine, self.runner, state, self.sc.get(cid), until)
        self.changes += events
        self.step.add(step)

    def _after(self, cid: str, events: list[dict[str, Any]]) -> None:
        self.changes += events
        for e in events:
            self.sc[cid], step = self.runner.change(self.sc.get(cid), e, client=self.clients[cid])
            self.step.add(step)

    def due(self, cid: str) -> int | None:
        state = self.clients[cid]
        dues = [d for d in (self.engine.next_due(state), self.runner.next_calendar(self.sc.get(cid), state))
                if d is not None]
        return min(dues, default=None)

    def wait(self, until: int) -> None:
        """Time passes: the stream ticks every client at its due instants up to ``until``."""
        while self.ticks:
            dues = [(d, cid) for cid in sorted(self.clients) if (d := self.due(cid)) is not None and d <= until]
            if not dues:
                return
            self.tick(*min(dues)[::-1])

    def tick(self, cid: str, until: int) -> None:
        self._pre(cid, until)
        self._after(cid, self.engine.advance(self.clients[cid], until))

    def buy(self, cid: str, at: int, total: str = "400.00") -> None:
        self.wait(at - 1)
        self._pre(cid, at)
        r = rcpt(f"{cid}-{at}", at, total, client=cid)
        result = self.engine.receipt(self.clients.get(cid), r)
        assert result.state is not None
        self.clients[cid] = result.state
        self.sc[cid], step = self.runner.receipt(self.sc.get(cid), r)
        self.step.add(step)
        self._after(cid, result.events)

    def profile(self, cid: str, at: int, **fields: Any) -> None:
        self.wait(at - 1)
        self._pre(cid, at)
        doc = {"client_id": cid, "updated_at": iso(at), **fields}
        result = self.engine.profile(self.clients.get(cid), parse_profile(doc, None))
        assert result.state is not None
        self.clients[cid] = result.state
        self._after(cid, result.events)

    def finish(self, until: int) -> None:
        self.wait(until)
        for cid in sorted(self.clients):
            self.tick(cid, until)

    def offers(self) -> list[tuple[str, str, str, str | None]]:
        return sorted((a["subject"], a["data"]["scenario"], a["time"], a["data"]["reward"]) for a in self.step.actions)


JAN = ts("2026-01-05T12:00:00+03:00")


def _women_day(ticks: bool) -> World:
    w = World(["demographics"], sc(MARCH_8), ticks=ticks)
    for cid, gender in (("anna", "f"), ("boris", "m"), ("vera", "f")):
        w.profile(cid, JAN, gender=gender)
        w.buy(cid, JAN + DAY)
    w.profile("vera", ts("2026-03-09T09:00:00+03:00"), gender="f")  # an input after the date
    w.buy("dina", ts("2026-03-08T12:00:00+03:00"))  # a new client after the hour: not offered
    w.profile("dina", ts("2026-03-08T12:00:01+03:00"), gender="f")
    w.finish(ts("2026-03-20T00:00:00+03:00"))
    return w


def test_women_day_for_segment_f_at_10_local() -> None:
    stream, replay = _women_day(ticks=True), _women_day(ticks=False)
    assert stream.offers() == replay.offers() == [
        ("anna", "women_day", "2026-03-08T07:00:00Z", "200.00"),
        ("vera", "women_day", "2026-03-08T07:00:00Z", "200.00")]
    assert len({a["id"] for a in stream.step.actions}) == 2  # ids are per client
    action = next(a for a in stream.step.actions if a["subject"] == "anna")
    assert action["data"]["trigger"] == {"id": action["data"]["trigger"]["id"], "calendar": "03-08",
                                         "time": "2026-03-08T07:00:00Z", "dimension": "gender", "segment": "f"}
    assert action["data"]["campaign"] == "holidays_2026"
    assert stream.runner.next_calendar(stream.sc["anna"], stream.clients["anna"]) == ts("2027-03-08T10:00:00+03:00")
    assert stream.runner.next_calendar(stream.sc["boris"], stream.clients["boris"]) is None  # not in f: no tick


def _tatyana(ticks: bool) -> World:
    w = World(["boostfeel"], sc(TATYANA), ticks=ticks)
    w.profile("t-1", JAN - 30 * DAY, first_name="Tatyana")
    w.profile("o-1", JAN - 30 * DAY, first_name="Olga")
    w.buy("t-1", JAN - 20 * DAY)
    w.buy("o-1", JAN - 20 * DAY)
    w.buy("t-2", JAN - 20 * DAY)
    w.profile("t-2", ts("2026-01-25T11:30:00+03:00"), first_name="Tatyana")  # named at the very instant
    w.finish(ts("2026-02-01T00:00:00+03:00"))
    return w


def test_tatyana_day_by_first_name_in_when() -> None:
    stream, replay = _tatyana(True), _tatyana(False)
    assert stream.offers() == replay.offers() == [("t-1", "tatyana_day", "2026-01-25T08:30:00Z", "150.00")]
    # the profile-only `when` is tested when the occurrence is scheduled: Olga is never ticked
    assert stream.runner.next_calendar(stream.sc["o-1"], stream.clients["o-1"]) is None


def _spring(ticks: bool) -> World:
    # who is at risk (20+ days without a purchase, boostfeel) on 8 March at 10:00, reading
    # the ledger as of then: a purchase on 9 March is after the offer and converts it
    w = World(["boostfeel"], sc(AT_RISK_ON_DATE), ticks=ticks)
    march8 = ts("2026-03-08T10:00:00+03:00")
    buys = [(march8 - (32 - i) * DAY, "early", "500.00") for i in range(3)]  # at risk since 26 February
    buys += [(march8 - (22 - i) * DAY - 3600, "edge", "300.00") for i in range(3)]  # at risk 1 hour before
    buys += [(march8 - (22 - i) * DAY + 3600, "late", "300.00") for i in range(3)]  # 1 hour after
    for at, cid, total in sorted(buys):
        w.buy(cid, at, total)
    w.buy("early", march8 + DAY, "700.00")
    w.finish(ts("2026-03-31T00:00:00+03:00"))
    return w


def test_members_of_a_segment_at_the_instant_whatever_the_ticks() -> None:
    stream, replay = _spring(True), _spring(False)
    assert stream.offers() == replay.offers() == [
        ("early", "spring_win_back", "2026-03-08T07:00:00Z", "150.03"),  # 0.3 * 500 + 0.03
        ("edge", "spring_win_back", "2026-03-08T07:00:00Z", "90.03")]
    for w in (stream, replay):
        assert [c["data"]["receipt_id"] for c in w.step.conversions] == [f"early-{ts('2026-03-09T10:00:00+03:00')}"]
        assert sorted(e["id"] for e in w.changes) == sorted(e["id"] for e in stream.changes)


def test_an_occurrence_processed_late_is_stale_and_fires_once() -> None:
    w = World(["demographics"], sc(MARCH_8), ticks=False)
    w.runner.policy = ContactPolicy()  # the default maximum age: 72 hours
    w.profile("anna", JAN, gender="f")
    w.buy("anna", JAN + DAY)
    march8 = ts("2026-03-08T10:00:00+03:00")
    state, sc_state = w.clients["anna"], w.sc["anna"]
    _, late, step = catch_up(w.engine, w.runner, state, sc_state, march8 + 5 * DAY, now=march8 + 73 * 3600)
    assert step.actions == [] and step.skipped == [("women_day", "stale")]
    assert late is not None and late.calendar == march8 + 5 * DAY
    _, _, again = catch_up(w.engine, w.runner, state, late, march8 + 6 * DAY, now=march8)
    assert again.skipped == [] and again.actions == []  # the cursor moved past it

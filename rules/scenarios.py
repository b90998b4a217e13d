"""Scenarios: actions triggered by segment changes or calendar dates (win-back, welcome
bonus, VIP status, 8 March...).

A scenario is one YAML file (presets in ``rules/scenarios/``; loading the file is the
caller's job, this module only parses text, so the core stays free of I/O)::

    scenario: win_back_at_risk
    description: ...                  # free text; presets quote the seed they reproduce
    params: {margin: 0.3, ltv_share: 0.05}
    trigger: {dimension: boostfeel, entered: at_risk}   # or left: [...]; optional from / to
    # or a calendar trigger: {yearly: "03-08", at: "10:00", dimension: gender, in: f}
    # or {manual: true}: a one-off campaign, sent to a segment's members by loyalty campaign
    #   (on: 2026-03-08 for one date; dimension / in optional: every client)
    campaign: spring_2026             # groups actions in the per-campaign report, optional
    when: "lifetime_visits >= 2"      # eligibility (CEL), optional
    action:
      offer: bonus                    # bonus | cashback | discount | free_visit | gift | status | reminder
      reward: "margin * (avg_check + ltv_share * lifetime_value)"   # CEL number, optional
      floor: "100.00"                 # Decimal bounds of the reward, optional
      cap: "1500.00"
      unit: points                    # points | currency | percent
      channel: push                   # any | push | sms | email | messenger | call
      template: winback_at_risk_v1    # message template id
      attributes: {cashback_percent: 5}   # passed through to the action
    cooldown_days: 30                 # per client: no new action of this scenario sooner
    max_unanswered: 3                 # stop after this many consecutive unconverted attempts (0: no cap)
    response_days: 14                 # a purchase within this many days converts the action
    expires_days: 14                  # the offer's validity (action data.expires_at)
    quiet_hours: {start: "22:00", end: "09:00"}   # business time zone; actions move to the end
    valid_from: 2026-01-01T00:00:00+03:00          # campaign window, optional
    valid_until: 2026-12-31T00:00:00+03:00
    max_age_hours: 48                 # skip triggers older than this when processed
                                      # (default: the contact policy's, 72; 0: no limit)

Expressions see the catalogue metrics the change event carries in ``data.metrics`` (money
as doubles in major units, like rules) plus four lifetime figures kept by the scenario
state from every receipt (:data:`LEDGER_METRICS`), the client-record metrics of
:data:`CLIENT_METRICS` (profile fields such as ``labels`` or ``first_name``, read from the
client's record when the caller passes it), and the scenario's params. A calendar trigger
has no change event: its expressions may read any catalogue metric, computed from the
client's record at the occurrence instant (:mod:`rules.scenario.calendar`).

Reward: the CEL result (a double) becomes a ``Decimal`` rounded half-up to 2 places, then
is raised to ``floor`` and lowered to ``cap`` (both Decimal). The win-back default
(``win_back_at_risk``): ``margin * (avg_check + ltv_share * lifetime_value)``, margin 0.3,
ltv_share 0.05, 100..1500 bonus points (1 point = 1 currency unit): the margin of one
average visit plus a share of the client's lifetime value. Worked examples (avg check,
LTV -> reward): 400, 12000 -> 0.3 * (400 + 600) = 300.00; 250, 2500 -> 112.50;
200, 1000 -> 75.00 -> 100.00 (floor); 1500, 90000 -> 1800.00 -> 1500.00 (cap).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from rules import yamlines
from rules.errors import RuleSetError
from rules.metrics import CATALOGUE
from rules.metrics.predictive import with_predictions
from rules.ruleset import RuleSet
from rules.scenario.model import (
    CENT,
    CHANNELS,
    CLIENT_METRICS,
    LEDGER_METRICS,
    OFFERS,
    UNITS,
    Action,
    Calendar,
    Expr,
    QuietHours,
    Scenario,
    Trigger,
    sample_context,
)
from rules.scenario.parser import Parser

__all__ = ["CENT", "CHANNELS", "CLIENT_METRICS", "LEDGER_METRICS", "OFFERS", "UNITS", "Action", "Calendar",
           "Expr", "QuietHours", "Scenario", "Trigger", "check_against", "loads", "sample_context"]


def loads(text: str, file: str = "<string>") -> Scenario:
    """Parse and validate one scenario; RuleSetError names the file, line and scenario."""
    doc = yamlines.load_mapping(text, file, "scenario")
    return Parser(file, doc, hashlib.sha256(text.encode()).hexdigest()[:12]).build()


def check_against(scenario: Scenario, rulesets: list[RuleSet]) -> None:
    """Validate a scenario against the loaded rule sets: its dimension exists, its segments
    are that dimension's, and every metric it reads is carried by that dimension's events
    (or read from the client's record: :data:`CLIENT_METRICS`). A calendar trigger with no
    dimension checks nothing; its expressions read the client's record."""
    where = {d.id: d for rs in rulesets for d in rs.dimensions}
    trig = scenario.trigger
    dim = where.get(trig.dimension)
    fail = _failer(scenario.path, scenario.id)
    if trig.manual or (trig.calendar is not None and not trig.dimension):
        return  # a campaign names its segment when it is sent (loyalty campaign)
    if dim is None:
        raise fail(f"dimension {trig.dimension!r} is not defined by the loaded rule sets "
                   f"({', '.join(sorted(where)) or 'none'})", trig.line)
    if dim.value is None:
        known = {s.id for s in dim.segments} | ({dim.default} if dim.default else set())
        for seg in trig.segments():
            if seg not in known:
                raise fail(f"dimension {dim.id!r} has no segment {seg!r} "
                           f"(segments: {', '.join(sorted(known))})", trig.line)
    if trig.calendar is not None:
        return  # any catalogue metric, computed from the client's record
    carried = set(with_predictions(dim.metrics)) | set(LEDGER_METRICS) | {n for n in CLIENT_METRICS if n in CATALOGUE}
    for expr in (scenario.when, scenario.action.reward):
        missing = [n for n in (expr.names if expr else ()) if n not in carried]
        if expr is not None and missing:
            raise fail(f"reads {', '.join(missing)}, which {dim.id} change events do not carry "
                       f"(they carry {', '.join(sorted(carried))})", expr.line)


def _failer(file: str, rule: str | None) -> Callable[[str, int | None], RuleSetError]:
    def fail(message: str, line: int | None) -> RuleSetError:
        return RuleSetError(message, file, line, rule)

    return fail

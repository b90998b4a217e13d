"""Scenarios in the worker: loading them, the actions topic, the report. The decisions are
:mod:`rules.scenario_state`'s; they run inside the clients agent (:mod:`agents.handler`):

    client-events ─> clients ─┬─> loyalty.segment-changes
                              ├─> loyalty.scenario-actions ─> webhook agent (optional)
                              └─> clients table: client record + scenario state, one value

Each receipt and then the segment changes it causes go to the runner in the order the
client's input arrives. Actions are sent and acknowledged by the broker before the table
value (segments and scenario state together) is written: a crash in between redelivers
the message against the old value and sends the same action ids again (at least once,
never lost; consumers drop duplicates by id). (An earlier version ran a separate agent
over the changes and client-events topics; consuming every receipt and change a second
time, per message, made it the worker's bottleneck.)

Settings (environment): ``LOYALTY_SCENARIOS`` (``all``: every preset whose dimension the
loaded rule sets define; ``none``; or preset names / YAML paths, comma-separated, which
must all check), ``LOYALTY_TOPIC_ACTIONS`` (loyalty.scenario-actions),
``LOYALTY_TOPIC_ACTIONS_DLQ``, ``LOYALTY_WEBHOOK_URL`` (empty: no webhook),
``LOYALTY_WEBHOOK_ATTEMPTS`` (5), ``LOYALTY_WEBHOOK_BACKOFF`` (0.5 s, doubled per retry),
``LOYALTY_CONTACT_POLICY`` (a YAML file: :mod:`rules.scenario.policy`; empty: its defaults).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rules
from rules import RuleSet, RuleSetError
from rules.scenario.policy import ContactPolicy
from rules.scenario.policy import loads as parse_policy
from rules.scenario_state import ACTION_TYPE, ScenarioRunner
from rules.scenarios import Scenario, check_against
from rules.scenarios import loads as parse_scenario

if TYPE_CHECKING:
    import faust

log = logging.getLogger("loyalty.scenarios")
SCENARIOS_DIR = Path(rules.__file__).parent / "scenarios"


def scenario_presets() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def load_scenario(spec: str) -> Scenario:
    """A preset name or a path to a YAML file. Raises RuleSetError."""
    path = Path(spec)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = SCENARIOS_DIR / f"{spec}.yaml"
        if not path.exists():
            raise RuleSetError(f"no scenario preset {spec!r}; presets: {', '.join(scenario_presets())}", spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleSetError(f"cannot read: {exc.strerror}", str(path)) from None
    return parse_scenario(text, str(path))


def load_scenarios(specs: tuple[str, ...] | list[str], rulesets: list[RuleSet]) -> list[Scenario]:
    """Scenarios to run with these rule sets. ``all``: every preset that checks against them
    (presets of other rule sets are left out); a named scenario must check."""
    out: list[Scenario] = []
    for spec in specs:
        if spec == "all":
            for name in scenario_presets():
                scenario = load_scenario(name)
                try:
                    check_against(scenario, rulesets)
                except RuleSetError as exc:
                    log.info("scenario preset %s left out: %s", name, exc.message)
                    continue
                out.append(scenario)
        elif spec != "none":
            scenario = load_scenario(spec)
            check_against(scenario, rulesets)
            out.append(scenario)
    return list({s.id: s for s in out}.values())


def build_runner(settings: Any, rulesets: list[RuleSet]) -> ScenarioRunner | None:
    """The scenario runner of the worker (None: no scenarios loaded). Raises RuleSetError."""
    scenarios = load_scenarios(settings.scenarios, rulesets)
    if not scenarios:
        log.info("scenarios: none to run")
        return None
    log.info("scenarios: %s", ", ".join(f"{s.id} ({s.summary()})" for s in scenarios))
    return ScenarioRunner(scenarios, tz=settings.timezone, policy=load_policy(settings.contact_policy))


def calendar_fingerprint(rules: bytes, runner: ScenarioRunner | None) -> bytes:
    """The table fingerprint of a worker: its rules', folded with the calendar scenarios'
    ids and versions when it runs any. A client's due instant includes its next calendar
    occurrence; deploying (or changing) a calendar scenario changes the fingerprint, so the
    sweep after a rules change ticks every stored client once and its due instant includes
    the new occurrences (else a client with no input before the date would miss it)."""
    if runner is None or not runner.calendars:
        return rules
    text = "\x1f".join(sorted(f"{s.id}={s.version}" for s in runner.calendars))
    return hashlib.sha256(rules + text.encode()).digest()[:8]


def load_policy(path: str) -> ContactPolicy:
    """The contact policy file (empty: the defaults). Raises RuleSetError."""
    if not path:
        return ContactPolicy()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleSetError(f"cannot read: {exc.strerror}", path) from None
    return parse_policy(text, path)


def register_actions(app: faust.App, settings: Any) -> Any:
    """The actions topic, and the webhook agent on it if a URL is set."""
    actions = app.topic(settings.topic_actions, key_type=bytes, value_type=bytes)
    if settings.webhook_url:
        from agents.webhook import register_webhook

        register_webhook(app, settings, actions, only_type=ACTION_TYPE)
    return actions

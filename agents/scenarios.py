"""The scenarios agent: segment changes and receipts in, scenario actions out. Thin: the
decisions are :mod:`rules.scenario_state`'s, this module reads files and moves bytes.

Flow::

    loyalty.segment-changes ─┐                                      ┌─> loyalty.scenario-actions
                             ├─ scenarios ── table "scenarios" ─────┤   actions and conversions,
    loyalty.client-events ───┘  (R only)     client -> state        │   CloudEvents, key = client
                                                                    └─> webhook agent (optional)

Both input topics are keyed by client id with the same partition count, so one client's
changes and receipts meet in one partition of the ``scenarios`` table. An action is sent
and acknowledged by the broker before the table records its trigger as processed: a crash
in between redelivers the trigger and sends the same action id again (at least once, never
lost; consumers drop duplicates by id).

Settings (environment): ``LOYALTY_SCENARIOS`` (``all``: every preset whose dimension the
loaded rule sets define; ``none``; or preset names / YAML paths, comma-separated, which
must all check), ``LOYALTY_TOPIC_ACTIONS`` (loyalty.scenario-actions),
``LOYALTY_TOPIC_ACTIONS_DLQ``, ``LOYALTY_WEBHOOK_URL`` (empty: no webhook),
``LOYALTY_WEBHOOK_ATTEMPTS`` (5), ``LOYALTY_WEBHOOK_BACKOFF`` (0.5 s, doubled per retry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

import rules
from agents.offsets import register_filler
from app import codecs
from rules import RejectedInput, RuleSet, RuleSetError, loads, parse_receipt
from rules.calendar import to_epoch
from rules.scenario_state import ACTION_TYPE, ClientScenarios, ScenarioRunner, Step
from rules.scenario_state import dumps as dump_state
from rules.scenario_state import loads as load_state
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


@dataclass
class Handled:
    value: bytes | None = None  # new table value (None: leave the table alone)
    step: Step = field(default_factory=Step)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [*self.step.actions, *self.step.conversions]


class ScenarioHandler:
    """One message of either input topic applied to the stored scenario state of a client."""

    def __init__(self, runner: ScenarioRunner, clock: Callable[[], datetime]) -> None:
        self.runner = runner
        self.clock = clock

    def change(self, raw: bytes, stored: bytes | None, offset: int | None = None) -> Handled:
        try:
            event = orjson.loads(raw)
            data = event["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("scenarios: undecodable change event skipped")
            return Handled()
        if not self.runner.matching(data):
            return Handled()
        state = load_state(stored) if stored is not None else None
        state, step = self.runner.change(state, event, to_epoch(self.clock()), offset)
        return self._out(state, step)

    def client_event(self, raw: bytes, stored: bytes | None, offset: int | None = None) -> Handled:
        if raw[:1] != codecs.RECEIPT:
            return Handled()
        try:
            receipt = parse_receipt(loads(raw[1:]), None)  # validated when routed
        except RejectedInput:
            return Handled()
        if receipt.client_id is None:
            return Handled()
        state = load_state(stored) if stored is not None else None
        new_state, step = self.runner.receipt(state, receipt, offset)
        return self._out(new_state, step)

    @staticmethod
    def _out(state: ClientScenarios | None, step: Step) -> Handled:
        value = dump_state(state) if state is not None and step.changed else None
        return Handled(value, step)


def scenario_report(metrics: Any, scenario_ids: list[str] | None = None
                    ) -> dict[str, dict[str, float | int | None]]:
    """Per-scenario actions, conversions and conversion rate of this worker since it started
    (the ``loyalty_scenario_actions_total`` / ``loyalty_scenario_conversions_total`` counters;
    ``app.metrics.Metrics``). Without ids: every scenario that has acted. For the HTTP layer,
    e.g. ``GET /scenarios`` -> ``scenario_report(pipeline.metrics)``."""
    out: dict[str, dict[str, float | int | None]] = {}
    registry = metrics.registry
    if scenario_ids is None:
        scenario_ids = sorted({s.labels["scenario"] for m in metrics.scenario_actions.collect()
                               for s in m.samples if s.name.endswith("_total")})
    for sid in scenario_ids:
        actions = registry.get_sample_value("loyalty_scenario_actions_total", {"scenario": sid}) or 0.0
        conversions = registry.get_sample_value("loyalty_scenario_conversions_total", {"scenario": sid}) or 0.0
        out[sid] = {"actions": int(actions), "conversions": int(conversions),
                    "conversion_rate": round(conversions / actions, 4) if actions else None}
    return out


@dataclass
class ScenarioAgent:
    runner: ScenarioRunner
    actions: Any  # faust topic
    table: Any  # faust Table: client id -> scenario state
    metrics: Any

    def report(self) -> dict[str, dict[str, float | int | None]]:
        return scenario_report(self.metrics, [s.id for s in self.runner.scenarios])


def register_scenarios(app: faust.App, pipeline: Any, settings: Any) -> ScenarioAgent | None:
    """Add the scenarios agent (and the webhook agent if a URL is set) to the app."""
    from app.faust_app import rocksdb_options

    scenarios = load_scenarios(settings.scenarios, pipeline.engine.rulesets)
    if not scenarios:
        log.info("scenarios: none to run")
        return None
    runner = ScenarioRunner(scenarios, tz=settings.timezone)
    handler = ScenarioHandler(runner, pipeline.clock)
    n = settings.partitions
    changes_topic = settings.topic_changes
    source = app.topic(changes_topic, settings.topic_client_events, key_type=bytes, value_type=bytes)
    actions = app.topic(settings.topic_actions, key_type=bytes, value_type=bytes)
    table = app.Table("scenarios", key_type=bytes, value_type=bytes, partitions=n,
                      options=rocksdb_options(settings))
    metrics = pipeline.metrics
    agent = ScenarioAgent(runner, actions, table, metrics)
    log.info("scenarios: %s", ", ".join(f"{s.id} ({s.summary()})" for s in scenarios))

    async def handle_one(event: Any) -> None:
        key: bytes | None = event.key
        msg = event.message
        if key is None:
            return
        stored = table.get(key)
        if msg.topic == changes_topic:
            out = handler.change(event.value, stored, msg.offset)
        else:
            out = handler.client_event(event.value, stored, msg.offset)
        sent = [await actions.send(key=key, value=orjson.dumps(e)) for e in out.events]
        for fut in sent:  # acknowledged before the table remembers the trigger
            await fut
        for action in out.step.actions:
            metrics.scenario_actions.labels(action["data"]["scenario"]).inc()
        for conversion in out.step.conversions:
            metrics.scenario_conversions.labels(conversion["data"]["scenario"]).inc()
        for sid, reason in out.step.skipped:
            log.debug("scenario %s skipped for %s: %s", sid, key.decode(), reason)
        if out.value is not None:
            table[key] = out.value

    @app.agent(source, name="scenarios")
    async def run_scenarios(stream: Any) -> None:
        gaps = register_filler(app, "scenarios", settings.kafka_bootstrap, metrics)
        async for event in stream.events():
            for one in await gaps.fill(app, event):  # records the consumer skipped, then event
                await handle_one(one)
            await gaps.done(app)

    if settings.webhook_url:
        from agents.webhook import register_webhook

        register_webhook(app, settings, actions, only_type=ACTION_TYPE)
    return agent

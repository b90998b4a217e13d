"""Scenarios in ``loyalty replay`` (``--scenarios``): the runner fed in the worker's order.

For each client, as :class:`app.batch.replay.Replay` applies its inputs in event-time order:
the calendar occurrences due by the input's instant first (:func:`rules.scenario.calendar.catch_up`),
then the input (a receipt, a communication) and the segment changes it makes; at the end the
occurrences and time-based changes up to ``--as-of``. That is the order the clients agent
feeds the runner (:mod:`agents.handler`), so replay gives the actions, conversions,
responses and revenue a worker that ran all along would have given.

The maximum trigger age: replay decides each trigger at its own instant (a worker running
all along processes it then), so ``max_age_hours`` and the contact policy's default skip
nothing here; they matter to a worker loading history (``loyalty produce``), which decides
with its clock. The contact caps, labels and consent apply as in the worker.

Outputs: every scenario event (``--actions-out``, JSON Lines) and, in the summary, the
report per scenario and per campaign (:func:`app.projection.scenarios.tally`, the figures
``GET /reports/scenarios`` serves) and the skipped actions per scenario and reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

import orjson

from app.projection.scenarios import FIELDS, figures
from app.projection.store import cents
from rules import ClientState, Engine
from rules.inputs.communications import Communication
from rules.inputs.receipts import Receipt
from rules.scenario.calendar import catch_up
from rules.scenario.record import ClientScenarios, Step
from rules.scenario_state import ScenarioRunner


class ScenarioFeed:
    """The scenario states of replay's clients and what the runner decided."""

    def __init__(self, runner: ScenarioRunner, engine: Engine,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.runner, self.engine, self.on_event = runner, engine, on_event
        self.states: dict[str, ClientScenarios | None] = {}
        self.skipped: dict[str, dict[str, int]] = {}
        self._sums: dict[str, dict[str, dict[str, int]]] = {"scenario": {}, "campaign": {}}

    def _take(self, cid: str, state: ClientScenarios | None, step: Step) -> None:
        if state is not None:
            self.states[cid] = state
        for sid, reason in step.skipped:
            per = self.skipped.setdefault(sid, {})
            per[reason] = per.get(reason, 0) + 1
        for event in step.events:  # each event once: the runner makes each id once per client
            field = FIELDS[event["type"]]
            amount = (cents(event["data"]["amount"]) or 0) if field == "revenue" else 1
            for by, key in (("scenario", event["data"]["scenario"]), ("campaign", event["data"].get("campaign"))):
                if key:
                    acc = self._sums[by].setdefault(key, {})
                    acc[field] = acc.get(field, 0) + amount
            if self.on_event is not None:
                self.on_event(event)

    def calendar(self, client: ClientState, until: int) -> list[dict[str, Any]]:
        """Decide the client's calendar occurrences up to ``until``; returns the changes the
        engine made on the way (fed already: the caller emits them without feeding them)."""
        if not self.runner.calendars:
            return []
        cid = client.client_id
        events, state, step = catch_up(self.engine, self.runner, client, self.states.get(cid), until)
        self._take(cid, state, step)
        return events

    def receipt(self, receipt: Receipt) -> None:
        cid = str(receipt.client_id)
        self._take(cid, *self.runner.receipt(self.states.get(cid), receipt))

    def communication(self, comm: Communication) -> None:
        self._take(comm.client_id, *self.runner.communication(self.states.get(comm.client_id), comm))

    def changes(self, events: list[dict[str, Any]], clients: dict[str, ClientState]) -> None:
        for event in events:
            if not self.runner.matching(event["data"]):
                continue
            cid = str(event["subject"])
            self._take(cid, *self.runner.change(self.states.get(cid), event, None, client=clients.get(cid)))

    def summary(self) -> dict[str, Any]:
        return {"by_scenario": {k: figures(v) for k, v in sorted(self._sums["scenario"].items())},
                "by_campaign": {k: figures(v) for k, v in sorted(self._sums["campaign"].items())},
                "skipped": {k: dict(sorted(v.items())) for k, v in sorted(self.skipped.items())}}


def from_args(args: Any, engine: Engine, out: IO[bytes] | None) -> ScenarioFeed | None:
    """The feed of ``loyalty replay --scenarios`` (None without it); its events go to ``out``.
    Raises RuleSetError for a scenario or policy file that does not check."""
    specs = [s.strip() for spec in args.scenarios or [] for s in spec.split(",") if s.strip()]
    if not specs:
        return None
    if args.jobs > 1:
        raise SystemExit("loyalty replay: --scenarios runs in one process: drop --jobs")
    from agents.scenarios import load_policy, load_scenarios

    rulesets = list({id(rs): rs for rs, _ in engine.dims}.values())
    scenarios = load_scenarios(specs, rulesets)
    runner = ScenarioRunner(scenarios, tz=args.tz, policy=load_policy(args.contact_policy or ""))
    runner.models_at = engine.models_at  # predictive metrics a scenario reads

    def write(event: dict[str, Any]) -> None:
        if out is not None:
            out.write(orjson.dumps(event) + b"\n")

    return ScenarioFeed(runner, engine, write)

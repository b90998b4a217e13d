"""Scenario actions from real workers on the local broker: no duplicate ids across a SIGKILL
restart, the same actions as the pure scenario logic, and webhook retries with a DLQ."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from agents.scenarios import load_scenarios
from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.settings import Settings
from rules import Engine, RejectedInput, load_ruleset, loads, parse_receipt
from rules.scenario.policy import ContactPolicy
from rules.scenario_state import ACTION_TYPE, CONVERSION_TYPE, ClientScenarios, ScenarioRunner
from tests.integration.harness import Worker, produce_lines, read_topic, replay, unique_env

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "rfm", "netix", "profsalon"]


def _worker(tmp_path: Path, bootstrap: str, name: str = "w", **env: str) -> Worker:
    tag = uuid.uuid4().hex[:8]
    policy = tmp_path / "contact-policy.yaml"  # history older than 72 h at the clock: not stale here
    policy.write_text("max_age_hours: 0\n")
    e = unique_env(bootstrap, tmp_path / name, LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF,
                   LOYALTY_SCENARIOS="all", LOYALTY_TOPIC_ACTIONS=f"s{tag}.actions",
                   LOYALTY_TOPIC_ACTIONS_DLQ=f"s{tag}.actions-dlq", LOYALTY_CONTACT_POLICY=str(policy))
    e.update(env)
    return Worker(e, tmp_path / f"{name}.log")


def expected_events(lines: list[bytes], rules: list[str], as_of: str, tz: str = "UTC",
                    scenarios: tuple[str, ...] = ("all",),
                    published: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """The pure scenario logic over the same input, in the order a worker sees it: each
    receipt, then the segment changes the engine makes of it; time-based ones up to as_of.
    ``published``: only the change events with these ids (those in the changes topic)."""
    rulesets = [load_ruleset(r) for r in rules]
    runner = ScenarioRunner(load_scenarios(scenarios, rulesets), tz=tz, policy=ContactPolicy(max_age_hours=0))
    now = datetime.fromisoformat(as_of)
    states: dict[str, ClientScenarios] = {}
    out: dict[str, dict[str, Any]] = {}

    def on_change(event: dict[str, Any]) -> None:
        if published is not None and event["id"] not in published:
            return
        cid = event["subject"]
        state, step = runner.change(states.get(cid), event, int(now.timestamp()))
        if state is not None:
            states[cid] = state
        for e in step.events:  # actions, conversions, responses, revenue
            out[e["id"]] = e

    replay = Replay(Engine(rulesets, tz=tz), now, on_change, lambda row: None)
    for n, line in enumerate(lines, 1):
        try:
            receipt = parse_receipt(loads(line), now)
        except RejectedInput:
            receipt = None
        if receipt is not None and receipt.client_id is not None:
            # population snapshots due before the receipt come first (their changes too)
            replay.population_until(receipt.at)
            state, step = runner.receipt(states.get(receipt.client_id), receipt)
            states[receipt.client_id] = state
            for e in step.events:
                out[e["id"]] = e
        replay.receipt_line(line, n)
    replay.finish()
    return out


def _read(settings: Settings, topic: str) -> list[Any]:
    return read_topic(settings, topic)


def _client(line: bytes) -> str:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ""
    cid = doc.get("client_id") if isinstance(doc, dict) else None
    return cid if isinstance(cid, str) else ""


def wait_until_quiet(settings: Settings, least_changes: int, timeout: float = 150.0,
                     polls: int = 2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read the changes and actions topics until neither grows over ``polls`` polls."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int] = (-1, -1)
    stable = 0
    while time.monotonic() < deadline:
        changes = [orjson.loads(r.value) for r in _read(settings, settings.topic_changes)]
        actions = [orjson.loads(r.value) for r in _read(settings, settings.topic_actions)]
        counts = (len(changes), len(actions))
        distinct = len({c["id"] for c in changes})  # a restart republishes some (same ids)
        stable = stable + 1 if counts == last and distinct >= least_changes else 0
        if stable >= polls:
            break
        last = counts
        time.sleep(1.5)
    return changes, actions


def test_actions_survive_sigkill_with_the_same_ids(tmp_path: Path, kafka_bootstrap: str) -> None:
    lines = list(generate(SimConfig(clients=400, days=75, seed=21, late_rate=0.0)))
    replayed = expected_events(lines, RULES, AS_OF)
    kinds = collections.Counter(e["type"] for e in replayed.values())
    per_scenario = collections.Counter(e["data"]["scenario"] for e in replayed.values() if e["type"] == ACTION_TYPE)
    assert kinds[ACTION_TYPE] > 200 and kinds[CONVERSION_TYPE] > 50, kinds
    assert len(per_scenario) == 6, per_scenario  # every preset fires on this data
    n_changes = len(replay(lines, RULES, AS_OF)["events"])
    # two batches of whole clients: the restarted worker has the second batch to do, and
    # the first batch's uncommitted work to redo
    first = [ln for ln in lines if _client(ln) < "c-0000240"]
    second = [ln for ln in lines if _client(ln) >= "c-0000240"]
    worker = _worker(tmp_path, kafka_bootstrap)
    settings = worker.settings
    topic = settings.topic_actions
    produce_lines(settings, first)
    worker.start()
    try:
        deadline = time.monotonic() + 90
        before: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not before:
            before = [orjson.loads(r.value) for r in read_topic(settings, topic)]
        worker.kill()  # SIGKILL mid-stream: no clean shutdown, no final commit
        assert before and len({e["id"] for e in before}) < len(replayed)
        produce_lines(settings, second)
        worker.start()
        # quiet for 9 s: a pause between population rounds (inputs held until the round
        # merges) looks quiet for a few seconds (the CI run of 2026-12-04 stopped there with 4
        # conversions of held receipts still to come). Not every replay change: the second
        # batch comes after the rounds of its dates (late), so profsalon differs from replay
        changes, events = wait_until_quiet(settings, int(n_changes * 0.95), timeout=240.0, polls=6)
    finally:
        worker.stop()
    # the pure scenario logic over the change events the pipeline published (a change lost
    # by the segmentation pipeline itself cannot trigger anything)
    expected = expected_events(lines, RULES, AS_OF, published={c["id"] for c in changes})
    ids = {e["id"] for e in events}
    assert ids == set(expected)  # the same actions and conversions, no other id
    assert {e["id"] for e in before} <= ids
    # a redelivered action is the same event, byte for byte: downstream dedupe by id is safe
    copies: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in events:
        copies[e["id"]].append(e)
    assert [i for i, c in copies.items() if c != [expected[i]] * len(c)] == []
    # one action id per (trigger, scenario), and one (trigger, scenario) per action id
    pairs = {(e["data"]["trigger"]["id"], e["data"]["scenario"], e["id"]) for e in events
             if e["type"] == ACTION_TYPE}
    assert len({p[:2] for p in pairs}) == len({p[2] for p in pairs}) == len(pairs)
    # keyed by client, so each client's actions stay in order in one partition
    records = read_topic(settings, topic)
    assert all(r.key.decode() == orjson.loads(r.value)["subject"] for r in records)


class FlakyHook:
    """An HTTP endpoint on 127.0.0.1 in a thread: the first ``failures`` calls get 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[str, int]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        status = 503 if len(self.calls) < self.failures else 200
        self.calls.append((body["id"], status))
        return web.Response(status=status)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> FlakyHook:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def hook() -> Iterator[FlakyHook]:
    with FlakyHook(failures=3) as h:
        yield h


def test_webhook_retries_with_backoff_then_dead_letters(tmp_path: Path, kafka_bootstrap: str,
                                                        hook: FlakyHook) -> None:
    # five new salon clients: each first visit enters "irregular" -> one free-visit offer each
    lines = [orjson.dumps({"receipt_id": f"w-{i}", "client_id": f"w-{i}", "type": "sale",
                           "occurred_at": f"2026-06-1{i}T12:00:00+00:00", "total": "1500.00"})
             for i in range(5)]
    worker = _worker(tmp_path, kafka_bootstrap, LOYALTY_RULES="profsalon",
                     LOYALTY_SCENARIOS="third_visit_free",
                     LOYALTY_WEBHOOK_URL=f"http://127.0.0.1:{hook.port}/hook",
                     LOYALTY_WEBHOOK_ATTEMPTS="2", LOYALTY_WEBHOOK_BACKOFF="0.2")
    settings = worker.settings
    produce_lines(settings, lines)
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len({i for i, s in hook.calls if s == 200}) < 4:
            time.sleep(0.5)
        dlq = _read(settings, settings.topic_actions_dlq)
    finally:
        worker.stop()
    actions = [orjson.loads(r.value) for r in _read(settings, settings.topic_actions)]
    ids = {a["id"] for a in actions}
    assert len(ids) == 5
    # 3 failures with 2 attempts per action: the first action fails twice -> DLQ; the second
    # fails once, then succeeds on the retry; the rest succeed at once
    assert [s for _, s in hook.calls[:4]] == [503, 503, 503, 200]
    assert hook.calls[0][0] == hook.calls[1][0] and hook.calls[2][0] == hook.calls[3][0]
    delivered = {i for i, s in hook.calls if s == 200}
    assert len(dlq) == 1
    dead = orjson.loads(dlq[0].value)
    headers = {k: v.decode() for k, v in dlq[0].headers}
    assert dead["id"] == hook.calls[0][0] and dead["id"] not in delivered
    assert headers["reason"] == "webhook_failed" and headers["attempts"] == "2" and headers["status"] == "503"
    assert headers["source-topic"] == settings.topic_actions
    assert delivered | {dead["id"]} == ids

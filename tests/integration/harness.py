"""Run real workers as subprocesses against the local broker, and read their output."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.settings import Settings
from app.wire.kafka_io import ensure_topics, produce, read_to_end

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CREATED: list[str] = []  # app ids of unique_env: their topics and Redis keys, dropped at the end


def unique_env(bootstrap: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an isolated service instance: own app id, topics, data dir, port."""
    tag = uuid.uuid4().hex[:8]
    CREATED.append(f"t{tag}")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LOYALTY_APP_ID": f"t{tag}",
        "LOYALTY_TOPIC_RECEIPTS": f"t{tag}.receipts",
        "LOYALTY_TOPIC_PROFILES": f"t{tag}.profiles",
        "LOYALTY_TOPIC_COMMUNICATIONS": f"t{tag}.communications",
        "LOYALTY_TOPIC_FACTS": f"t{tag}.receipt-facts",
        "LOYALTY_TOPIC_CHANGES": f"t{tag}.changes",
        "LOYALTY_TOPIC_DLQ": f"t{tag}.dlq",
        "LOYALTY_TOPIC_CLIENT_EVENTS": f"t{tag}.client-events",
        "LOYALTY_TOPIC_ACTIONS": f"t{tag}.scenario-actions",
        "LOYALTY_TOPIC_ACTIONS_DLQ": f"t{tag}.scenario-actions.dlq",
        "LOYALTY_PARTITIONS": "4",
        "LOYALTY_DATA_DIR": str(data_dir),
        "LOYALTY_WEB_PORT": str(free_port()),
        "LOYALTY_DUE_INTERVAL": "1",
        "LOYALTY_WATERMARK_IDLE": "2",
        "LOYALTY_LOG_LEVEL": os.environ.get("LOYALTY_TEST_WORKER_LOG_LEVEL", "warning"),
    }
    env.update(extra)
    return env


@dataclass
class Worker:
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def start(self, timeout: float = 90.0) -> None:
        full = {**os.environ, **self.env}
        for var in ("WEB_PORT", "APP_DATADIR", "APP_TABLEDIR"):  # faust env overrides
            full.pop(var, None)
        self.starts += 1
        logfh = open(self.log, "ab")  # noqa: SIM115 - owned by the subprocess
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=full,
                                     stdout=logfh, stderr=subprocess.STDOUT, cwd=ROOT)
        url = f"http://127.0.0.1:{self.env['LOYALTY_WEB_PORT']}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"worker did not answer {url}:\n{self.log.read_text()[-3000:]}")

    def metric(self, name: str) -> float:
        """Sum of a metric's samples on the running worker's /metrics (0 if absent)."""
        url = f"http://127.0.0.1:{self.env['LOYALTY_WEB_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith((name + " ", name + "{")))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def produce_lines(settings: Settings, lines: Iterable[bytes], topic: str | None = None,
                  rate: float = 0.0) -> None:
    async def run() -> None:
        await ensure_topics(settings)
        await produce(settings, topic or settings.topic_receipts, lines, rate=rate)

    asyncio.run(run())


def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end offsets when the read starts (an idle-timeout
    read ended early when a fetch stalled on a busy machine)."""
    return asyncio.run(read_to_end(settings, topic))


def wait_for_changes(settings: Settings, expected: int, timeout: float = 120.0,
                     settle: float = 3.0) -> list[dict[str, Any]]:
    """Read the change topic until it holds ``expected`` distinct ids and stops growing."""
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_changes)]
        if len({e["id"] for e in events}) >= expected:
            time.sleep(settle)
            return [orjson.loads(r.value) for r in read_topic(settings, settings.topic_changes)]
        time.sleep(1.0)
    print(f"wait_for_changes: timed out after {timeout} s with {len({e['id'] for e in events})}"
          f" of {expected} distinct ids")
    return events


def change_diff(events: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str:
    """A short report of the change ids missing from or extra in ``events`` ('' if none)."""
    got = {e["id"]: e for e in events}
    want = {e["id"]: e for e in expected}

    def show(e: dict[str, Any]) -> str:
        d = e["data"]
        return (f"{e['subject']} {d['dimension']} {d['from']}->{d['to']} at {e['time']} "
                f"cause={d['cause']} receipt={d.get('receipt_id')}")

    lines = [f"{len(got)} distinct ids published, {len(want)} expected"]
    for title, ids, src in (("missing", want.keys() - got.keys(), want),
                            ("extra", got.keys() - want.keys(), got)):
        if ids:
            lines.append(f"{len(ids)} {title}:")
            lines += ["  " + show(src[i]) for i in sorted(ids, key=lambda i: (src[i]["subject"], src[i]["time"]))[:20]]
    return "" if len(lines) == 1 else "\n".join(lines)


def final_segments(events: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Last segment per (client, dimension), in the topic's per-client order."""
    out: dict[tuple[str, str], str] = {}
    for e in events:
        out[(e["subject"], e["data"]["dimension"])] = e["data"]["to"]
    return out


def replay(lines: list[bytes], rules: list[str], as_of: str, tz: str = "UTC") -> dict[str, Any]:
    """Run ``loyalty replay``'s in-process path over the same lines."""
    from datetime import datetime

    from app.batch.replay import Replay
    from rules import Engine, load_ruleset

    events: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    engine = Engine([load_ruleset(r) for r in rules], tz=tz)
    rp = Replay(engine, datetime.fromisoformat(as_of), events.append, rejects.append)
    for n, line in enumerate(lines, 1):
        rp.receipt_line(line, n)
    rows = rp.finish()
    segments = {(row["client_id"], dim): seg for row in rows for dim, seg in row["segments"].items()}
    return {"events": events, "rejects": rejects, "segments": segments, "stats": rp.stats}


async def drop_test_data(bootstrap: str, redis_url: str | None, app_ids: list[str]) -> tuple[int, int]:
    """Delete the topics (every name starting with an app id: its own topics and Faust's
    changelogs and repartition topics) and the Redis keys (``loyalty:<app id>:*``; none
    without ``redis_url``) of test service instances. Returns (topics, keys) deleted."""
    from aiokafka.admin import AIOKafkaAdminClient

    from app.projection.store import Projection, drop_generation, namespace

    keys = 0
    for app_id in app_ids if redis_url else []:
        proj = Projection.from_url(redis_url, namespace(app_id))
        try:
            keys += await drop_generation(proj.redis, namespace(app_id) + ":")
        finally:
            await proj.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(tuple(app_ids))]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
    return len(names), keys

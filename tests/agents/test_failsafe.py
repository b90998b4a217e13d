"""agents.failsafe: poison records go to the DLQ, infrastructure errors are retried with
the worker not ready meanwhile, and a batch that fails unhandled is never acked."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from agents import failsafe
from agents.handler import ClientHandler
from app.metrics import Metrics
from app.wire import codecs
from tests.agents.test_handler import NOW, _memory_app, receipt


def test_infrastructure_or_the_records_own() -> None:
    assert failsafe.is_infrastructure(OSError(errno.ENOSPC, "No space left on device"))
    assert failsafe.is_infrastructure(KafkaConnectionError())
    assert failsafe.is_infrastructure(Exception("IO error: No space left on device: While appending"))
    assert not failsafe.is_infrastructure(MessageSizeTooLargeError())
    assert not failsafe.is_infrastructure(ValueError("argument out of range"))
    assert failsafe.describe(ValueError("a\nb  c")) == "ValueError: a b c"


async def test_guard_retries_with_backoff_and_reports_blocked() -> None:
    metrics = Metrics.create()
    naps: list[float] = []
    guard = failsafe.Guard(metrics, sleep=lambda s: _nap(naps, s), first=0.5, cap=4.0)
    calls = 0
    seen_blocked: list[dict[str, str]] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        seen_blocked.append(dict(guard.blocked))
        return "done"

    assert await guard.retry("clients", flaky) == "done"
    assert naps == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert seen_blocked == [{"clients": "OSError: [Errno 28] No space left on device"}]
    assert guard.ok and metrics.blocked.labels("clients")._value.get() == 0

    async def bug() -> None:
        raise ValueError("not infrastructure")

    with pytest.raises(ValueError):
        await guard.retry("clients", bug)
    assert calls == 6 and naps == [0.5, 1.0, 2.0, 4.0, 4.0]  # not retried


async def _nap(naps: list[float], seconds: float) -> None:
    naps.append(seconds)


def test_hold_keeps_faust_from_acking() -> None:
    acked: list[int] = []
    msgs = [SimpleNamespace(acked=False, topic="t", partition=1, offset=n) for n in (7, 8)]
    failsafe.hold([SimpleNamespace(message=m) for m in msgs])
    assert all(m.acked for m in msgs) and not acked  # Faust's Message.ack skips acked messages


def _capture(sent: list[tuple[Any, Any, Any]], fail: list[BaseException] | None = None) -> Any:
    async def send(*, key: Any = None, value: Any = None, headers: Any = None, **_: Any) -> Any:
        if fail:
            raise fail.pop(0)
        sent.append((key, value, headers))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked
    return send


async def _until(check: Any) -> None:
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0.05)


async def test_a_poison_record_goes_to_the_dlq_and_the_partition_moves_on(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    app, pipeline = _memory_app(tmp_path, LOYALTY_BATCH_MAX="1")
    changes: list[Any] = []
    dlq: list[Any] = []
    pipeline.changes.send = _capture(changes)
    pipeline.dlq.send = _capture(dlq)
    pipeline.direct_sends = False
    original = ClientHandler.handle

    def handle(self: ClientHandler, client_id: str, message: bytes, stored: bytes | None,
               read: Any = None) -> Any:
        if client_id == "c-poison":
            raise ValueError("argument out of range")
        return original(self, client_id, message, stored, read)

    monkeypatch.setattr(ClientHandler, "handle", handle)
    async with app.agents["clients"].test_context() as ctx:
        bought = NOW.replace(day=1)
        await ctx.put(codecs.envelope(codecs.RECEIPT, receipt("r1", bought, client="c-poison")),
                      key=b"c-poison", partition=0)
        await ctx.put(codecs.envelope(codecs.RECEIPT, receipt("r2", bought)), key=b"c-1", partition=0)
        await _until(lambda: b"c-1" in pipeline.clients.data)
    assert [orjson.loads(v)["subject"] for _, v, _ in changes] == ["c-1"]
    assert len(dlq) == 1
    headers = dict(dlq[0][2])
    assert headers["reason"] == b"processing_error"
    assert headers["detail"] == b"ValueError: argument out of range"
    assert orjson.loads(dlq[0][1])["receipt_id"] == "r1"  # the receipt as sent, no envelope byte
    assert pipeline.metrics.processing_errors.labels("clients")._value.get() == 1


async def test_an_infrastructure_error_re_runs_the_batch_until_it_passes(tmp_path: Path) -> None:
    app, pipeline = _memory_app(tmp_path, LOYALTY_BATCH_MAX="1")
    changes: list[Any] = []
    full = OSError(errno.ENOSPC, "No space left on device")
    pipeline.changes.send = _capture(changes, [full, full])
    pipeline.direct_sends = False
    pipeline.guard = failsafe.Guard(pipeline.metrics, first=0.01)
    async with app.agents["clients"].test_context() as ctx:
        await ctx.put(codecs.envelope(codecs.RECEIPT, receipt("r1", NOW.replace(day=1))), key=b"c-1", partition=0)
        await _until(lambda: b"c-1" in pipeline.clients.data)
    assert [orjson.loads(v)["subject"] for _, v, _ in changes] == ["c-1"]  # once, after two failures
    assert pipeline.guard.ok


def test_prober_sends_one_probe_per_stuck_spell() -> None:
    from agents.monitor import Prober

    prober = Prober(after=10)
    sent = [t for t in range(0, 60) if prober.due("tp", 100, 105, float(t))]  # stuck below the end
    assert sent == [10, 20, 30, 40, 50]
    assert not any(prober.due("tp", 100 + t, 500, float(59 + t)) for t in range(1, 30))  # moving: busy
    assert not any(prober.due("tp", 500, 500, float(t)) for t in range(100, 130))  # at the end
    assert not prober.due("tp", None, 5, 200.0) and not prober.due("tp", 3, None, 300.0)


def test_a_probe_has_no_effect() -> None:
    from tests.agents.test_handler import handler

    out = handler().handle("\x00probe", codecs.PROBE, None)
    assert (out.kind, out.outcome, out.value, out.events) == ("probe", "probe", None, [])

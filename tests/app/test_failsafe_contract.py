"""The input contract that replay and the stream share for hostile input: oversized
messages, amounts past the state's range, reused receipt ids (no broker here; the stream's
side runs against the real broker in tests/integration/test_failsafe.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from app.cli.main import main as cli_main
from app.wire import codecs
from app.wire.codecs import DLQ_KEEP, dlq_copy
from rules.inputs.receipts import MAX_MESSAGE_BYTES


def _receipt(rid: str, total: str = "100.00", client: str = "c-1", pad: int = 0,
             when: str = "2026-03-02T10:00:00+03:00") -> bytes:
    doc = {"receipt_id": rid, "client_id": client, "occurred_at": when, "type": "sale", "total": total}
    if pad:
        doc["items"] = [{"category": "x", "amount": "0.00", "sku": "s" * pad}]
    return orjson.dumps(doc)


def test_dlq_copy_keeps_small_messages_whole_and_truncates_big_ones() -> None:
    assert dlq_copy(b"abc") == (b"abc", [])
    big = b"x" * (DLQ_KEEP + 10)
    value, headers = dlq_copy(big)
    assert value == big[:DLQ_KEEP]
    assert dict(headers) == {"original-size": str(len(big)).encode(), "truncated": b"true",
                             "original-sha256": hashlib.sha256(big).hexdigest().encode()}


def test_replay_rejects_hostile_receipts_with_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = _receipt("big", pad=MAX_MESSAGE_BYTES)
    lines = [_receipt("a"), huge, _receipt("b", total="92233720368547758.08"),
             _receipt("a", total="999.00"), _receipt("a"), _receipt("c", pad=MAX_MESSAGE_BYTES // 2)]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    code = cli_main(["replay", "--rules", "boostfeel", "--input", str(src), "--as-of", "2026-03-03T00:00:00Z",
                     "--order", "input",  # which copy of "a" is the first one depends on the order
                     "--quiet", "--rejects-out", str(tmp_path / "rejects.jsonl")])
    assert code == 0
    summary = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["duplicates"] == 1
    rows = [orjson.loads(x) for x in (tmp_path / "rejects.jsonl").read_bytes().splitlines()]
    assert [(r["line"], r["reason"]) for r in rows] == [
        (2, "message_too_large"), (3, "bad_amount"), (4, "conflicting_duplicate")]
    assert rows[0]["original-size"] == str(len(huge)) and len(rows[0]["raw"]) == DLQ_KEEP


def test_personal_fields_of_a_profile_never_go_further(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from agents.handler import route
    from app.batch.replay import Replay
    from rules import Engine, load_ruleset

    personal = {"name": "Tatyana", "phone": "+7 900 000-00-00", "email": "t@example.org"}
    good = orjson.dumps({"client_id": "c-1", "gender": "f", **personal})
    bad = orjson.dumps({"client_id": "c-2", "gender": "?", **personal})
    _, envelope, _ = route(good, codecs.PROFILE, datetime(2026, 6, 1, tzinfo=UTC))
    assert orjson.loads(envelope[1:]) == {  # kind byte, then the body: contacts only as digests
        "client_id": "c-1", "gender": "f",
        "email_sha256": hashlib.sha256(b"t@example.org").hexdigest(),
        "phone_sha256": hashlib.sha256(b"79000000000").hexdigest()}
    rejects: list[dict[str, object]] = []
    rp = Replay(Engine([load_ruleset("demographics")]), datetime(2026, 6, 1, tzinfo=UTC), lambda e: None,
                rejects.append)
    rp.profile_line(bad, 1)
    assert rejects and not any(v in str(rejects) for v in personal.values())

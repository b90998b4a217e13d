"""Argument types shared by the ``loyalty`` subcommands."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def instant(text: str) -> datetime:
    if text == "now":
        return datetime.now(UTC)
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. 2026-06-15T00:00:00Z")
    return t


def positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n

"""Argument types shared by the ``loyalty`` subcommands."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with one-line mistakes: ``loyalty replay: --as-of: ...`` and exit 2, no usage
    dump (``--help`` shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def instant(text: str) -> datetime:
    if text == "now":
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an instant: ISO 8601 with a UTC offset, e.g. "
                                         "2026-06-15T00:00:00Z, or 'now'") from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. 2026-06-15T00:00:00Z")
    return t


def zone(text: str) -> str:
    """An IANA time zone name."""
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(text)
    except Exception:
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r} (an IANA name such as "
                                         "Europe/Moscow)") from None
    return text


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n

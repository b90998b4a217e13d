"""rules.calendar.iso against the C library's formatting."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from rules.calendar import iso


@given(st.integers(min_value=-2_000_000_000, max_value=32_503_680_000))
def test_iso_matches_strftime(s: int) -> None:
    assert iso(s) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))


def test_iso_examples() -> None:
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(-1) == "1969-12-31T23:59:59Z"
    assert iso(1_780_000_000) == "2026-05-28T20:26:40Z"
    assert iso(86_399) == "1970-01-01T23:59:59Z"

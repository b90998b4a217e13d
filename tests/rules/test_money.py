"""parse_money's integer fast path agrees with exact Decimal arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.errors import RejectedInput
from rules.inputs.receipts import parse_money


def _reference(text: str, exponent: int) -> int | None:
    minor = Decimal(text).scaleb(exponent)
    if abs(minor) > 10**12:  # MAX_MINOR, written out: the bound is part of the contract
        return None
    return int(minor) if minor == minor.to_integral_value() else None


def _check(text: str, exponent: int, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(RejectedInput):
            parse_money(text, exponent, "total")
    else:
        assert parse_money(text, exponent, "total") == expected


@given(st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,5})?", fullmatch=True), st.sampled_from([0, 2, 3]))
def test_decimal_strings_match_decimal_arithmetic(text: str, exponent: int) -> None:
    _check(text, exponent, _reference(text, exponent))


def test_examples() -> None:
    assert parse_money("450.00", 2, "total") == 45000
    assert parse_money("450.5", 2, "total") == 45050
    assert parse_money("-0.05", 2, "total") == -5
    assert parse_money("450.000", 2, "total") == 45000  # trailing zeros: exact, accepted
    assert parse_money("7", 0, "total") == 7
    with pytest.raises(RejectedInput):
        parse_money("450.001", 2, "total")
    with pytest.raises(RejectedInput):
        parse_money("4.5e2", 2, "total")


@given(st.integers(-10**15, 10**15), st.sampled_from([0, 2, 3]))
def test_money_text_matches_decimal(minor: int, exponent: int) -> None:
    from rules.metrics import money_text

    assert money_text(minor, exponent) == str(Decimal(minor).scaleb(-exponent))


@given(st.text(alphabet=st.sampled_from("0123456789.-+e _\u0661\u00b2\uff11"), max_size=12),
       st.sampled_from([0, 2, 3]))
def test_any_text_is_parsed_exactly_or_rejected(text: str, exponent: int) -> None:
    """Non-ASCII digits (Arabic-Indic, superscript, fullwidth), signs, exponents, blanks:
    only a plain ASCII decimal is accepted, and then exactly."""
    import re

    plain = re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text) is not None
    _check(text, exponent, _reference(text, exponent) if plain else None)


def test_numbers_and_wrong_types() -> None:
    assert parse_money(450, 2, "total") == 45000
    assert parse_money(450.5, 2, "total") == 45050
    for bad in (True, None, [1], {"a": 1}):
        with pytest.raises(RejectedInput) as err:
            parse_money(bad, 2, "total")
        assert err.value.reason == "bad_type"

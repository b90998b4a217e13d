"""The input contract: parse_receipt / parse_profile and every rejection reason code."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

import rules.inputs.receipts as receipts_mod
from rules import RejectedInput, loads, parse_profile, parse_receipt
from rules.inputs.receipts import Item

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def good(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "receipt_id": "r-1", "client_id": "c-1", "store_id": "s-1",
        "occurred_at": "2026-03-10T10:15:00+03:00", "type": "sale", "total": "450.10",
        "currency": "RUB",
        "items": [{"sku": "latte", "category": "coffee", "qty": 1, "amount": "250.10"},
                  {"category": "dessert", "amount": 200}],
    }
    for key, value in overrides.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def reject(obj: Any, now: datetime | None = NOW) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        parse_receipt(obj, now)
    return info.value


# -- valid receipts ---------------------------------------------------------------------------


def test_valid_sale_is_parsed_completely() -> None:
    r = parse_receipt(good(), NOW)
    assert r.receipt_id == "r-1" and r.client_id == "c-1" and r.store_id == "s-1"
    assert r.type == "sale" and r.currency == "RUB" and r.original_receipt_id is None
    assert r.total == 45010
    assert r.occurred_at == datetime(2026, 3, 10, 7, 15, tzinfo=UTC)
    assert r.occurred_at.utcoffset() == timedelta(hours=3)
    assert r.items == (Item("coffee", 25010), Item("dessert", 20000))


def test_valid_return_names_original() -> None:
    r = parse_receipt(good(receipt_id="r-2", type="return", original_receipt_id="r-1",
                           items=...), NOW)
    assert (r.type, r.original_receipt_id, r.total, r.items) == ("return", "r-1", 45010, ())


@pytest.mark.parametrize(
    ("value", "minor"),
    [
        (450.1, 45010), ("450.1", 45010), ("450.10", 45010), (450, 45000), ("450", 45000),
        (0.1, 10), ("0.1", 10), (0.2, 20), (0.3, 30), ("0.30", 30), (0, 0), ("0.00", 0),
        (19.99, 1999), (1e-2, 1), (123456789.12, 12345678912),
        ("9999999999.99", 999999999999),
    ],
)
def test_money_is_exact_in_minor_units(value: Any, minor: int) -> None:
    total = parse_receipt(good(total=value, items=...), NOW).total
    assert total == minor and isinstance(total, int)


def test_money_sums_exactly_where_floats_do_not() -> None:
    assert 0.1 + 0.2 != 0.3  # the float trap the core must avoid
    a = parse_receipt(good(total=0.1, items=...), NOW).total
    b = parse_receipt(good(total="0.2", items=...), NOW).total
    c = parse_receipt(good(total=0.3, items=...), NOW).total
    assert a + b == c == 30
    # ten items of 0.1 make exactly one rouble
    r = parse_receipt(good(total=1, items=[{"category": "x", "amount": 0.1}] * 10), NOW)
    assert sum(i.amount for i in r.items) == r.total == 100


@pytest.mark.parametrize(
    ("currency", "value", "minor"),
    [("JPY", 1500, 1500), ("JPY", "1500", 1500), ("KWD", "1.234", 1234), ("USD", "9.99", 999),
     ("EUR", 0.5, 50)],
)
def test_currency_exponents(currency: str, value: Any, minor: int) -> None:
    assert parse_receipt(good(currency=currency, total=value, items=...), NOW).total == minor


def test_currency_defaults_to_rub() -> None:
    assert parse_receipt(good(currency=...), NOW).currency == "RUB"


def test_anonymous_receipt_is_accepted() -> None:
    assert parse_receipt(good(client_id=None), NOW).client_id is None
    assert parse_receipt(good(client_id=...), NOW).client_id is None
    assert parse_receipt(good(store_id=None), NOW).store_id is None


def test_items_default_and_category() -> None:
    assert parse_receipt(good(items=None), NOW).items == ()
    assert parse_receipt(good(items=[]), NOW).items == ()
    r = parse_receipt(good(items=[{"amount": "1.50"}]), NOW)
    assert r.items == (Item("uncategorized", 150),)


def test_time_bounds_are_inclusive() -> None:
    assert parse_receipt(good(occurred_at="1970-01-01T00:00:00Z"), NOW).occurred_at.year == 1970
    assert parse_receipt(good(occurred_at="1997-01-01T10:00:00-05:00"), NOW).at == 852130800
    edge = (NOW + timedelta(days=1)).isoformat()
    assert parse_receipt(good(occurred_at=edge), NOW).occurred_at == NOW + timedelta(days=1)
    # without "now" there is no future bound
    assert parse_receipt(good(occurred_at="2100-01-01T00:00:00Z"), None).occurred_at.year == 2100


def test_z_and_offsets_are_the_same_instant() -> None:
    a = parse_receipt(good(occurred_at="2026-03-10T07:15:00Z"), NOW).occurred_at
    b = parse_receipt(good(occurred_at="2026-03-10T10:15:00+03:00"), NOW).occurred_at
    assert a == b


# -- every rejection reason ------------------------------------------------------------------


def test_reason_codes_in_docstring_are_the_ones_tested() -> None:
    doc = receipts_mod.__doc__ or ""
    listed = set(re.findall(r"``([a-z_]+)``", doc.split("Reason codes:")[1]))
    assert listed == set(REASONS)


REASONS = (
    "invalid_json", "not_an_object", "missing_field", "bad_type", "bad_value", "bad_amount",
    "negative_total", "unknown_type", "naive_timestamp", "bad_timestamp", "future_timestamp",
    "too_old_timestamp",
)


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"a": 1', "{'single': 'quotes'}", b"\xff"])
def test_invalid_json(raw: bytes | str) -> None:
    with pytest.raises(RejectedInput) as info:
        loads(raw)
    assert info.value.reason == "invalid_json"


def test_loads_returns_documents() -> None:
    assert loads(b'{"total": 450.1}') == {"total": 450.1}
    assert loads('["an", "array"]') == ["an", "array"]


@pytest.mark.parametrize("obj", [["an", "array"], "text", 5, None, True])
def test_not_an_object(obj: Any) -> None:
    assert reject(obj).reason == "not_an_object"
    with pytest.raises(RejectedInput) as info:
        parse_profile(obj, NOW)
    assert info.value.reason == "not_an_object"


CASES: list[tuple[dict[str, Any], str, str]] = [
    # (overrides, reason, field)
    ({"receipt_id": ...}, "missing_field", "receipt_id"),
    ({"receipt_id": None}, "missing_field", "receipt_id"),
    ({"type": ...}, "missing_field", "type"),
    ({"total": ...}, "missing_field", "total"),
    ({"occurred_at": ...}, "missing_field", "occurred_at"),
    ({"items": [{"category": "coffee"}]}, "missing_field", "items[0]"),
    ({"receipt_id": 42}, "bad_type", "receipt_id"),
    ({"client_id": 42}, "bad_type", "client_id"),
    ({"store_id": ["s"]}, "bad_type", "store_id"),
    ({"original_receipt_id": 7}, "bad_type", "original_receipt_id"),
    ({"total": True}, "bad_type", "total"),
    ({"total": None}, "bad_type", "total"),
    ({"total": {"amount": 1}}, "bad_type", "total"),
    ({"occurred_at": 1767225600}, "bad_type", "occurred_at"),
    ({"items": "coffee"}, "bad_type", "items"),
    ({"items": [5]}, "bad_type", "items[0]"),
    ({"items": [{"amount": False}]}, "bad_type", "items[0].amount"),
    ({"receipt_id": ""}, "bad_value", "receipt_id"),
    ({"client_id": "x" * 129}, "bad_value", "client_id"),
    ({"currency": "RUBX"}, "bad_value", "currency"),
    ({"currency": "R1B"}, "bad_value", "currency"),
    ({"currency": None}, "bad_value", "currency"),
    ({"items": [{"category": "", "amount": 1}]}, "bad_value", "items[0]"),
    ({"items": [{"category": "x" * 65, "amount": 1}]}, "bad_value", "items[0]"),
    ({"items": [{"category": "c", "amount": 1, "qty": -1}]}, "bad_value", "items[0]"),
    ({"items": [{"category": "c", "amount": 1, "qty": "2"}]}, "bad_value", "items[0]"),
    ({"total": "450.101"}, "bad_amount", "total"),
    ({"total": 450.101}, "bad_amount", "total"),
    ({"total": 0.30000000000000004}, "bad_amount", "total"),
    ({"total": "abc"}, "bad_amount", "total"),
    ({"total": ""}, "bad_amount", "total"),
    ({"total": "NaN"}, "bad_amount", "total"),
    ({"total": "Infinity"}, "bad_amount", "total"),
    ({"total": "1,50"}, "bad_amount", "total"),
    ({"total": "1.5", "currency": "JPY"}, "bad_amount", "total"),
    ({"items": [{"category": "c", "amount": "0.001"}]}, "bad_amount", "items[0].amount"),
    ({"items": [{"category": "c", "amount": -1}]}, "bad_amount", "items[0]"),
    ({"total": -1}, "negative_total", "total"),
    ({"total": "-0.01"}, "negative_total", "total"),
    ({"type": "refund"}, "unknown_type", "type"),
    ({"type": "SALE"}, "unknown_type", "type"),
    ({"type": 1}, "unknown_type", "type"),
    ({"occurred_at": "2026-03-10T10:15:00"}, "naive_timestamp", "occurred_at"),
    ({"occurred_at": "2026-03-10"}, "naive_timestamp", "occurred_at"),
    ({"occurred_at": "yesterday"}, "bad_timestamp", "occurred_at"),
    ({"occurred_at": "2026-02-30T10:00:00+03:00"}, "bad_timestamp", "occurred_at"),
    ({"occurred_at": "2026-03-10T25:00:00+03:00"}, "bad_timestamp", "occurred_at"),
    ({"occurred_at": "2026-03-10T10:00:00z"}, "bad_timestamp", "occurred_at"),
    ({"occurred_at": "2026-03-11T12:00:01Z"}, "future_timestamp", "occurred_at"),
    ({"occurred_at": "2027-01-01T00:00:00+03:00"}, "future_timestamp", "occurred_at"),
    ({"occurred_at": "1969-12-31T23:59:59Z"}, "too_old_timestamp", "occurred_at"),
    ({"occurred_at": "1970-01-01T02:59:59+03:00"}, "too_old_timestamp", "occurred_at"),
]


@pytest.mark.parametrize(("overrides", "reason", "field"), CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_rejections(overrides: dict[str, Any], reason: str, field: str) -> None:
    exc = reject(good(**overrides))
    assert exc.reason == reason
    assert exc.field == field
    assert exc.as_dict()["reason"] == reason and exc.as_dict()["field"] == field
    assert str(exc).startswith(reason)


def test_every_reason_code_is_covered() -> None:
    covered = {c[1] for c in CASES} | {"invalid_json", "not_an_object"}
    assert covered == set(REASONS)


def test_huge_amount_is_rejected() -> None:
    # was stored exactly; a sum past 2^63 then crashed the state codec and orjson in the stream
    with pytest.raises(RejectedInput) as err:
        parse_receipt(good(total="12345678901234567890.12", items=...), NOW)
    assert err.value.reason == "bad_amount"


# -- profiles --------------------------------------------------------------------------------


def test_profile_full() -> None:
    p = parse_profile({
        "client_id": "c-1", "updated_at": "2026-03-01T09:00:00+03:00",
        "birth_date": "1990-05-17", "gender": "F", "city": "Kazan",
        "registered_at": "2025-01-01T00:00:00Z", "welcome_bonus_at": "2025-01-02T10:00:00+03:00",
        "tags": ["vip", "b2b", "vip"], "unknown": 1,
    }, NOW)
    assert p.client_id == "c-1"
    assert p.updated_at == datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=3)))
    assert p.fields == {
        "birth_date": date(1990, 5, 17), "gender": "f", "city": "Kazan",
        "registered_at": datetime(2025, 1, 1, tzinfo=UTC),
        "welcome_bonus_at": datetime(2025, 1, 2, 7, 0, tzinfo=UTC),
        "tags": ["b2b", "vip"],
    }


def test_profile_minimal_and_nulls() -> None:
    p = parse_profile({"client_id": "c-1", "birth_date": None, "gender": None, "city": None,
                       "tags": None, "updated_at": None}, NOW)
    assert p.fields == {} and p.updated_at is None


@pytest.mark.parametrize(
    ("doc", "reason", "field"),
    [
        ({"client_id": None}, "missing_field", "client_id"),
        ({"client_id": 5}, "bad_type", "client_id"),
        ({"client_id": ""}, "bad_value", "client_id"),
        ({"birth_date": 19900517}, "bad_type", "birth_date"),
        ({"birth_date": "17.05.1990"}, "bad_value", "birth_date"),
        ({"birth_date": "1990-02-30"}, "bad_value", "birth_date"),
        ({"birth_date": "1899-12-31"}, "bad_value", "birth_date"),
        ({"birth_date": "2026-03-11"}, "bad_value", "birth_date"),
        ({"gender": "female"}, "bad_value", "gender"),
        ({"gender": 1}, "bad_value", "gender"),
        ({"city": ""}, "bad_value", "city"),
        ({"city": 7}, "bad_type", "city"),
        ({"tags": "vip"}, "bad_type", "tags"),
        ({"tags": ["vip", ""]}, "bad_type", "tags"),
        ({"tags": [1]}, "bad_type", "tags"),
        ({"updated_at": "2026-03-01"}, "naive_timestamp", "updated_at"),
        ({"updated_at": "soon"}, "bad_timestamp", "updated_at"),
        ({"registered_at": "2026-03-12T00:00:00Z"}, "future_timestamp", "registered_at"),
        ({"welcome_bonus_at": "1969-01-01T00:00:00Z"}, "too_old_timestamp", "welcome_bonus_at"),
    ],
)
def test_profile_rejections(doc: dict[str, Any], reason: str, field: str) -> None:
    with pytest.raises(RejectedInput) as info:
        parse_profile({"client_id": "c-1", **doc}, NOW)
    assert (info.value.reason, info.value.field) == (reason, field)


def test_profile_birth_date_today_is_allowed() -> None:
    assert parse_profile({"client_id": "c", "birth_date": "2026-03-10"}, NOW).fields["birth_date"] \
        == date(2026, 3, 10)


@pytest.mark.parametrize("total", ["92233720368547758.08", "10000000000.01", 10_000_000_001, "1e30"])
def test_amounts_beyond_the_bound_are_bad_amount(total: object) -> None:
    from rules.inputs.receipts import MAX_MINOR

    raw = {"receipt_id": "r", "client_id": "c", "occurred_at": "2026-03-01T09:00:00+03:00",
           "type": "sale", "total": total}
    with pytest.raises(RejectedInput) as err:
        parse_receipt(raw, None)
    assert err.value.reason == "bad_amount"
    raw["total"] = "10000000000.00"  # exactly the bound
    assert parse_receipt(raw, None).total == MAX_MINOR
    raw["total"], raw["items"] = "1.00", [{"category": "x", "amount": "99999999999999.00"}]
    with pytest.raises(RejectedInput) as err:
        parse_receipt(raw, None)
    assert (err.value.reason, err.value.field) == ("bad_amount", "items[0].amount")


def test_the_earliest_instant_is_a_parameter() -> None:
    """``earliest`` (epoch s; LOYALTY_EARLIEST_EVENT / --earliest) moves the lower bound."""
    bound = 946684800  # 2000-01-01T00:00:00Z
    doc = good(occurred_at="1999-12-31T23:59:59Z")
    assert parse_receipt(doc, NOW).at == bound - 1
    with pytest.raises(RejectedInput) as info:
        parse_receipt(doc, NOW, bound)
    assert info.value.reason == "too_old_timestamp" and "2000-01-01T00:00:00Z" in str(info.value)
    with pytest.raises(RejectedInput):
        parse_profile({"client_id": "c", "registered_at": "1999-12-31T23:59:59Z"}, NOW, bound)

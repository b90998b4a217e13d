"""The JSON Schemas in rules/schemas/ and the parsers in rules/inputs/receipts.py agree.

Every document of the tables is checked against both the schema (jsonschema, draft 2020-12)
and the code. Rules JSON Schema cannot express (decimals per currency, real calendar dates,
time bounds relative to "now") are asserted on the code only.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import rules
from rules import RejectedInput, loads, parse_profile, parse_receipt
from rules.inputs.receipts import _MAX_ID, GENDERS, RECEIPT_TYPES

SCHEMAS = Path(rules.__file__).parent / "schemas"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


RECEIPT = _validator("receipt.schema.json")
PROFILE = _validator("profile.schema.json")


def receipt(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "receipt_id": "r-1", "client_id": "c-1", "store_id": "s-1",
        "occurred_at": "2026-03-10T10:15:00+03:00", "type": "sale", "total": "450.10",
        "currency": "RUB", "items": [{"sku": "x", "category": "coffee", "qty": 1, "amount": 450.1}],
    }
    for key, value in overrides.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def code_verdict(parse: Any, doc: Any) -> str | None:
    """None if the code accepts the document, else the reason code."""
    try:
        parse(doc, NOW)
    except RejectedInput as exc:
        return exc.reason
    return None


def test_schemas_are_valid_draft_2020_12() -> None:
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def test_schema_constants_match_the_code() -> None:
    props = RECEIPT.schema["properties"]
    assert props["type"]["enum"] == list(RECEIPT_TYPES)
    assert props["currency"]["default"] == "RUB"
    assert RECEIPT.schema["$defs"]["id"]["maxLength"] == _MAX_ID
    assert set(RECEIPT.schema["required"]) == {"receipt_id", "type", "total", "occurred_at"}
    genders = PROFILE.schema["properties"]["gender"]["anyOf"][0]["enum"]
    assert {g.lower() for g in genders} == set(GENDERS)
    from rules.inputs import profiles
    from rules.inputs.receipts import PROFILE_FIELDS

    props = PROFILE.schema["properties"]
    assert set(PROFILE_FIELDS) | {"email", "phone"} <= set(props)
    assert props["consent"]["anyOf"][0]["propertyNames"]["enum"] == list(profiles.CONSENT_CHANNELS)
    assert props["children"]["anyOf"][0]["maxItems"] == profiles.MAX_CHILDREN
    assert props["labels"]["anyOf"][0]["maxItems"] == profiles.MAX_LABELS
    assert props["labels"]["anyOf"][0]["items"]["maxLength"] == profiles.MAX_LABEL
    attrs = props["attributes"]["anyOf"][0]
    assert attrs["maxProperties"] == profiles.MAX_ATTRIBUTES
    assert attrs["propertyNames"]["maxLength"] == profiles.MAX_ATTRIBUTE_KEY
    assert attrs["additionalProperties"]["anyOf"][0]["maxLength"] == profiles.MAX_ATTRIBUTE_TEXT
    assert props["first_name"]["anyOf"][0]["maxLength"] == profiles.MAX_NAME
    assert props["email"]["anyOf"][0]["maxLength"] == profiles.MAX_EMAIL
    phone = props["phone"]["anyOf"][1]
    assert (len(str(phone["minimum"])), len(str(phone["maximum"]))) == (
        profiles.MIN_PHONE_DIGITS, profiles.MAX_PHONE_DIGITS)


# -- receipts: schema and code agree ----------------------------------------------------------

RECEIPTS_AGREE: list[tuple[str, dict[str, Any], str | None]] = [
    ("full", {}, None),
    ("minimal", {"client_id": ..., "store_id": ..., "currency": ..., "items": ...}, None),
    ("anonymous-null", {"client_id": None}, None),
    ("return", {"type": "return", "original_receipt_id": "r-0"}, None),
    ("original-null", {"original_receipt_id": None}, None),
    ("number-total", {"total": 450.1}, None),
    ("int-total", {"total": 450}, None),
    ("zero-total", {"total": "0"}, None),
    ("items-null", {"items": None}, None),
    ("items-empty", {"items": []}, None),
    ("item-no-category", {"items": [{"amount": "1.00"}]}, None),
    ("jpy", {"currency": "JPY", "total": 1500, "items": ...}, None),
    ("utc-z", {"occurred_at": "2026-03-10T07:15:00Z"}, None),
    ("fraction", {"occurred_at": "2026-03-10T07:15:00.123456Z"}, None),
    ("no-seconds", {"occurred_at": "2026-03-10T10:15+03:00"}, None),
    ("space-separator", {"occurred_at": "2026-03-10 10:15:00+03:00"}, None),
    ("negative-offset", {"occurred_at": "2026-03-09T23:15:00-05:00"}, None),
    ("extra-fields-ignored", {"pos": {"terminal": 3}, "cashier": "Anna"}, None),
    ("missing-receipt-id", {"receipt_id": ...}, "missing_field"),
    ("null-receipt-id", {"receipt_id": None}, "missing_field"),
    ("missing-type", {"type": ...}, "missing_field"),
    ("missing-total", {"total": ...}, "missing_field"),
    ("missing-occurred-at", {"occurred_at": ...}, "missing_field"),
    ("item-no-amount", {"items": [{"category": "tea"}]}, "missing_field"),
    ("int-receipt-id", {"receipt_id": 17}, "bad_type"),
    ("int-client-id", {"client_id": 17}, "bad_type"),
    ("bool-total", {"total": True}, "bad_type"),
    ("null-total", {"total": None}, "bad_type"),
    ("epoch-time", {"occurred_at": 1773126900}, "bad_type"),
    ("items-object", {"items": {"amount": 1}}, "bad_type"),
    ("item-string", {"items": ["coffee"]}, "bad_type"),
    ("empty-id", {"receipt_id": ""}, "bad_value"),
    ("long-id", {"store_id": "s" * 129}, "bad_value"),
    ("currency-4", {"currency": "RUBL"}, "bad_value"),
    ("currency-digit", {"currency": "R2B"}, "bad_value"),
    ("currency-null", {"currency": None}, "bad_value"),
    ("empty-category", {"items": [{"category": "", "amount": 1}]}, "bad_value"),
    ("long-category", {"items": [{"category": "c" * 65, "amount": 1}]}, "bad_value"),
    ("negative-qty", {"items": [{"amount": 1, "qty": -2}]}, "bad_value"),
    ("string-qty", {"items": [{"amount": 1, "qty": "1"}]}, "bad_value"),
    ("comma-decimal", {"total": "450,10"}, "bad_amount"),
    ("word-total", {"total": "free"}, "bad_amount"),
    ("empty-total", {"total": ""}, "bad_amount"),
    ("nan-total", {"total": "NaN"}, "bad_amount"),
    ("negative-item", {"items": [{"amount": -1}]}, "bad_amount"),
    ("negative-total", {"total": -5}, "negative_total"),
    ("negative-total-string", {"total": "-5.00"}, "negative_total"),
    ("refund-type", {"type": "refund"}, "unknown_type"),
    ("null-type", {"type": None}, "missing_field"),
    ("naive", {"occurred_at": "2026-03-10T10:15:00"}, "naive_timestamp"),
    ("date-only", {"occurred_at": "2026-03-10"}, "naive_timestamp"),
    ("garbage-time", {"occurred_at": "10 March 2026"}, "bad_timestamp"),
    ("lowercase-z", {"occurred_at": "2026-03-10T07:15:00z"}, "bad_timestamp"),
]


@pytest.mark.parametrize(("overrides", "reason"), [c[1:] for c in RECEIPTS_AGREE],
                         ids=[c[0] for c in RECEIPTS_AGREE])
def test_receipt_schema_and_code_agree(overrides: dict[str, Any], reason: str | None) -> None:
    doc = receipt(**overrides)
    assert code_verdict(parse_receipt, doc) == reason
    assert RECEIPT.is_valid(doc) == (reason is None), list(RECEIPT.iter_errors(doc))


@pytest.mark.parametrize("doc", [["an", "array"], "text", 42, None])
def test_non_objects_rejected_by_both(doc: Any) -> None:
    assert code_verdict(parse_receipt, doc) == "not_an_object"
    assert code_verdict(parse_profile, doc) == "not_an_object"
    assert not RECEIPT.is_valid(doc) and not PROFILE.is_valid(doc)


# Rules the schema cannot express: the schema accepts, the code rejects.
RECEIPTS_CODE_ONLY: list[tuple[str, dict[str, Any], str]] = [
    ("rub-3-decimals", {"total": "450.101"}, "bad_amount"),
    ("rub-3-decimals-number", {"total": 450.101}, "bad_amount"),
    ("float-noise", {"total": 0.30000000000000004}, "bad_amount"),
    ("jpy-decimals", {"currency": "JPY", "total": "1.5", "items": ...}, "bad_amount"),
    ("item-3-decimals", {"items": [{"amount": "0.001"}]}, "bad_amount"),
    ("feb-30", {"occurred_at": "2026-02-30T10:00:00+03:00"}, "bad_timestamp"),
    ("hour-25", {"occurred_at": "2026-03-10T25:00:00+03:00"}, "bad_timestamp"),
    ("future", {"occurred_at": "2026-03-11T12:00:01Z"}, "future_timestamp"),
    ("too-old", {"occurred_at": "1969-12-31T23:59:59Z"}, "too_old_timestamp"),
]


@pytest.mark.parametrize(("overrides", "reason"), [c[1:] for c in RECEIPTS_CODE_ONLY],
                         ids=[c[0] for c in RECEIPTS_CODE_ONLY])
def test_receipt_rules_only_the_code_checks(overrides: dict[str, Any], reason: str) -> None:
    doc = receipt(**overrides)
    assert RECEIPT.is_valid(doc)
    assert code_verdict(parse_receipt, doc) == reason


_LENIENT_MONEY = (
    "BUG: rules/inputs/receipts.py parse_money builds Decimal(str) directly, so it accepts strings "
    "that are not plain decimals (underscores, spaces, exponents, signs, non-ASCII digits, "
    "'1.', '.5'); the schema's decimal pattern rejects them"
)
_LENIENT_CURRENCY = (
    "BUG: rules/inputs/receipts.py parse_receipt checks currency with str.isalpha(), accepting "
    "lowercase/non-ASCII codes; 'jpy' then gets exponent 2 (CURRENCY_EXPONENT is keyed by "
    "uppercase), so 100.5 jpy is accepted while 100.5 JPY is bad_amount"
)
_LENIENT_TIME = (
    "BUG: rules/inputs/receipts.py parse_time relies on datetime.fromisoformat (Python 3.11), which "
    "accepts any separator character, ISO basic format, week dates, hour-only times and "
    "offsets without colon/with seconds; the schema's ISO 8601 extended pattern does not"
)


def _disagree(value: dict[str, Any], reason: str, id_: str) -> Any:
    return pytest.param(value, id=id_)


@pytest.mark.parametrize("overrides", [
    _disagree({"total": "1_000"}, _LENIENT_MONEY, "underscore"),
    _disagree({"total": " 12 "}, _LENIENT_MONEY, "spaces"),
    _disagree({"total": "1e2"}, _LENIENT_MONEY, "exponent"),
    _disagree({"total": "+5"}, _LENIENT_MONEY, "plus-sign"),
    _disagree({"total": "\u0661\u0662\u0663"}, _LENIENT_MONEY, "arabic-indic-digits"),
    _disagree({"total": "1."}, _LENIENT_MONEY, "trailing-dot"),
    _disagree({"total": ".5"}, _LENIENT_MONEY, "leading-dot"),
    _disagree({"currency": "jpy", "total": "100.5", "items": ...}, _LENIENT_CURRENCY, "jpy-lower"),
    _disagree({"currency": "rub"}, _LENIENT_CURRENCY, "rub-lower"),
    _disagree({"currency": "\u0440\u0443\u0431"}, _LENIENT_CURRENCY, "cyrillic"),
    _disagree({"occurred_at": "2026-03-10x10:15:00+03:00"}, _LENIENT_TIME, "x-separator"),
    _disagree({"occurred_at": "20260310T101500+0300"}, _LENIENT_TIME, "basic-format"),
    _disagree({"occurred_at": "2026-W11-2T10:15:00+03:00"}, _LENIENT_TIME, "week-date"),
    _disagree({"occurred_at": "2026-03-10T10+03:00"}, _LENIENT_TIME, "hour-only"),
    _disagree({"occurred_at": "2026-03-10T10:15:00+0300"}, _LENIENT_TIME, "offset-no-colon"),
    _disagree({"occurred_at": "2026-03-10T10:15:00+03:00:30"}, _LENIENT_TIME, "offset-seconds"),
])
def test_receipt_code_is_not_more_lenient_than_schema(overrides: dict[str, Any]) -> None:
    doc = receipt(**overrides)
    assert not RECEIPT.is_valid(doc)  # the contract as published
    assert code_verdict(parse_receipt, doc) is not None


# -- profiles ----------------------------------------------------------------------------------

PROFILES_AGREE: list[tuple[str, dict[str, Any], str | None]] = [
    ("full", {"updated_at": "2026-03-01T09:00:00+03:00", "birth_date": "1990-05-17",
              "gender": "f", "city": "Kazan", "registered_at": "2025-01-01T00:00:00Z",
              "welcome_bonus_at": "2025-01-02T10:00:00+03:00", "tags": ["vip"]}, None),
    ("only-id", {}, None),
    ("nulls", {"birth_date": None, "gender": None, "city": None, "tags": None,
               "updated_at": None, "registered_at": None, "welcome_bonus_at": None}, None),
    ("upper-gender", {"gender": "M"}, None),
    ("empty-tags", {"tags": []}, None),
    ("extra", {"loyalty_level": 3}, None),
    ("no-id", {"client_id": ...}, "missing_field"),
    ("null-id", {"client_id": None}, "missing_field"),
    ("int-id", {"client_id": 5}, "bad_type"),
    ("empty-id", {"client_id": ""}, "bad_value"),
    ("int-birth", {"birth_date": 19900517}, "bad_type"),
    ("dotted-birth", {"birth_date": "17.05.1990"}, "bad_value"),
    ("gender-word", {"gender": "female"}, "bad_value"),
    ("gender-int", {"gender": 1}, "bad_value"),
    ("empty-city", {"city": ""}, "bad_value"),
    ("int-city", {"city": 3}, "bad_type"),
    ("tags-string", {"tags": "vip"}, "bad_type"),
    ("tags-empty-string", {"tags": [""]}, "bad_type"),
    ("tags-int", {"tags": [7]}, "bad_type"),
    ("naive-updated", {"updated_at": "2026-03-01T09:00:00"}, "naive_timestamp"),
    ("bad-registered", {"registered_at": "last year"}, "bad_timestamp"),
    ("int-welcome", {"welcome_bonus_at": 1700000000}, "bad_type"),
    # the profile fields of rules/inputs/profiles.py
    ("family", {"first_name": " Tatyana ", "children": ["2015-02-28", "2019-11-02"],
                "spouse_birth_date": "1988-02-29", "legal_entity": False,
                "app_registered_at": "2025-06-01T10:00:00+03:00", "discount_card": "D-0042"}, None),
    ("lists-and-maps", {"labels": ["vip_list", "red", "red"], "consent": {"email": True, "sms": False, "call": None},
                        "attributes": {"pet": "dog", "weight": 4.5, "kids": 2, "vegan": True, "since": "2020-01-01",
                                       "gone": None, "big": -9223372036854775808}}, None),
    ("empty-lists-and-maps", {"children": [], "labels": [], "attributes": {}, "consent": {}}, None),
    ("new-nulls", {"first_name": None, "children": None, "spouse_birth_date": None, "legal_entity": None,
                   "app_registered_at": None, "discount_card": None, "labels": None, "attributes": None,
                   "consent": None, "email": None, "phone": None, "email_sha256": None, "phone_sha256": None}, None),
    ("contacts", {"email": "  Tatyana@Example.ORG ", "phone": "+7 (900) 123-45-67"}, None),
    ("phone-number", {"phone": 79001234567}, None),
    ("digests", {"email_sha256": "a" * 64, "phone_sha256": "0123456789abcdef" * 4}, None),
    ("int-first-name", {"first_name": 7}, "bad_type"),
    ("empty-first-name", {"first_name": ""}, "bad_value"),
    ("blank-first-name", {"first_name": "   "}, "bad_value"),
    ("long-first-name", {"first_name": "x" * 65}, "bad_value"),
    ("children-string", {"children": "2015-02-28"}, "bad_type"),
    ("children-int", {"children": [20150228]}, "bad_type"),
    ("children-dotted", {"children": ["28.02.2015"]}, "bad_value"),
    ("children-21", {"children": ["2015-02-28"] * 21}, "bad_value"),
    ("spouse-dotted", {"spouse_birth_date": "29.02.1988"}, "bad_value"),
    ("legal-entity-text", {"legal_entity": "yes"}, "bad_type"),
    ("legal-entity-int", {"legal_entity": 1}, "bad_type"),
    ("app-naive", {"app_registered_at": "2025-06-01T10:00:00"}, "naive_timestamp"),
    ("card-int", {"discount_card": 42}, "bad_type"),
    ("card-long", {"discount_card": "d" * 129}, "bad_value"),
    ("labels-string", {"labels": "vip_list"}, "bad_type"),
    ("labels-int", {"labels": [1]}, "bad_type"),
    ("labels-empty-string", {"labels": [""]}, "bad_value"),
    ("labels-33", {"labels": [f"l{i}" for i in range(33)]}, "bad_value"),
    ("labels-long", {"labels": ["l" * 65]}, "bad_value"),
    ("attributes-list", {"attributes": [["pet", "dog"]]}, "bad_type"),
    ("attributes-nested", {"attributes": {"pet": {"kind": "dog"}}}, "bad_type"),
    ("attributes-list-value", {"attributes": {"pets": ["dog"]}}, "bad_type"),
    ("attributes-65-keys", {"attributes": {f"k{i}": 1 for i in range(65)}}, "bad_value"),
    ("attributes-empty-key", {"attributes": {"": 1}}, "bad_value"),
    ("attributes-long-key", {"attributes": {"k" * 65: 1}}, "bad_value"),
    ("attributes-long-text", {"attributes": {"note": "n" * 257}}, "bad_value"),
    ("attributes-huge-number", {"attributes": {"n": 9223372036854775808}}, "bad_value"),
    ("consent-list", {"consent": ["email"]}, "bad_type"),
    ("consent-fax", {"consent": {"fax": True}}, "bad_value"),
    ("consent-text", {"consent": {"sms": "yes"}}, "bad_type"),
    ("email-int", {"email": 7}, "bad_type"),
    ("email-no-at", {"email": "tatyana.example.org"}, "bad_value"),
    ("email-two-ats", {"email": "t@a@example.org"}, "bad_value"),
    ("email-space-inside", {"email": "t a@example.org"}, "bad_value"),
    ("email-long", {"email": "t" * 243 + "@example.org"}, "bad_value"),
    ("phone-letters", {"phone": "+7 900 CALL-ME"}, "bad_value"),
    ("phone-bool", {"phone": True}, "bad_type"),
    ("phone-short-number", {"phone": 123456}, "bad_value"),
    ("phone-long-number", {"phone": 1234567890123456}, "bad_value"),
    ("digest-upper", {"email_sha256": "A" * 64}, "bad_value"),
    ("digest-short", {"phone_sha256": "a" * 63}, "bad_value"),
    ("digest-int", {"email_sha256": 7}, "bad_type"),
    ("raw-contact-and-bad-digest", {"email": "t@example.org", "email_sha256": "t@example.org"}, "bad_value"),
]


def profile(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"client_id": "c-1"}
    for key, value in overrides.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(("overrides", "reason"), [c[1:] for c in PROFILES_AGREE],
                         ids=[c[0] for c in PROFILES_AGREE])
def test_profile_schema_and_code_agree(overrides: dict[str, Any], reason: str | None) -> None:
    doc = profile(**overrides)
    assert code_verdict(parse_profile, doc) == reason
    assert PROFILE.is_valid(doc) == (reason is None), list(PROFILE.iter_errors(doc))


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"birth_date": "1990-02-30"}, "bad_value"),
    ({"birth_date": "1899-12-31"}, "bad_value"),
    ({"birth_date": (NOW + timedelta(days=1)).date().isoformat()}, "bad_value"),
    ({"updated_at": "2026-03-12T00:00:00Z"}, "future_timestamp"),
    ({"registered_at": "1969-01-01T00:00:00Z"}, "too_old_timestamp"),
    ({"children": ["2015-02-29"]}, "bad_value"),
    ({"children": [(NOW + timedelta(days=1)).date().isoformat()]}, "bad_value"),
    ({"spouse_birth_date": "1899-12-31"}, "bad_value"),
    ({"app_registered_at": "2026-03-12T00:00:00Z"}, "future_timestamp"),
    ({"phone": "+7 (900) 12"}, "bad_value"),
    ({"phone": "+7 900 123 45 67 89 01 23"}, "bad_value"),
    ({"phone": "()"}, "bad_value"),
], ids=["feb-30", "before-1900", "born-tomorrow", "future-update", "registered-1969",
        "child-feb-29-2015", "child-tomorrow", "spouse-before-1900", "app-future", "phone-6-digits",
        "phone-16-digits", "phone-no-digits"])
def test_profile_rules_only_the_code_checks(overrides: dict[str, Any], reason: str) -> None:
    doc = profile(**overrides)
    assert PROFILE.is_valid(doc)
    assert code_verdict(parse_profile, doc) == reason


@pytest.mark.parametrize("birth", [
    _disagree({"birth_date": "19900517"}, "BUG: rules/inputs/receipts.py parse_profile uses "
              "date.fromisoformat, which also accepts basic format YYYYMMDD", "basic"),
    _disagree({"birth_date": "1990-W20-4"}, "BUG: rules/inputs/receipts.py parse_profile uses "
              "date.fromisoformat, which also accepts ISO week dates", "week"),
])
def test_profile_code_is_not_more_lenient_than_schema(birth: dict[str, Any]) -> None:
    doc = profile(**birth)
    assert not PROFILE.is_valid(doc)
    assert code_verdict(parse_profile, doc) is not None


# -- realistic input ----------------------------------------------------------------------------


def test_simulated_lines_agree() -> None:
    from app.batch.simulate import SimConfig, generate, profiles

    cfg = SimConfig(clients=150, days=60, seed=7, malformed_rate=0.05)
    now = cfg.end.astimezone(UTC)
    seen_ok = seen_bad = 0
    for raw in generate(cfg):
        try:
            doc = loads(raw)
        except RejectedInput as exc:
            assert exc.reason == "invalid_json"
            continue
        try:
            parse_receipt(doc, now)
            ok = True
        except RejectedInput:
            ok = False
        assert RECEIPT.is_valid(doc) == ok, raw
        seen_ok += ok
        seen_bad += not ok
    assert seen_ok > 500 and seen_bad > 0
    for raw in profiles(cfg):
        doc = loads(raw)
        parse_profile(doc, now)
        assert PROFILE.is_valid(doc), raw

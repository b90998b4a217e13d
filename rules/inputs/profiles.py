"""The profile fields beyond the basics: contacts, family, labels, custom attributes, consent.

:func:`rules.inputs.receipts.parse_profile` calls :func:`parse_extra` for them; the same rules are in
``rules/schemas/profile.schema.json``. Each rejection names the field (``bad_type``: wrong
JSON type, ``bad_value``: right type, wrong value) and never quotes the value: a rejection's
detail goes to the DLQ and to logs.

**Contacts are never stored raw.** ``email`` is stripped and lower-cased, ``phone`` reduced to
its digits (E.164 without the ``+``: country code and number, 7 to 15 digits); the record keeps
only ``email_sha256`` / ``phone_sha256``, the hex SHA-256 of those UTF-8 bytes. The edge filter
(:func:`rules.inputs.receipts.known_profile_fields`) makes the same replacement, so no internal topic,
DLQ copy or rejects file carries a raw contact. A digest may also be sent as such (64
lowercase hex digits); a raw contact in the same message wins over it.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import date, datetime
from typing import Any

from rules.errors import RejectedInput

#: Channels of the consent map (the same as :data:`rules.inputs.communications.CHANNELS`).
CONSENT_CHANNELS = ("email", "sms", "push", "messenger", "call")
MAX_NAME = 64
MAX_CHILDREN = 20
MAX_LABELS = 32
MAX_LABEL = 64
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_TEXT = 256
MAX_EMAIL = 254
MIN_PHONE_DIGITS, MAX_PHONE_DIGITS = 7, 15
_INT64 = 2**63
#: Contact keys as sent -> the key of their digest in the record and the envelope.
CONTACTS = {"email": "email_sha256", "phone": "phone_sha256"}
DIGESTS = frozenset(CONTACTS.values())
#: Fields this module parses, as stored (``app_registered_at`` is parsed with the other instants).
EXTRA_FIELDS = ("first_name", "children", "spouse_birth_date", "legal_entity", "discount_card",
                "labels", "attributes", "consent", "email_sha256", "phone_sha256")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_HEX = re.compile(r"[0-9a-f]{64}\Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\Z")
_PHONE = re.compile(r"\+?[0-9 ().\-]+\Z")


def _bad(reason: str, field: str, detail: str) -> RejectedInput:
    return RejectedInput(reason, f"{field} {detail}", field)


def parse_date(raw: Any, field: str, now: datetime | None, what: str = "") -> date:
    """A birth date: ``YYYY-MM-DD``, a real date from 1900-01-01 to today (``now``)."""
    name = what or field
    if not isinstance(raw, str):
        raise RejectedInput("bad_type", f"{name} must be YYYY-MM-DD", field)
    if not _DATE.match(raw):
        raise RejectedInput("bad_value", f"{name} must be YYYY-MM-DD", field)
    try:
        born = date.fromisoformat(raw)
    except ValueError:
        raise RejectedInput("bad_value", f"{name} must be YYYY-MM-DD", field) from None
    if born.year < 1900 or (now is not None and born > now.date()):
        raise RejectedInput("bad_value", f"{name} out of range", field)
    return born


def normalize_email(raw: Any) -> str:
    """``raw`` stripped and lower-cased; ``bad_type`` / ``bad_value`` if it is no address."""
    if not isinstance(raw, str):
        raise _bad("bad_type", "email", "must be a string")
    text = raw.strip().lower()
    if len(raw) > MAX_EMAIL or not _EMAIL.match(text):
        raise _bad("bad_value", "email", f"must be an address like name@example.org, at most {MAX_EMAIL} characters")
    return text


def normalize_phone(raw: Any) -> str:
    """The digits of ``raw`` (E.164 without ``+``): a string of digits, spaces, ``()-.`` and
    a leading ``+``, or a whole number; 7 to 15 digits."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw >= 0 and (
            isinstance(raw, int) or raw.is_integer()):
        digits = str(int(raw))  # a JSON number (a whole one: 79001234567.0 too)
    elif isinstance(raw, str):
        text = raw.strip()
        if not _PHONE.match(text):
            raise _bad("bad_value", "phone", "may hold only digits, spaces, ()-. and a leading +")
        digits = "".join(c for c in text if c.isdigit())
    else:
        raise _bad("bad_type", "phone", "must be a string or a whole number")
    if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        raise _bad("bad_value", "phone", f"must have {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits")
    return digits


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _digests(obj: dict[str, Any], strict: bool) -> dict[str, str]:
    """``email_sha256`` / ``phone_sha256`` of a profile: from the raw contact if given, else
    the digest as sent. ``strict``: reject a bad one (else leave it out)."""
    out: dict[str, str] = {}
    for key, hashed in CONTACTS.items():
        for name in (hashed, key):  # the raw contact, checked last, wins
            if obj.get(name) is None:
                continue
            try:
                out[hashed] = _digest(name, obj[name])
            except RejectedInput:
                if strict:
                    raise
    return out


def _digest(name: str, value: Any) -> str:
    if name == "email":
        return sha256_hex(normalize_email(value))
    if name == "phone":
        return sha256_hex(normalize_phone(value))
    if not isinstance(value, str):
        raise _bad("bad_type", name, "must be a string")
    if not _HEX.match(value):
        raise _bad("bad_value", name, "must be 64 lowercase hex digits")
    return value


def contact_digests(obj: dict[str, Any]) -> dict[str, str]:
    """The digests to forward in place of a message's contacts (invalid ones left out)."""
    return _digests(obj, strict=False)


def _text(obj: dict[str, Any], key: str, limit: int) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise _bad("bad_type", key, "must be a string")
    text = value.strip()
    if not text or len(value) > limit:
        raise _bad("bad_value", key, f"must be 1..{limit} characters, not blank")
    return text


def _labels(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise _bad("bad_type", "labels", "must be a list of strings")
    if len(raw) > MAX_LABELS or not all(0 < len(x) <= MAX_LABEL for x in raw):
        raise _bad("bad_value", "labels", f"must be at most {MAX_LABELS} labels of 1..{MAX_LABEL} characters")
    return sorted(set(raw))


def _children(raw: Any, now: datetime | None) -> list[date]:
    if not isinstance(raw, list):
        raise _bad("bad_type", "children", "must be a list of birth dates YYYY-MM-DD")
    if len(raw) > MAX_CHILDREN:
        raise _bad("bad_value", "children", f"must list at most {MAX_CHILDREN} birth dates")
    return sorted(parse_date(x, "children", now, f"children[{n}]") for n, x in enumerate(raw))


def _attributes(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad("bad_type", "attributes", "must be an object")
    if len(raw) > MAX_ATTRIBUTES:
        raise _bad("bad_value", "attributes", f"must have at most {MAX_ATTRIBUTES} keys")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not 0 < len(key) <= MAX_ATTRIBUTE_KEY:
            raise _bad("bad_value", "attributes", f"keys must be 1..{MAX_ATTRIBUTE_KEY} characters")
        if value is None:  # not given
            continue
        if isinstance(value, str):
            if len(value) > MAX_ATTRIBUTE_TEXT:
                raise _bad("bad_value", "attributes", f"text values must be at most {MAX_ATTRIBUTE_TEXT} characters")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (isinstance(value, int) or math.isfinite(value)) or not -_INT64 <= value <= _INT64 - 1:
                raise _bad("bad_value", "attributes", "numbers must be between -2^63 and 2^63-1")
        elif not isinstance(value, bool):
            raise _bad("bad_type", "attributes", "values must be strings, numbers or booleans")
        out[key] = value
    return out


def _consent(raw: Any) -> dict[str, bool]:
    if not isinstance(raw, dict):
        raise _bad("bad_type", "consent", "must be an object of channel: true/false")
    out: dict[str, bool] = {}
    for channel, given in raw.items():
        if channel not in CONSENT_CHANNELS:
            raise _bad("bad_value", "consent", f"channels must be among {', '.join(CONSENT_CHANNELS)}")
        if given is None:
            continue
        if not isinstance(given, bool):
            raise _bad("bad_type", "consent", "values must be true or false")
        out[channel] = given
    return out


def parse_extra(obj: dict[str, Any], now: datetime | None) -> dict[str, Any]:
    """The fields of :data:`EXTRA_FIELDS` present (not null) in a profile, validated."""
    fields: dict[str, Any] = {}
    get = obj.get
    if get("first_name") is not None:
        fields["first_name"] = _text(obj, "first_name", MAX_NAME)
    if get("children") is not None:
        fields["children"] = _children(obj["children"], now)
    if get("spouse_birth_date") is not None:
        fields["spouse_birth_date"] = parse_date(obj["spouse_birth_date"], "spouse_birth_date", now)
    if get("legal_entity") is not None:
        if not isinstance(obj["legal_entity"], bool):
            raise _bad("bad_type", "legal_entity", "must be true or false")
        fields["legal_entity"] = obj["legal_entity"]
    if get("discount_card") is not None:
        fields["discount_card"] = _text(obj, "discount_card", 128)
    if get("labels") is not None:
        fields["labels"] = _labels(obj["labels"])
    if get("attributes") is not None:
        fields["attributes"] = _attributes(obj["attributes"])
    if get("consent") is not None:
        fields["consent"] = _consent(obj["consent"])
    fields.update(_digests(obj, strict=True))
    return fields

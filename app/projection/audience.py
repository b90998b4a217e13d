"""Hashed contacts in the Redis projection, and the audience export that reads them.

The client's record keeps, of its e-mail and phone, only ``email_sha256`` and
``phone_sha256`` in ``state.profile`` (hex SHA-256 of the normalized value; the raw values
are dropped where profiles come in, see :mod:`rules.inputs.receipts`). The projector copies those
two digests, and nothing else of the profile, into the client's hash ``P c:<client>``
(keyspace: :mod:`app.projection.store`) from the clients changelog, so that the workers'
API and ``loyalty audience`` can export a segment as the hashed customer list ad platforms
take (Google Customer Match, Meta custom audiences): ``email_sha256,phone_sha256``, one
member per row, members with neither digest left out and counted.

Only a lowercase 64-digit hex string is ever written or exported: anything else in those
profile fields (a raw address by mistake) is treated as absent. No other reader renders
the two fields: ``GET /clients/{id}`` and the lookup server pick their fields by name.

Ordering: the digests follow the summary metrics' version (``metrics_at``, the client's
clock): a write is applied when its version is at least the stored ``metrics_at``, which
the metrics write of the same batch has just set, so an older changelog record never
overwrites a newer one; a client with no hash yet (no metrics projected) is not created.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.projection.store import Projection, StaleGeneration, text
from app.wire import codecs
from rules.record.state import ClientState
from rules.record.state import loads as load_state

#: The two fields, in the profile and in the projection's client hash.
FIELDS = ("email_sha256", "phone_sha256")
#: CSV columns per target, in the order of :data:`FIELDS`: the digests' own names, or the
#: column names the platforms' file uploads expect (Meta: "email", "phone"; Google Ads:
#: "Email" only, since Google hashes a phone with its "+" and the record's phone digest has
#: none: such a column would be taken and never match; see docs/explanation/personal-data.md).
HEADERS: dict[str, tuple[str, ...]] = {"generic": ("email_sha256", "phone_sha256"), "google": ("Email",),
                                       "meta": ("email", "phone")}
_HEX = re.compile(r"[0-9a-f]{64}\Z")

# KEYS[1] NS:gen. ARGV: [1] generation to check ("" none) [2] prefix P, then 4 per client:
# client id, version (the client's clock, epoch s), e-mail digest, phone digest ("" none).
# Applied to an existing client hash whose metrics_at is not newer than the version; a
# field is written only when it changes (a write invalidates the lookup servers' caches).
# Returns the clients applied, -1 when the generation was switched.
CONTACTS = """
if ARGV[1] ~= '' then
  local g = redis.call('GET', KEYS[1]) or '0'
  if g ~= ARGV[1] then return -1 end
end
local p, n = ARGV[2], 0
for i = 3, #ARGV, 4 do
  local ck = p .. 'c:' .. ARGV[i]
  local cur = redis.call('HMGET', ck, 'metrics_at', 'email_sha256', 'phone_sha256')
  local at = tonumber(cur[1])
  if at and tonumber(ARGV[i + 1]) >= at then
    for j, f in ipairs({'email_sha256', 'phone_sha256'}) do
      local v = ARGV[i + 1 + j]
      if v == '' then
        if cur[1 + j] then redis.call('HDEL', ck, f) end
      elseif cur[1 + j] ~= v then
        redis.call('HSET', ck, f, v)
      end
    end
    n = n + 1
  end
end
return n
"""


def digest(value: Any) -> str:
    """``value`` if it is a hex SHA-256 digest (lowercase), else ""."""
    return value if isinstance(value, str) and _HEX.match(value) else ""


def contacts_of(profile: Mapping[str, Any]) -> tuple[str, str]:
    """The client's (e-mail digest, phone digest) from its record's profile ("" absent)."""
    return digest(profile.get(FIELDS[0])), digest(profile.get(FIELDS[1]))


@dataclass(frozen=True, slots=True)
class Contacts:
    """One client's digests as of its clock (the version)."""

    client_id: str
    at: int
    email: str = ""
    phone: str = ""


async def write_contacts(projection: Projection, rows: Sequence[Contacts],
                         gen: str | None = None) -> int:
    """Write the digests of ``rows`` in one script call; the clients applied. Without
    ``gen``, the current generation (retried on a switch); with it, that one (a rebuild)."""
    if not rows:
        return 0
    script = projection.redis.register_script(CONTACTS)
    args: list[Any] = []
    for r in rows:
        args += [r.client_id, r.at, digest(r.email), digest(r.phone)]
    for attempt in range(5):
        g = gen if gen is not None else await projection.generation(0.0 if attempt else 1.0)
        done = int(await script(keys=[projection.gen_key],
                                args=["" if gen is not None else g, projection.prefix(g), *args]))
        if done >= 0:
            return done
    raise StaleGeneration(projection.gen_key)


@dataclass
class AudienceCount:
    """What an export wrote: members seen, rows written, members left out (no digest)."""

    members: int = 0
    rows: int = 0
    left_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"members": self.members, "rows": self.rows, "left_out": self.left_out}


async def iter_audience(projection: Projection, dim: str, segment: str, count: AudienceCount,
                        fields: Sequence[str] = FIELDS, chunk: int = 1000) -> AsyncIterator[list[tuple[str, ...]]]:
    """The digests (``fields``: both by default) of the segment's members, in chunks;
    members with none of them are left out and counted in ``count``. (SSCAN, as
    :meth:`Projection.iter_members`: a set changed meanwhile may yield a member twice; every
    member present throughout is yielded.)"""
    p = await projection.prefix_now()
    key = f"{p}seg:{dim}:{segment}"
    redis = projection.redis
    cursor = 0
    while True:
        cursor, raw = await redis.sscan(key, cursor=cursor, count=chunk)
        ids = sorted(text(m) for m in raw)
        if ids:
            pipe = redis.pipeline(transaction=False)
            for cid in ids:
                pipe.hmget(f"{p}c:{cid}", list(fields))
            out = []
            for values in await pipe.execute():
                row = tuple(digest(text(v)) if v else "" for v in values)
                if any(row):
                    out.append(row)
            count.members += len(ids)
            count.rows += len(out)
            count.left_out += len(ids) - len(out)
            if out:
                yield out
        if cursor == 0:
            return


def target_fields(target: str) -> tuple[str, ...]:
    """The digest fields a target's columns hold."""
    return FIELDS[:len(HEADERS[target])]


def csv_header(target: str) -> bytes:
    return ",".join(HEADERS[target]).encode() + b"\r\n"


def csv_rows(rows: Iterable[tuple[str, ...]]) -> bytes:
    """CSV lines (CRLF) of digests: hex digits only, nothing to quote."""
    return "".join(",".join(r) + "\r\n" for r in rows).encode()


def contacts_row(client_id: str, state: ClientState) -> Contacts:
    """The digests a client's record holds, versioned by its clock."""
    return Contacts(client_id, state.clock, *contacts_of(state.profile))


def contacts_from_value(client_id: str, value: bytes) -> Contacts | None:
    """:func:`contacts_row` of a clients table value (None: a client with no segment, which
    the projection does not hold)."""
    state = load_state(codecs.split_table_value(value)[1])
    return contacts_row(client_id, state) if state.segments else None

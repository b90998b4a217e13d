"""A client's communications: initialize / update / serialize as pure functions.

What is kept (exact in any arrival order, a duplicate ``event_id`` changes nothing):

* four instants, each a minimum or a maximum, so a repeated or late event cannot move them
  wrongly: the first and the last *contact* (a message sent or delivered, a call taken:
  :data:`rules.inputs.communications.CONTACTS`), the last *response* (opened, clicked, replied,
  answered) and the newest event of any kind;
* per channel, the latest ``unsubscribed`` instant;
* *rows* (event hash, epoch second, code) of the sent messages and the responses that can
  still count: those of the last :data:`HORIZON_DAYS` business days before the newest event
  (the 90-day windows, plus 5 days of slack), and the sent messages after the last response
  (``unanswered_streak``), at least the :data:`STREAK_CAP` newest of them. A row is what
  makes a repeated ``event_id`` a duplicate; an event too old to be in a window and not
  after the last response moves no count, so forgetting its id loses nothing.

``unanswered_streak`` (messages sent after the last response) is exact up to
:data:`STREAK_CAP` and reads ``STREAK_CAP`` beyond it ("100 or more"): a late response
dated before all the kept sends still leaves at least that many after it.

Bytes in the client record (``"x"`` key, JSON): ``[first, last, response, newest, rows,
unsubscribed]``, about 45 bytes plus 18 (13 before base64) per kept row: a client mailed
weekly who opens half the mails keeps ~26 rows (~510 bytes); one who never answers keeps
the 100 newest sends after the horizon too (~1.8 KB at most).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any

from rules.calendar import BusinessCalendar
from rules.errors import RejectedInput
from rules.inputs.communications import CHANNELS, CONTACTS, EVENTS, RESPONSES, Communication

WINDOW_DAYS = 90  # messages_90d, responses_90d
HORIZON_DAYS = WINDOW_DAYS + 5  # rows kept behind the newest event's business day
STREAK_CAP = 100
_ROW = struct.Struct("<QIB")  # event hash, epoch second, code
SENT = EVENTS.index("sent")


def code(event: str, channel: str) -> int:
    return EVENTS.index(event) * 8 + CHANNELS.index(channel)


def is_response(c: int) -> bool:
    return EVENTS[c >> 3] in RESPONSES


def is_sent(c: int) -> bool:
    return c >> 3 == SENT


@dataclass(slots=True)
class CommState:
    first_contact: int | None = None
    last_contact: int | None = None
    last_response: int | None = None
    newest: int | None = None
    rows: list[tuple[int, int, int]] = field(default_factory=list)  # (hash, t, code), sorted
    unsubscribed: dict[str, int] = field(default_factory=dict)  # channel -> latest instant


def _min(a: int | None, b: int) -> int:
    return b if a is None or b < a else a


def _max(a: int | None, b: int) -> int:
    return b if a is None or b > a else a


def apply(comm: CommState | None, event: Communication, h: int,
          cal: BusinessCalendar) -> tuple[CommState, bool]:
    """Fold one validated event (``h``: its id's hash) in; (state, False) for a duplicate.
    Raises RejectedInput ``conflicting_duplicate`` for an id seen with another instant or kind."""
    comm = comm or CommState()
    c = code(event.event, event.channel)
    t = event.at
    for row in comm.rows:
        if row[0] == h:
            if row[1] == t and row[2] == c:
                return comm, False
            raise RejectedInput("conflicting_duplicate", f"event_id {event.event_id} was seen with "
                                "another occurred_at, channel or event", "event_id")
    kind = event.event
    if kind in CONTACTS:
        comm.first_contact = _min(comm.first_contact, t)
        comm.last_contact = _max(comm.last_contact, t)
    if kind in RESPONSES:
        comm.last_response = _max(comm.last_response, t)
    if kind == "unsubscribed":
        comm.unsubscribed[event.channel] = _max(comm.unsubscribed.get(event.channel), t)
    comm.newest = _max(comm.newest, t)
    if kind == "sent" or kind in RESPONSES:
        comm.rows.append((h, t, c))
        comm.rows.sort(key=lambda r: (r[1], r[0]))
    _prune(comm, cal)
    return comm, True


def _prune(comm: CommState, cal: BusinessCalendar) -> None:
    """Drop the rows no count can read any more (see the module's docstring)."""
    assert comm.newest is not None
    keep_from = cal.day(comm.newest) - HORIZON_DAYS + 1
    last = comm.last_response
    streak = [r for r in comm.rows if is_sent(r[2]) and (last is None or r[1] > last)]
    keep_streak = {r[0] for r in streak[-STREAK_CAP:]}
    if all(cal.day(r[1]) >= keep_from or r[0] in keep_streak for r in comm.rows):
        return
    comm.rows = [r for r in comm.rows if cal.day(r[1]) >= keep_from or r[0] in keep_streak]


def unanswered(comm: CommState) -> int:
    last = comm.last_response
    n = sum(1 for r in comm.rows if is_sent(r[2]) and (last is None or r[1] > last))
    return min(n, STREAK_CAP)


def window(comm: CommState, lo_day: int, hi_day: int, cal: BusinessCalendar) -> tuple[int, int]:
    """(messages sent, responses) on business days lo_day..hi_day."""
    sent = responses = 0
    for _, t, c in comm.rows:
        if lo_day <= cal.day(t) <= hi_day:
            if is_sent(c):
                sent += 1
            elif is_response(c):
                responses += 1
    return sent, responses


# -- serialization ------------------------------------------------------------------------


def pack(comm: CommState) -> list[Any]:
    rows = base64.b64encode(b"".join(_ROW.pack(*r) for r in comm.rows)).decode()
    return [comm.first_contact, comm.last_contact, comm.last_response, comm.newest, rows,
            dict(sorted(comm.unsubscribed.items()))]


def unpack(doc: list[Any]) -> CommState:
    first, last, response, newest, rows, unsub = doc
    return CommState(first, last, response, newest,
                     list(_ROW.iter_unpack(base64.b64decode(rows))) if rows else [], dict(unsub))

"""Metrics of the client's communications (registered into :data:`rules.metrics.CATALOGUE`).

They read :mod:`rules.record.comm`: a client with no communication event reads -1 for the
``days_since_*`` counters, 0 for the counts and an empty list of unsubscribed channels.
"""

from __future__ import annotations

from rules.calendar import DAY_S
from rules.inputs.communications import CHANNELS
from rules.metrics.base import MetricView, _add
from rules.record import comm as comm_state
from rules.record.state import ClientState


def _last_contact(s: ClientState) -> int | None:
    return None if s.comm is None else s.comm.last_contact


def _last_response(s: ClientState) -> int | None:
    return None if s.comm is None else s.comm.last_response


def _days(anchor: int | None, t: int) -> int:
    return -1 if anchor is None else (t - anchor) // DAY_S


def _window(v: MetricView) -> tuple[int, int]:
    comm = v.s.comm
    if comm is None:
        return 0, 0
    memo = v._memo
    cached: tuple[int, int] | None = memo.get("#comm")
    if cached is None:
        lo = v.day - comm_state.WINDOW_DAYS + 1
        cached = memo["#comm"] = comm_state.window(comm, lo, v.day, v.cal)
    return cached


def unsubscribed(s: ClientState) -> list[str]:
    """Channels the client may not be contacted on: an ``unsubscribed`` event not followed
    by a profile update granting consent on that channel, or the profile's consent false."""
    consent = s.profile.get("consent")
    consent = consent if isinstance(consent, dict) else {}
    out = []
    for channel in CHANNELS:
        given = consent.get(channel)
        if given is False:
            out.append(channel)
            continue
        at = None if s.comm is None else s.comm.unsubscribed.get(channel)
        if at is not None and not (given is True and s.profile_at > at):
            out.append(channel)
    return out


_add("days_since_last_contact", "int", "days", lambda v: _days(_last_contact(v.s), v.t),
     "whole days since the business last reached the client (a message sent or delivered, a "
     "call taken: communications); -1 if never", anchor=_last_contact)
_add("days_since_last_response", "int", "days", lambda v: _days(_last_response(v.s), v.t),
     "whole days since the client last answered (a message opened, clicked or replied to, a "
     "call taken); -1 if never", anchor=_last_response)
_add("messages_90d", "int", "daily", lambda v: _window(v)[0],
     "messages sent (``sent`` events, every channel) in the last 90 business days",
     window=comm_state.WINDOW_DAYS)
_add("responses_90d", "int", "daily", lambda v: _window(v)[1],
     "responses (opened, clicked, replied, answered events) in the last 90 business days",
     window=comm_state.WINDOW_DAYS)
_add("unanswered_streak", "int", "static",
     lambda v: 0 if v.s.comm is None else comm_state.unanswered(v.s.comm),
     f"messages sent after the client's last response (all of them if none); "
     f"{comm_state.STREAK_CAP} means {comm_state.STREAK_CAP} or more")
_add("unsubscribed", "list", "static", lambda v: unsubscribed(v.s),
     "channels the client unsubscribed from (an unsubscribed event, unless a later profile "
     "update gives consent) or has no consent for (profile consent false)")

"""The contact policy: limits every scenario (and one-off campaign) shares per client.

A small YAML file (``LOYALTY_CONTACT_POLICY``, ``loyalty replay --contact-policy``); every key
is optional, the defaults are those of :class:`ContactPolicy`::

    period_days: 7              # the rolling period of the caps (days before the send instant)
    max_actions: 3              # actions per client per period, all channels (0: no cap)
    max_per_channel: 2          # actions per client per period on one channel (0: no cap)
    suppress_labels: [black_list]   # a client with one of these profile labels gets nothing
    max_age_hours: 72           # default for scenarios without max_age_hours (0: no limit)

Checks, in the decision order of :mod:`rules.scenario_state` (skip reasons in brackets):
a profile label in ``suppress_labels`` (``suppressed``); no consent on the action's channel:
the profile's ``consent`` says false, or an ``unsubscribed`` communication event not
followed by a profile update giving consent (``no_consent``; a channel ``any`` action is
skipped only when every channel is closed, and lists the closed ones in
``data.avoid_channels``); more than ``max_per_channel`` actions on its channel
(``channel_cap``) or ``max_actions`` in all (``contact_cap``) sent in the ``period_days``
before its send instant (or scheduled after it). Caps count the client's actions of every scenario and campaign,
decided in time order, so they are exact in replay and in the stream alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from rules import yamlines
from rules.calendar import DAY_S
from rules.errors import RuleSetError
from rules.inputs.communications import CHANNELS
from rules.metrics.comm import unsubscribed
from rules.record.state import ClientState

_KEYS = ("period_days", "max_actions", "max_per_channel", "suppress_labels", "max_age_hours")


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    period_days: int = 7
    max_actions: int = 3
    max_per_channel: int = 2
    suppress_labels: tuple[str, ...] = ("black_list",)
    max_age_hours: int = 72
    path: str = field(default="<defaults>", compare=False)

    @classmethod
    def unlimited(cls) -> ContactPolicy:
        """No caps, no suppression, no default age limit (tests, backtests)."""
        return cls(7, 0, 0, (), 0, "<unlimited>")

    def max_age(self, scenario_hours: int | None) -> int:
        """Seconds a trigger may be old when processed (0: no limit)."""
        hours = self.max_age_hours if scenario_hours is None else scenario_hours
        return hours * 3600


def loads(text: str, file: str = "<string>") -> ContactPolicy:
    """Parse a policy file; RuleSetError names the file and line."""
    doc = yamlines.load_mapping(text or "{}", file, "contact policy")
    for key in doc:
        if key not in _KEYS:
            raise RuleSetError(f"unknown key {key!r}; allowed: {', '.join(_KEYS)}", file, doc.line_of(key))
    values: dict[str, object] = {}
    for key, lo in (("period_days", 1), ("max_actions", 0), ("max_per_channel", 0), ("max_age_hours", 0)):
        if key in doc:
            v = doc[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= 100_000:
                raise RuleSetError(f"{key} must be a whole number from {lo} to 100000", file, doc.line_of(key))
            values[key] = v
    if "suppress_labels" in doc:
        labels = doc["suppress_labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            raise RuleSetError("suppress_labels must be a list of labels", file, doc.line_of("suppress_labels"))
        values["suppress_labels"] = tuple(labels)
    return ContactPolicy(**values, path=file)  # type: ignore[arg-type]


def suppressed(policy: ContactPolicy, client: ClientState | None) -> bool:
    if client is None or not policy.suppress_labels:
        return False
    labels = client.profile.get("labels")
    return isinstance(labels, list) and any(x in labels for x in policy.suppress_labels)


def closed_channels(client: ClientState | None) -> list[str]:
    """Channels the client may not be contacted on (profile consent false, unsubscribed)."""
    return [] if client is None else unsubscribed(client)


def consent(channel: str, closed: list[str]) -> bool:
    if channel == "any":
        return not set(CHANNELS) <= set(closed)
    return channel not in closed


def over_cap(policy: ContactPolicy, channel: str, send_at: int,
             sent: Iterable[tuple[int, str]]) -> str | None:
    """``channel_cap`` / ``contact_cap`` if an action on ``channel`` at ``send_at`` would go
    over the caps, given the client's actions ``sent`` ((send instant, channel) of every
    scenario and campaign); None if it fits."""
    if not policy.max_actions and not policy.max_per_channel:
        return None
    lo = send_at - policy.period_days * DAY_S
    recent = [ch for at, ch in sent if at > lo]  # one moved past send_at by quiet hours counts too
    if policy.max_per_channel and channel != "any" and \
            sum(1 for ch in recent if ch == channel) >= policy.max_per_channel:
        return "channel_cap"
    if policy.max_actions and len(recent) >= policy.max_actions:
        return "contact_cap"
    return None

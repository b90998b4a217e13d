"""Business calendar: day and month numbering in the business time zone.

Windows of the core are calendar windows in the business time zone: ``visits_30d``
counts the business days ``today-29 .. today``; monthly metrics use calendar months.
Instants are integer epoch seconds inside the core. Days are numbered from 1970-01-01
(local date), months as ``year*12 + month-1``.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo

DAY_S = 86_400
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_SLOT = 900  # UTC offsets and their changes fall on 15-minute boundaries


def to_epoch(t: datetime) -> int:
    return int(t.timestamp())


def from_epoch(s: int) -> datetime:
    return datetime.fromtimestamp(s, UTC)


_DATES: dict[int, str] = {}  # UTC day number -> "YYYY-MM-DDT"
_TWO = [f"{i:02d}" for i in range(60)]  # a format spec per field would cost ~200 ns


def iso(s: int) -> str:
    """RFC 3339 UTC text of an epoch second, e.g. ``2026-03-21T06:15:00Z``."""
    day, rem = divmod(s, DAY_S)
    date_text = _DATES.get(day)
    if date_text is None:  # strftime costs ~1 µs; the date part repeats, the rest is arithmetic
        if len(_DATES) > 100_000:
            _DATES.clear()
        date_text = _DATES[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * DAY_S))
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    return f"{date_text}{_TWO[hour]}:{_TWO[minute]}:{_TWO[second]}Z"


class BusinessCalendar:
    """Maps epoch seconds to business days/months and back. Shareable; caches internally."""

    __slots__ = ("_day", "_day_start", "_month", "_month_start", "name", "tz")

    def __init__(self, tz: str | tzinfo = "UTC") -> None:
        self.name = tz if isinstance(tz, str) else str(tz)
        self.tz: tzinfo = ZoneInfo(tz) if isinstance(tz, str) else tz
        self._day: dict[int, int] = {}
        self._month: dict[int, int] = {}
        self._day_start: dict[int, int] = {}
        self._month_start: dict[int, int] = {}

    def _local(self, s: int) -> datetime:
        return datetime.fromtimestamp(s, self.tz)

    def day(self, s: int) -> int:
        """Business day number of epoch second ``s``."""
        slot = s // _SLOT
        d = self._day.get(slot)
        if d is None:
            if len(self._day) > 200_000:
                self._day.clear()
            d = self._day[slot] = self._local(s).date().toordinal() - _EPOCH_ORD
        return d

    def month(self, s: int) -> int:
        return self.month_of_day(self.day(s))

    def month_of_day(self, day: int) -> int:
        m = self._month.get(day)
        if m is None:
            if len(self._month) > 200_000:
                self._month.clear()
            d = date.fromordinal(day + _EPOCH_ORD)
            m = self._month[day] = d.year * 12 + d.month - 1
        return m

    def day_start(self, day: int) -> int:
        """Epoch second at which business day ``day`` begins."""
        s = self._day_start.get(day)
        if s is None:
            if len(self._day_start) > 200_000:
                self._day_start.clear()
            d = date.fromordinal(day + _EPOCH_ORD)
            s = self._day_start[day] = to_epoch(datetime(d.year, d.month, d.day, tzinfo=self.tz))
        return s

    def month_start(self, month: int) -> int:
        s = self._month_start.get(month)
        if s is None:
            if len(self._month_start) > 200_000:
                self._month_start.clear()
            first = date(month // 12, month % 12 + 1, 1)
            s = self._month_start[month] = self.day_start(first.toordinal() - _EPOCH_ORD)
        return s

    def date_of_day(self, day: int) -> date:
        return date.fromordinal(day + _EPOCH_ORD)

    def day_of_date(self, d: date) -> int:
        return d.toordinal() - _EPOCH_ORD

    def anniversary(self, born: date, years: int) -> int:
        """Start of the business day on which someone born on ``born`` turns ``years``."""
        y = born.year + years
        try:
            d = born.replace(year=y)
        except ValueError:  # born on 29 February: the birthday is 1 March in common years
            d = date(y, 3, 1)
        return self.day_start(self.day_of_date(d))

    def age(self, born: date, s: int) -> int:
        today = self.date_of_day(self.day(s))
        years = today.year - born.year
        if (today.month, today.day) < (born.month, born.day):
            years -= 1
        return years

"""Shift schedule of the device (SPEC §2 ``shift_start`` / ``shift_end``; the relay supervises a
worker for lost contact only while on shift, SPEC §3).

A shift starts and ends either by hand — ``lonewatch device shift start|end`` on the Pi, which
asks the running daemon over its control socket (:mod:`device.control`) — or by the config
schedule, a list of weekly windows in local time::

    [shift]
    schedule = ["Mon-Fri 22:00-06:00", "Sat,Sun 08:00-14:00", "daily 12:00-12:30"]

A window is ``DAYS HH:MM-HH:MM``: DAYS is ``daily`` or a comma list of days or day ranges
(``Mon``, ``Fri-Mon`` wraps over the week end), the day being the day the window *starts*. An
end at or before the start means the window runs over midnight into the next day; ``24:00`` is
allowed as an end. Times are wall-clock times in ``[device] timezone``.

The schedule acts on *transitions* only (:class:`ShiftSchedule.transition`): entering a window
starts the shift unless it runs already, leaving it ends the shift unless it was ended by hand.
So a manual ``shift end`` during a scheduled window is not undone by the schedule a moment later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["DAYS", "ScheduleError", "ShiftSchedule", "ShiftWindow", "parse_window"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK_MIN = 7 * 1440
_WINDOW_RE = re.compile(r"^\s*(?P<days>[A-Za-z,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")


class ScheduleError(ValueError):
    """A schedule entry that cannot be read; the message says why and shows the expected form."""


@dataclass(frozen=True)
class ShiftWindow:
    """One weekly window: ``days`` (0 = Monday … 6 = Sunday, the days it starts on),
    ``start_min`` / ``end_min`` minutes after midnight (end ≤ start: over midnight)."""

    days: frozenset[int]
    start_min: int
    end_min: int
    text: str

    def intervals(self) -> Iterable[tuple[int, int]]:
        """``(start, end)`` minute-of-week intervals (end may exceed one week)."""
        length = (self.end_min - self.start_min) % 1440 or 1440
        for d in sorted(self.days):
            start = d * 1440 + self.start_min
            yield start, start + length

    def contains(self, minute_of_week: float) -> bool:
        """Whether the moment (minutes since Monday 00:00, local) lies in this window."""
        return any(s <= m < e for s, e in self.intervals()
                   for m in (minute_of_week, minute_of_week + _WEEK_MIN))


def _minutes(text: str, *, end: bool) -> int:
    hh, mm = (int(x) for x in text.split(":"))
    if end and (hh, mm) == (24, 0):
        return 1440
    if not (0 <= hh <= 23 and 0 <= mm <= 59):
        raise ScheduleError(f"{text!r} is not a time of day HH:MM")
    return hh * 60 + mm


def _days(text: str) -> frozenset[int]:
    spec = text.strip().lower()
    if spec in ("daily", "every day", "mon-sun"):
        return frozenset(range(7))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        a, sep, b = part.partition("-")
        names = [a.strip(), b.strip()] if sep else [a.strip()]
        for name in names:
            if name[:3] not in DAYS or name not in (name[:3], _LONG[name[:3]]):
                raise ScheduleError(f"{name!r} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun or daily)")
        first = DAYS.index(names[0][:3])
        last = DAYS.index(names[-1][:3])
        d = first
        while True:
            out.add(d)
            if d == last:
                break
            d = (d + 1) % 7
    return frozenset(out)


_LONG = {"mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday",
         "fri": "friday", "sat": "saturday", "sun": "sunday"}


def parse_window(text: str) -> ShiftWindow:
    """``"Mon-Fri 22:00-06:00"`` → :class:`ShiftWindow`.

    Raises:
        ScheduleError: not of the form ``DAYS HH:MM-HH:MM``, unknown day, bad time, or an
            empty window (start = end, use ``00:00-24:00`` for a whole day).
    """
    if not isinstance(text, str):
        raise ScheduleError("must be a string like \"Mon-Fri 22:00-06:00\"")
    m = _WINDOW_RE.match(text)
    if not m:
        raise ScheduleError(f"{text!r} is not of the form \"Mon-Fri 22:00-06:00\" "
                            "(days, then start-end in 24-hour local time)")
    days = _days(m.group("days"))
    start = _minutes(m.group("start"), end=False)
    end = _minutes(m.group("end"), end=True)
    if start == end:
        raise ScheduleError(f"{text!r}: start and end are equal; for a whole day write 00:00-24:00")
    return ShiftWindow(days, start, end, text)


class ShiftSchedule:
    """The ``[shift] schedule`` windows (:func:`parse_window`); empty = no schedule."""

    def __init__(self, windows: Iterable[ShiftWindow]) -> None:
        self.windows = tuple(windows)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> ShiftSchedule:
        """Parse every entry. Raises ScheduleError for the first bad one."""
        return cls(parse_window(e) for e in entries)

    def __bool__(self) -> bool:
        return bool(self.windows)

    def active(self, local: datetime) -> bool:
        """Whether ``local`` (a wall-clock time in the device's zone) lies in a window."""
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute + local.second / 60
        return any(w.contains(minute) for w in self.windows)

    def transition(self, in_window: bool, last_in_window: bool | None,
                   on_shift: bool) -> str | None:
        """What the schedule asks for now: ``"shift_start"``, ``"shift_end"`` or None.

        Args:
            in_window: :meth:`active` now.
            last_in_window: the value at the previous check (None: never checked before —
                then only a start is derived, never an end).
            on_shift: whether a shift runs now (started by the schedule or by hand).
        """
        if in_window == last_in_window:
            return None
        if in_window and not on_shift:
            return "shift_start"
        if not in_window and last_in_window and on_shift:
            return "shift_end"
        return None

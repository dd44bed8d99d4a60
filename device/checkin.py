"""The device-side check-in timer (SPEC §2: check-in start/done, ``missed_checkin`` when the
device's own timer expires; the relay runs a second timer from ``checkin_start`` so a destroyed
device is still missed).

The running check-in is part of the durable device state (``state`` row ``checkin`` in the
queue database, written in the same transaction as its ``checkin_start`` event), so a restart
neither forgets it nor restarts it: on start-up the remaining time is taken from the stored
wall-clock deadline, capped at the check-in's duration (a clock set back cannot stretch it).
Within one run the monotonic clock decides, so an NTP step cannot shorten or stretch it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

__all__ = ["STATE_KEY", "Checkin", "CheckinTimer"]

STATE_KEY = "checkin"


@dataclass
class Checkin:
    """A running check-in: the ``checkin_start`` event ``id``, ``duration_s``, the wall-clock
    ``deadline`` (Unix s, stored) and the monotonic ``due`` (this run)."""

    id: str
    duration_s: int
    deadline: float
    due: float
    warned: bool = False

    def state(self) -> dict[str, object]:
        """The stored form."""
        return {"id": self.id, "duration_s": self.duration_s, "deadline": self.deadline}


class CheckinTimer:
    """Warns before and reports the expiry of the running check-in.

    Args:
        warn_before_s: seconds before expiry for ``on_warn`` (0 = no warning).
        on_warn: ``(Checkin) -> None``, the pre-expiry vibration.
        on_expire: ``(Checkin) -> None``, raises ``missed_checkin`` and clears the state.
    """

    def __init__(self, warn_before_s: float, on_warn: Callable[[Checkin], None],
                 on_expire: Callable[[Checkin], None]) -> None:
        self.warn_before_s = warn_before_s
        self.on_warn, self.on_expire = on_warn, on_expire
        self._lock = threading.Lock()
        self.current: Checkin | None = None

    @property
    def running(self) -> bool:
        return self.current is not None

    def begin(self, event_id: str, duration_s: int, *, now: float | None = None) -> Checkin:
        """A check-in was just started (its event is queued): time it from now."""
        wall = time.time() if now is None else now
        c = Checkin(event_id, duration_s, wall + duration_s, time.monotonic() + duration_s)
        with self._lock:
            self.current = c
        return c

    def restore(self, stored: object, *, now: float | None = None) -> Checkin | None:
        """Resume a check-in from the stored state (None / malformed = none running)."""
        if not isinstance(stored, dict):
            return None
        try:
            event_id, duration = str(stored["id"]), int(stored["duration_s"])
            deadline = float(stored["deadline"])
        except (KeyError, TypeError, ValueError):
            log.error("ignoring a malformed stored check-in: %r", stored)
            return None
        wall = time.time() if now is None else now
        remaining = min(max(0.0, deadline - wall), float(duration))
        c = Checkin(event_id, duration, deadline, time.monotonic() + remaining)
        with self._lock:
            self.current = c
        log.info("check-in %s resumed, %.0f s left", event_id, remaining)
        return c

    def end(self) -> Checkin | None:
        """Stop timing (check-in done or expired); returns what was running."""
        with self._lock:
            c, self.current = self.current, None
        return c

    def remaining_s(self) -> float | None:
        """Seconds left, None when no check-in runs."""
        c = self.current
        return None if c is None else max(0.0, c.due - time.monotonic())

    def tick(self) -> None:
        """Warn or expire when due; call often (the daemon's housekeeping loop does)."""
        c = self.current
        if c is None:
            return
        now = time.monotonic()
        if now >= c.due:
            with self._lock:
                if self.current is not c:
                    return
            self.on_expire(c)
            return
        if not c.warned and self.warn_before_s > 0 and now >= c.due - self.warn_before_s:
            c.warned = True
            self.on_warn(c)

"""Device clocks are not trusted (SPEC §7, issue 15 "relay clock for supervision").

The relay's own clock drives every deadline (lost contact, check-in expiry), the event log
(``stored_at``) and SIA DC-09 timestamps; the device's ``ts`` only dates the event and travels
as its time of occurrence. Check-in ordering uses the device's *sequence*
(``relay/redis_scripts.py``), never its clock.

An event dated far outside the window around the relay's clock is kept and delivered, but
flagged: its record gets ``clock = "off"`` and ``clock_offset_s`` (device − relay, s), and the
device gets an operator-visible fault (:data:`relay.faults.CLOCK`, one per device, counted).
"""

from __future__ import annotations

import time
from typing import Final

from protocol.messages import Event

from .faults import CLOCK, record_fault
from .store import Store

#: Dated more than this after the relay's clock: flagged, seconds (a device before NTP sync).
MAX_AHEAD_S: Final = 300.0
#: Dated more than this before it: flagged (a device queue may hold an event offline for days).
MAX_BEHIND_S: Final = 7 * 86400.0


def clock_offset(event: Event, now: float) -> float | None:
    """``event.ts - now`` in seconds when outside the window, else None."""
    off = event.ts - now
    return off if off > MAX_AHEAD_S or off < -MAX_BEHIND_S else None


def flag_clock(store: Store, event: Event, now: float | None = None) -> float | None:
    """Flag a newly stored device event dated outside the window (see module docstring).
    Returns the offset flagged, or None.

    Raises:
        relay.store.StoreError.
    """
    if event.origin != "device":
        return None
    now = time.time() if now is None else now
    off = clock_offset(event, now)
    if off is None:
        return None
    store.mark_event(event.id, clock="off", clock_offset_s=f"{off:.0f}")
    days = off / 86400
    record_fault(store, event.device, CLOCK,
                 f"device {event.device} clock is off: event {event.id} dated {days:+.1f} days from the relay's "
                 "clock (kept and delivered; supervision uses the relay's clock) — check its NTP sync", now=now)
    return off

"""Fair shares (issue 15): no device can starve another worker's alarm.

Three rules, each at the cheapest place:

1. **Alarms first across all devices** — dispatch jobs of urgent events (alarms, cancels, the
   relay's lost contact and its restore: :func:`is_urgent`) go to the ``lw:dispatch`` stream,
   routine events to ``lw:dispatch:routine`` (:data:`ROUTINE_STREAM`); dispatchers always take
   urgent jobs first (:meth:`relay.store.Store.next_jobs`). Only urgent events enter a device's
   dispatch order list (alarm before its cancel, SPEC §3), so an alarm never waits behind its
   own device's routine events.
2. **Per-device rate limit for routine kinds at ingest** (:class:`RateLimiter`): a token
   bucket per device, in memory, checked right after decoding — before any Redis write — so a
   flood costs a JSON decode per message. Excess is *coalesced*: not stored, not acked
   ``received`` (a real device keeps it queued and resends later: nothing is lost), counted,
   and one operator-visible fault per device (:data:`relay.faults.RATE_LIMIT`) per
   :attr:`RateLimiter.fault_every_s`. Alarms and cancels are never limited. With several
   relays each instance limits its own share.
3. **Test signals to the ARC at most one per device per period** (:func:`arc_test_coalesced`,
   ``[relay] test_signal_period_s``): a Redis ``SET NX EX`` per device, so it holds across
   relays; a test inside the period whose first test the ARC ACKed is recorded
   ``arc = "coalesced"`` (``coalesced_into``) and the device gets an ``arc`` ack naming it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Final

from protocol.messages import ALARM_KINDS, RELAY_ALARM_KINDS, Event

#: Stream of routine dispatch jobs (urgent ones stay on ``lw:dispatch``).
ROUTINE_STREAM: Final = "lw:dispatch:routine"
#: Prefix of job ids from :data:`ROUTINE_STREAM` as handed to dispatchers.
ROUTINE_JOB: Final = "routine/"
#: Kinds dispatched with alarms: cancels, the relay's restore of a lost contact, and the
#: ``listen_in`` (606) announcing an alarm's voice call — in the alarm's order, so the ARC sees
#: it after the alarm it belongs to, and never rate-limited (issue 11; the device queues it
#: with alarm priority too, protocol.messages.alarm_priority).
URGENT_EXTRA: Final = frozenset({"cancel", "contact_restore", "listen_in"})

#: Defaults (config keys ``[relay] routine_per_minute``, ``routine_burst``,
#: ``test_signal_period_s``).
ROUTINE_PER_MINUTE: Final = 60.0
ROUTINE_BURST: Final = 30
TEST_SIGNAL_PERIOD_S: Final = 60.0


#: An urgent kind named in a raw payload (JSON as devices write it, optional spaces).
_URGENT_RAW: Final = re.compile(rb'"kind"\s*:\s*"(' + b"|".join(
    k.encode() for k in sorted(ALARM_KINDS | URGENT_EXTRA)) + rb')"')


def is_urgent(kind: str) -> bool:
    """True for kinds dispatched before every routine event (alarms, cancels, restores)."""
    return kind in ALARM_KINDS or kind in RELAY_ALARM_KINDS or kind in URGENT_EXTRA


class RateLimiter:
    """Token bucket per device for routine event kinds. Thread-safe.

    Args:
        per_minute: sustained routine events per device per minute.
        burst: bucket size (events that may arrive at once).
        clock: monotonic seconds (injectable for tests).
        fault_every_s: at most one fault record per device per this many seconds.
    """

    def __init__(self, per_minute: float = ROUTINE_PER_MINUTE, burst: int = ROUTINE_BURST, *,
                 clock: Callable[[], float] = time.monotonic, fault_every_s: float = 60.0) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst ≥ 1")
        self.rate_s = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.fault_every_s = fault_every_s
        self._buckets: dict[str, tuple[float, float]] = {}  # device → (tokens, at)
        self._faulted: dict[str, float] = {}
        self._lock = threading.Lock()
        #: Excess events per device since start.
        self.coalesced: dict[str, int] = {}

    def allow(self, event: Event) -> bool:
        """Whether ``event`` may go on; urgent kinds always may."""
        if is_urgent(event.kind):
            return True
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(event.device, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate_s)
            if tokens >= 1.0:
                self._buckets[event.device] = (tokens - 1.0, now)
                return True
            self._buckets[event.device] = (tokens, now)
            self.coalesced[event.device] = self.coalesced.get(event.device, 0) + 1
            if len(self._buckets) > 500_000:  # bounded memory: forget idle buckets
                self._buckets.clear()
            return False

    def fast_reject(self, device: str, payload: bytes) -> bool:
        """Before decoding: True when ``device`` has no token left and ``payload`` surely is
        not urgent (names no urgent kind and has no ``\\u`` escape that could hide one). The
        caller coalesces it without decoding — a flood then costs almost nothing. Never True
        for anything that might be an alarm or a cancel."""
        if b"\\u" in payload or _URGENT_RAW.search(payload):
            return False
        now = self.clock()
        with self._lock:
            hit = self._buckets.get(device)
            if hit is None or min(self.burst, hit[0] + (now - hit[1]) * self.rate_s) >= 1.0:
                return False
            self.coalesced[device] = self.coalesced.get(device, 0) + 1
            return True

    def fault_due(self, device: str) -> bool:
        """True at most once per :attr:`fault_every_s` per device (for the fault record)."""
        now = self.clock()
        with self._lock:
            last = self._faulted.get(device)
            if last is not None and now - last < self.fault_every_s:
                return False
            self._faulted[device] = now
            return True


def arc_test_coalesced(store, event: Event, period_s: float, wait_s: float = 10.0) -> dict | None:
    """One test signal per device per ``period_s`` to the ARC, across relays (issue 15).

    Returns None when ``event`` must be sent (not a ``test``, the gate is off, it is the
    period's first test, or the period's test was not ACKed by the ARC within ``wait_s``
    seconds: then this one takes the gate over and goes). Otherwise the ``arc`` ack detail that coalesces it into the
    period's ACKed test: ``{"receiver", "latency_ms": 0, "coalesced_into": <event id>}``.

    Raises:
        relay.store.StoreError.
    """
    if event.kind != "test" or period_s <= 0:
        return None
    from .store import ARC_TERMINAL, device_key

    key, px = device_key(event.device, "testgate"), int(period_s * 1000)
    if store._call(store.r.set, key, event.id, nx=True, px=px):
        return None
    holder = store._call(store.r.get, key)
    holder = holder.decode() if isinstance(holder, bytes) else holder
    if holder in (None, event.id):
        return None
    deadline = time.monotonic() + wait_s
    while True:  # the period's test may still be on its way to the ARC: wait for its answer
        rec = store.event(holder)
        state = rec[1].get("arc") if rec else None
        if state == "acked":
            return {"receiver": rec[1].get("arc_receiver", ""), "latency_ms": 0.0, "coalesced_into": holder}
        # Still on its way (no arc state yet, being sent, retrying) → wait; only a final state
        # other than acked (or a vanished record) hands the gate to this one. Checking for
        # "pending"/"retrying" alone let a second worker send while the first had not yet
        # marked its test (two 601s within a period under load).
        failed = rec is None or (state in ARC_TERMINAL and state != "acked")
        if failed or time.monotonic() > deadline:
            store._call(store.r.set, key, event.id, px=px)  # it failed or is gone: this one goes
            return None
        time.sleep(0.02)

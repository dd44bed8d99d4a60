"""The device's events: raising one durably, the button's gestures, cancel, check-in and shift (SPEC §2).

Split out of :mod:`device.daemon` (issue 9): :class:`DaemonActions` is mixed into
:class:`device.daemon.DeviceDaemon` and uses its state (``cfg``, ``queue``, ``_lock``,
``checkin``, ``feedback``, ``observer`` …); :mod:`device.daemon` re-exports
:class:`DeviceError`. Delivery rule (SPEC §2): :meth:`DaemonActions.raise_event` stores every
event in the queue (fsync) before the sender may send it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from protocol.errors import LonewatchError, ValidationError
from protocol.messages import ALARM_KINDS, Event, alarm_priority, encode

from .checkin import STATE_KEY as CHECKIN_STATE
from .checkin import Checkin

__all__ = ["DaemonActions", "DeviceError"]

log = logging.getLogger("device.daemon")


class DeviceError(LonewatchError, RuntimeError):
    """A request the device refuses in its current state (e.g. no check-in running)."""


class DaemonActions:
    """Event-raising half of :class:`device.daemon.DeviceDaemon` (a mixin, no state of its own)."""

    def raise_event(self, kind: str, data: dict[str, Any] | None = None, *,
                    state: dict[str, Any] | Callable[[Event], dict[str, Any]] | None = None) -> Event:
        """Create an event, store it durably, then wake the sender.

        Returns the event once it is on disk (the queue commits with fsync before this
        returns). ``state`` (a dict or ``(event) -> dict``) is device state committed in
        the same transaction. Raises :class:`protocol.errors.ValidationError` for an
        invalid event and :class:`device.queue.QueueError` if the queue cannot be written.
        """
        with self._lock:
            seq = self.queue.next_sequence()
            # Where the worker is goes out only with an alarm or on shift (issue 13).
            position = self.modem_state.position if kind in ALARM_KINDS or self.on_shift else None
            event = Event(
                device=self.device_id, seq=seq, kind=kind, ts=time.time(),
                position=position, data=data or {},
                beacon=self.place.beacon() if kind in ALARM_KINDS or self.on_shift else None,  # as the position
            )  # fmt: skip
            for _ in range(3):
                try:
                    payload = encode(event)
                    break
                except ValidationError as exc:
                    # A bad fix or beacon sighting must never cost the alarm: send without it.
                    part = next((p for p in ("position", "beacon") if exc.field.startswith(p)
                                 and getattr(event, p) is not None), None)
                    if part is None:
                        raise
                    log.error("%s %r unusable (%s); raising %s without it", part, getattr(event, part), exc, kind)
                    event = dataclasses.replace(event, **{part: None})
            extra = state(event) if callable(state) else dict(state or {})
            if kind in ALARM_KINDS:
                extra["open_alarm"] = event.id
            self.queue.put_with_state(event.id, kind, payload, priority=alarm_priority(kind), state=extra)
        self.observer("queued", {"id": event.id, "kind": kind, "queue_depth": self.queue.depth()})
        self._wake.set()
        if self.fallback is not None:
            self.fallback.wake()
        if self.voice is not None and kind in ALARM_KINDS:  # stored first, then listen-in (issue 11)
            self.voice.alarm_stored(event)
        self.place.after_event(event)
        return event

    def _on_gesture(self, gesture: str) -> None:
        try:
            if gesture == "alarm":
                kind = "silent_panic" if self.cfg.device.silent else "panic"
                self.observer("alarm_recognised", {"kind": kind, "hold_s": self.cfg.timing.hold_s})
                self.raise_event(kind)
            elif gesture == "cancel":
                self.cancel_alarm()
            elif gesture == "checkin":
                self.toggle_checkin()
            elif gesture == "mandown_pause" and self.mandown is not None:
                self.mandown.toggle_pause()
        except Exception:
            # The worker pressed for help: never let an error vanish in the button thread.
            log.exception("could not raise the event for gesture %s", gesture)
            self.feedback and self.feedback.play("no_connection")

    def cancel_alarm(self) -> Event:
        """Send ``cancel`` for the open alarm (a new event; the alarm itself stays).

        Raises:
            DeviceError: no alarm is open.
        """
        with self._lock:
            cancelled = self.open_alarm
            if cancelled is None:
                raise DeviceError("no alarm is open")
            self.observer("cancel_recognised", {"cancels": cancelled})
            ev = self.raise_event("cancel", {"cancels": cancelled}, state={"open_alarm": None})
        self.feedback and self.feedback.play("alarm_cancelled")
        return ev

    def toggle_checkin(self, duration_s: int | None = None) -> Event:
        """Start a check-in timer, or finish the running one (SPEC §2 check-in)."""
        with self._lock:
            if self.checkin.running:
                return self.finish_checkin()
            return self.start_checkin(duration_s)

    def start_checkin(self, duration_s: int | None = None) -> Event:
        """Start a check-in of ``duration_s`` seconds (default ``checkin_default_s``).

        Raises:
            DeviceError: one runs already.
        """
        duration = int(duration_s or self.cfg.timing.checkin_default_s)
        with self._lock:
            if self.checkin.running:
                raise DeviceError("a check-in is running already; finish it first")
            ev = self.raise_event(
                "checkin_start", {"duration_s": duration},
                state=lambda e: {CHECKIN_STATE: {"id": e.id, "duration_s": duration,
                                                 "deadline": e.ts + duration}})
            self.checkin.begin(ev.id, duration, now=ev.ts)
        self.observer("checkin_started", {"id": ev.id, "duration_s": duration})
        self.feedback and self.feedback.play("checkin_started")
        return ev

    def finish_checkin(self) -> Event:
        """The worker checked in: ``checkin_done`` for the running check-in.

        Raises:
            DeviceError: no check-in runs.
        """
        with self._lock:
            c = self.checkin.current
            if c is None:
                raise DeviceError("no check-in is running")
            ev = self.raise_event("checkin_done", {"checkin": c.id}, state={CHECKIN_STATE: None})
            self.checkin.end()
        self.feedback and self.feedback.play("checkin_done")
        return ev

    def _checkin_warn(self, c: Checkin) -> None:
        self.observer("checkin_expiring", {"id": c.id, "remaining_s": round(max(0.0, c.due - time.monotonic()), 1)})
        self.feedback and self.feedback.play("checkin_expiring")

    def _checkin_expired(self, c: Checkin) -> None:
        with self._lock:
            if self.checkin.current is not c:
                return
            self.raise_event("missed_checkin", {"checkin": c.id}, state={CHECKIN_STATE: None})
            self.checkin.end()
        log.warning("check-in %s expired without check-in: missed_checkin raised", c.id)

    def shift(self, start: bool, source: str = "cli") -> Event:
        """Start (``start=True``) or end the worker's shift (SPEC §2 ``shift_start`` /
        ``shift_end``); ``source`` is ``"cli"``, ``"schedule"`` … (sent in ``data``).

        Raises:
            DeviceError: already on / off shift.
        """
        with self._lock:
            if start == self.on_shift:
                raise DeviceError("already on shift" if start else "not on shift")
            return self.raise_event("shift_start" if start else "shift_end", {"source": source},
                                    state={"on_shift": start})

"""The device's loops and the relay's acks: sender, alive, modem readings, housekeeping (SPEC §2).

Split out of :mod:`device.daemon` (issue 9): :class:`DaemonLoops` is mixed into
:class:`device.daemon.DeviceDaemon` and uses its state (``cfg``, ``queue``, ``link``,
``_stop``, ``_wake``, ``heartbeats`` …). The sender resends every unacknowledged event every
``resend_after_s`` and an event leaves the queue only on the relay's ``received`` ack (SPEC §2);
alive messages are never queued (SPEC §2, §6: idle CPU); the housekeeping loop runs the check-in
timer, the shift schedule and the battery gauge.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from protocol.messages import ALARM_KINDS, Ack, Alive, encode

from .config_sections import FIRMWARE_VERSION

__all__ = ["DaemonLoops"]

log = logging.getLogger("device.daemon")


class DaemonLoops:
    """Ack handling and the threads' loops of :class:`device.daemon.DeviceDaemon` (a mixin,
    no state of its own)."""

    def _on_ack(self, ack: Ack) -> None:
        self.place.on_ack(ack)
        if ack.stage == "arc" and self.queue.get(ack.id) is not None:
            # The relay's dispatcher can answer before its pipeline thread has published
            # "received" (two threads, one MQTT connection): an ARC ACK means the relay stored
            # the event, so it counts as "received" first — the worker feels "alarm taken",
            # then "ARC has it", never the other way round (SPEC §2 feedback order).
            self._on_ack(Ack(id=ack.id, stage="received", ts=ack.ts))
        if ack.stage == "received":
            self.observer("ack_arrived", {"id": ack.id})
            if isinstance(ack.detail.get("next_seq"), int):  # issue 15: our ids were reused
                log.error("relay: event id %s reused with other content (%s); sequence moved to %s",
                          ack.id, ack.detail.get("delivered_as") or "not delivered", ack.detail["next_seq"])
                self.queue.raise_sequence(ack.detail["next_seq"])
                self.observer("id_conflict", {"id": ack.id, **ack.detail})
            known = self.queue.get(ack.id)
            if self.queue.ack(ack.id):
                self.observer("ack_received", {"id": ack.id})
                if known is not None and known.kind in ALARM_KINDS and self.feedback:
                    self.feedback.play("alarm_taken")
            if self.fallback is not None:
                self.fallback.received(ack.id)
        elif ack.stage == "arc":
            self.observer("ack_arc", {"id": ack.id, **ack.detail})
            if self.feedback and not ack.detail.get("repeat"):
                self.feedback.play("arc_delivered")
        elif ack.stage == "arc_failed":
            self.observer("ack_arc_failed", {"id": ack.id, **ack.detail})

    def _on_connection(self, connected: bool) -> None:
        self.observer("connection", {"connected": connected})
        if connected:
            self._wake.set()

    def _on_fallback(self, event_id: str) -> None:
        self.feedback and self.feedback.play("no_connection")

    # --- threads -----------------------------------------------------------------------

    def _sender_loop(self) -> None:
        resend = self.cfg.timing.resend_after_s
        while not self._stop.is_set():
            self._beat("sender")
            # Woken at once by a new event or a (re)connect; the timeout only paces resends.
            # Idle wake-ups cost CPU and SD-card reads on a Pi Zero (SPEC §6: ≤ 1 % idle CPU).
            self._wake.wait(2.0)
            self._wake.clear()
            if not self.link.connected.is_set():
                continue
            try:
                for qe in self.queue.due(time.time(), resend):
                    if self._stop.is_set():
                        return
                    self.observer("publishing", {"id": qe.id, "attempt": qe.attempts + 1})
                    if not self.link.publish("event", qe.payload):
                        break
                    self.queue.mark_attempt(qe.id, time.time())
                    self.observer("published", {"id": qe.id, "attempt": qe.attempts + 1})
            except Exception:
                log.exception("sender loop error; retrying")
                self._stop.wait(1.0)

    def _alive_loop(self) -> None:
        interval = self.cfg.timing.alive_interval_s
        # First alive soon after connecting, then every interval.
        deadline = time.monotonic() + interval
        while not self._stop.is_set() and not self.link.connected.is_set() and time.monotonic() < deadline:
            self._beat("alive")
            self._stop.wait(1.0)
        while not self._stop.is_set():
            self._beat("alive")
            try:
                if self.link.connected.is_set():
                    self.link.publish("alive", encode(self.alive()))
            except Exception:
                log.exception("could not send an alive message")
            next_at = time.monotonic() + interval
            while not self._stop.is_set() and time.monotonic() < next_at:
                self._beat("alive")
                self._stop.wait(min(5.0, max(0.0, next_at - time.monotonic())))

    def alive(self) -> Alive:
        """The current alive message (SPEC §2): battery %, signal dBm, registration, last
        fix, uptime s, firmware, queue depth."""
        ms = self.modem_state
        return Alive(
            device=self.device_id, ts=time.time(), battery_pct=self.battery.percent if self.battery else None,
            signal_dbm=ms.signal_dbm, registration=ms.registration,
            position=ms.position if self.on_shift else None,  # issue 13: no position off shift
            uptime_s=round(time.monotonic() - self._started, 1), firmware=FIRMWARE_VERSION,
            queue_depth=self.queue.depth(), beacon=self.place.beacon() if self.on_shift else None,
        )  # fmt: skip

    def _modem_loop(self) -> None:
        interval = min(self.cfg.timing.alive_interval_s, 30)
        while not self._stop.is_set():
            self.supervisor.poll(self.modem_state)
            self._stop.wait(interval)

    def _house_loop(self) -> None:
        """Check-in timer, shift schedule and battery, ~5 times a second."""
        next_battery = 0.0
        next_schedule = 0.0
        while not self._stop.is_set():
            self._beat("house")
            try:
                self.checkin.tick()
                now = time.monotonic()
                if self.schedule and now >= next_schedule:
                    next_schedule = now + 1.0
                    self._schedule_tick()
                if self.battery is not None and now >= next_battery:
                    next_battery = now + self.cfg.battery.poll_s
                    self._battery_tick()
                self.place.tick()
            except Exception:
                log.exception("housekeeping failed; retrying")
                self._stop.wait(1.0)
            self._stop.wait(1.0)

    def _schedule_tick(self) -> None:
        local = datetime.now(timezone.utc).astimezone(self.tz) if self.tz else datetime.now()
        in_window = self.schedule.active(local)
        last = self.queue.get_state("schedule_in_window")
        with self._lock:
            action = self.schedule.transition(in_window, last if isinstance(last, bool) else None, self.on_shift)
            if action is not None:
                log.info("shift schedule: %s", action)
                self.raise_event(action, {"source": "schedule"},
                                 state={"on_shift": action == "shift_start", "schedule_in_window": in_window})
            elif last != in_window:
                self.queue.set_state("schedule_in_window", in_window)

    def _battery_tick(self) -> None:
        assert self.battery is not None
        change = self.battery.check()
        if change is None:
            return
        pct = self.battery.percent
        self.observer("battery", {"event": change, "battery_pct": pct})
        self.raise_event(change, {"battery_pct": pct}, state={"battery_low": change == "low_battery"})

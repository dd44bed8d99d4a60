"""The device daemon: button → durable queue → MQTT → relay, plus alive, check-in and
feedback (SPEC §2).

Delivery rule: every event is written to the SQLite queue (fsync) **before** the first send
attempt, is resent every ``resend_after_s`` while unacknowledged, and leaves the queue only
on the relay's ``received`` ack (a broker PUBACK proves nothing about the relay). Alarms go
first. Alive messages are never queued: only the freshest one is worth sending.

The hardware edges are handed in (STYLE §2): a gpiozero pin factory (MockFactory in tests
and the demo), a :class:`device.modem.at.Modem` or None, so the daemon runs the same against
real pins and a real modem as against simulators.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol.messages import (
    ALARM_KINDS,
    Ack,
    Alive,
    Event,
    Position,
    alarm_priority,
    encode,
)

from .button import GestureButton, GestureTiming
from .config import DeviceConfig
from .feedback import Feedback
from .link import MqttLink
from .queue import EventQueue

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "0.1.0"
#: Observer signature: ``(step, fields)`` — the demo's timeline and the tests watch this.
Observer = Callable[[str, dict[str, Any]], None]


class ModemState:
    """Last readings from the modem, refreshed by the daemon's modem thread.

    ``signal_dbm`` (dBm or None), ``registration`` (see protocol REGISTRATION_STATES),
    ``position`` (last GNSS fix or None)."""

    def __init__(self) -> None:
        self.signal_dbm: int | None = None
        self.registration = "unknown"
        self.position: Position | None = None
        self.modem_ready = False


class DeviceDaemon:
    """One lone worker's device.

    Args:
        cfg: validated device config.
        pin_factory: gpiozero pin factory; None = gpiozero's default (real pins).
        modem: an opened-or-openable :class:`device.modem.at.Modem`, or None (no modem).
        observer: optional ``(step, fields)`` hook.
        tls_ca: override of the TLS CA (``None`` = use config: ``mqtt.tls``/``mqtt.ca_file``).
    """

    def __init__(self, cfg: DeviceConfig, *, pin_factory=None, modem=None, observer: Observer | None = None) -> None:
        self.cfg = cfg
        self.device_id = cfg.device.id
        self.observer = observer or (lambda step, fields: None)
        self.modem = modem
        self.modem_state = ModemState()
        state_dir = Path(cfg.device.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.queue = EventQueue(state_dir / "queue.db")
        self._pin_factory = pin_factory
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = time.monotonic()
        self.open_alarm: str | None = None
        self._checkin_timer: threading.Timer | None = None
        self._checkin_warn: threading.Timer | None = None
        self.checkin_event: str | None = None
        m = cfg.mqtt
        self.link = MqttLink(
            self.device_id,
            host=m.host,
            port=m.port,
            username=m.username or self.device_id,
            password=m.password,
            tls_ca=(m.ca_file if m.tls else None),
            keepalive_s=m.keepalive_s,
            on_ack=self._on_ack,
            on_connection=self._on_connection,
        )
        self.button: GestureButton | None = None
        self.feedback: Feedback | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Claim the pins, connect, and start the sender, alive and modem threads."""
        g, t = self.cfg.gpio, self.cfg.timing
        self.feedback = Feedback(
            g.led_pin, g.vibration_pin, g.buzzer_pin, silent=self.cfg.device.silent,
            pin_factory=self._pin_factory, observer=lambda p: self.observer("feedback", {"pattern": p}),
        )  # fmt: skip
        timing = GestureTiming(
            hold_s=t.hold_s, cancel_presses=t.cancel_presses, cancel_window_s=t.cancel_window_s,
            checkin_presses=t.checkin_presses, checkin_window_s=t.checkin_window_s, bounce_s=t.bounce_s,
        )  # fmt: skip
        self.button = GestureButton(
            g.button_pin, timing, self._on_gesture, on_press=lambda: self.observer("button_down", {"pin": g.button_pin}),
            alarm_open=lambda: self.open_alarm is not None, pin_factory=self._pin_factory,
        )  # fmt: skip
        if self.modem is not None:
            self._spawn(self._modem_loop, "modem")
        self.link.start()
        self._spawn(self._sender_loop, "sender")
        self._spawn(self._alive_loop, "alive")
        log.info("device %s started, firmware %s, %d event(s) queued", self.device_id, FIRMWARE_VERSION, self.queue.depth())

    def stop(self) -> None:
        """Stop cleanly: queued events stay on disk and are sent after the next start."""
        self._stop.set()
        self._wake.set()
        for timer in (self._checkin_timer, self._checkin_warn):
            if timer:
                timer.cancel()
        for th in self._threads:
            th.join(5)
        self.link.stop()
        if self.modem is not None:
            self.modem.close()
        if self.button:
            self.button.close()
        if self.feedback:
            self.feedback.close()
        self.queue.close()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        th = threading.Thread(target=target, name=f"device-{name}", daemon=True)
        th.start()
        self._threads.append(th)

    # --- events ------------------------------------------------------------------------

    def raise_event(self, kind: str, data: dict[str, Any] | None = None) -> Event:
        """Create an event, store it durably, then wake the sender.

        Returns the event once it is on disk (the queue commits with fsync before this
        returns). Raises :class:`protocol.errors.ValidationError` for an invalid event and
        :class:`device.queue.QueueError` if the queue cannot be written.
        """
        with self._lock:
            seq = self.queue.next_sequence()
            event = Event(
                device=self.device_id, seq=seq, kind=kind, ts=time.time(),
                position=self.modem_state.position, data=data or {},
            )  # fmt: skip
            payload = encode(event)
            self.queue.put(event.id, kind, payload, priority=alarm_priority(kind))
            if kind in ALARM_KINDS:
                self.open_alarm = event.id
        self.observer("queued", {"id": event.id, "kind": kind, "queue_depth": self.queue.depth()})
        self._wake.set()
        return event

    def _on_gesture(self, gesture: str) -> None:
        try:
            if gesture == "alarm":
                kind = "silent_panic" if self.cfg.device.silent else "panic"
                self.observer("alarm_recognised", {"kind": kind, "hold_s": self.cfg.timing.hold_s})
                self.raise_event(kind)
            elif gesture == "cancel" and self.open_alarm:
                cancelled, self.open_alarm = self.open_alarm, None
                self.observer("cancel_recognised", {"cancels": cancelled})
                self.raise_event("cancel", {"cancels": cancelled})
                self.feedback and self.feedback.play("alarm_cancelled")
            elif gesture == "checkin":
                self.toggle_checkin()
        except Exception:
            # The worker pressed for help: never let an error vanish in gpiozero's thread.
            log.exception("could not raise the event for gesture %s", gesture)
            self.feedback and self.feedback.play("no_connection")

    def toggle_checkin(self, duration_s: int | None = None) -> Event:
        """Start a check-in timer, or finish the running one (SPEC §2 check-in).

        On expiry without ``checkin_done`` the device raises ``missed_checkin`` itself; the
        relay runs its own timer too, so a destroyed device is still missed."""
        for timer in (self._checkin_timer, self._checkin_warn):
            if timer:
                timer.cancel()
        if self.checkin_event is not None:
            self.checkin_event = None
            return self.raise_event("checkin_done")
        duration = duration_s or self.cfg.timing.checkin_default_s
        ev = self.raise_event("checkin_start", {"duration_s": duration})
        self.checkin_event = ev.id
        self.feedback and self.feedback.play("checkin_started")
        self._checkin_warn = threading.Timer(max(0.0, duration - 60), lambda: self.feedback and self.feedback.play("checkin_expiring"))
        self._checkin_timer = threading.Timer(duration, self._checkin_expired)
        for timer in (self._checkin_warn, self._checkin_timer):
            timer.daemon = True
            timer.start()
        return ev

    def _checkin_expired(self) -> None:
        if self.checkin_event is not None:
            self.checkin_event = None
            self.raise_event("missed_checkin")

    # --- acks from the relay -----------------------------------------------------------

    def _on_ack(self, ack: Ack) -> None:
        if ack.stage == "received":
            known = self.queue.get(ack.id)
            if self.queue.ack(ack.id):
                self.observer("ack_received", {"id": ack.id})
                if known is not None and known.kind in ALARM_KINDS and self.feedback:
                    self.feedback.play("alarm_taken")
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

    # --- threads -----------------------------------------------------------------------

    def _sender_loop(self) -> None:
        resend = self.cfg.timing.resend_after_s
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self.link.connected.is_set():
                continue
            try:
                for qe in self.queue.due(time.time(), resend):
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
        self.link.connected.wait(interval)
        while not self._stop.is_set():
            if self.link.connected.is_set():
                self.link.publish("alive", encode(self.alive()))
            self._stop.wait(interval)

    def alive(self) -> Alive:
        """The current alive message (SPEC §2): battery %, signal dBm, registration, last
        fix, uptime s, firmware, queue depth."""
        ms = self.modem_state
        return Alive(
            device=self.device_id, ts=time.time(), battery_pct=None, signal_dbm=ms.signal_dbm,
            registration=ms.registration, position=ms.position, uptime_s=round(time.monotonic() - self._started, 1),
            firmware=FIRMWARE_VERSION, queue_depth=self.queue.depth(),
        )  # fmt: skip

    def _modem_loop(self) -> None:
        from .modem.poll import poll_modem

        interval = min(self.cfg.timing.alive_interval_s, 30)
        while not self._stop.is_set():
            poll_modem(self.modem, self.modem_state, gnss=self.cfg.modem.gnss, sim_pin=self.cfg.modem.sim_pin)
            self._stop.wait(interval)

"""The device daemon: button → durable queue → MQTT → relay, with SMS fallback, check-in,
shifts, battery, alive and feedback (SPEC §2).

Delivery rule: every event is written to the SQLite queue (fsync) **before** the first send
attempt, is resent every ``resend_after_s`` while unacknowledged, and leaves the queue only
on the relay's ``received`` ack (a broker PUBACK proves nothing about the relay). Alarms go
first. An alarm without that ack after ``sms_fallback_after_s`` also goes out by SMS
(:mod:`device.fallback`). Alive messages are never queued: only the freshest one is worth
sending.

The hardware edges are handed in (STYLE §2): a gpiozero pin factory (MockFactory in tests
and the demo), a :class:`modem.at.Modem` or None, a battery source or None (then the
one named by ``[battery] source``), so the daemon runs the same against real pins and a
real modem as against simulators.

Threads: ``sender``, ``alive``, ``modem`` (readings), ``sms`` (fallback), ``house``
(check-in timer, shift schedule, battery), the button's own thread, the control socket and
paho's network thread. :meth:`DeviceDaemon.health` tells the service's watchdog whether the
ones that must never stall are alive.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from protocol.errors import LonewatchError, ValidationError
from protocol.messages import ALARM_KINDS, Ack, Alive, Event, Position, alarm_priority, encode

from .battery import BatteryMonitor, BatterySource, open_battery
from .button import GestureButton, GestureTiming
from .checkin import STATE_KEY as CHECKIN_STATE
from .checkin import Checkin, CheckinTimer
from device.config import DeviceConfig
from device.control import ControlServer, socket_path
from .fallback import SmsFallback
from .feedback import Feedback
from .link import MqttLink
from .queue import EventQueue
from .shift import ShiftSchedule

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "0.1.0"
#: Observer signature: ``(step, fields)`` — the demo's timeline and the tests watch this.
Observer = Callable[[str, dict[str, Any]], None]
#: A thread whose heartbeat is older than this is taken as stalled by :meth:`health`, seconds.
STALL_S = 30.0


class DeviceError(LonewatchError, RuntimeError):
    """A request the device refuses in its current state (e.g. no check-in running)."""


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
        modem: an opened-or-openable :class:`modem.at.Modem`, or None (no modem).
        observer: optional ``(step, fields)`` hook.
        battery: a :class:`device.battery.BatterySource`; None = from ``[battery] source``.
        control: serve the local control socket (``lonewatch device shift …``).

    Raises:
        device.queue.QueueError: the state directory or queue cannot be used.
    """

    def __init__(self, cfg: DeviceConfig, *, pin_factory=None, modem=None, observer: Observer | None = None,
                 battery: BatterySource | None = None, control: bool = True) -> None:
        self.cfg = cfg
        self.device_id = cfg.device.id
        self.observer = observer or (lambda step, fields: None)
        self.modem = modem
        self.modem_state = ModemState()
        self.state_dir = Path(cfg.device.state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.queue = EventQueue.open_or_recover(self.state_dir / "queue.db")
        if self.queue.recovered_from is not None:
            log.error("the event queue was corrupt and was moved to %s; started a new one",
                      self.queue.recovered_from)
        self.tz = _zone(cfg.device.timezone)
        self._pin_factory = pin_factory
        self._battery_source = battery
        self._control_wanted = control
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.RLock()
        self._threads: list[threading.Thread] = []
        self._started = time.monotonic()
        #: name → monotonic time of the last loop round (:meth:`health`).
        self.heartbeats: dict[str, float] = {}
        self.supervisor = None
        self.fallback: SmsFallback | None = None
        self.checkin = CheckinTimer(cfg.timing.checkin_warn_before_s, self._checkin_warn, self._checkin_expired)
        self.schedule = ShiftSchedule.parse(cfg.shift.schedule)
        self.battery: BatteryMonitor | None = None
        self.control: ControlServer | None = None
        m = cfg.mqtt
        self.link = MqttLink(
            self.device_id,
            host=m.host,
            port=m.port,
            username=m.username or self.device_id,
            password=m.password,
            tls_ca=(m.ca_file if m.tls else None),
            tls_cert=((m.cert_file, m.key_file) if m.tls and m.cert_file else None),
            keepalive_s=m.keepalive_s,
            on_ack=self._on_ack,
            on_connection=self._on_connection,
        )
        self.button: GestureButton | None = None
        self.feedback: Feedback | None = None

    # --- durable state -----------------------------------------------------------------

    @property
    def open_alarm(self) -> str | None:
        """Event id of the open alarm (the one a cancel refers to), kept across restarts."""
        value = self.queue.get_state("open_alarm")
        return value if isinstance(value, str) else None

    @property
    def on_shift(self) -> bool:
        """Whether the worker is on shift (started by hand or by the schedule)."""
        return self.queue.get_state("on_shift") is True

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Claim the pins, resume stored state, connect, and start the threads."""
        g, t, mc = self.cfg.gpio, self.cfg.timing, self.cfg.modem
        self.feedback = Feedback(
            g.led_pin, g.vibration_pin, g.buzzer_pin, silent=self.cfg.device.silent,
            pin_factory=self._pin_factory, observer=lambda p: self.observer("feedback", {"pattern": p}),
        )  # fmt: skip
        timing = GestureTiming(
            hold_s=t.hold_s, cancel_presses=t.cancel_presses, cancel_window_s=t.cancel_window_s,
            checkin_presses=t.checkin_presses, checkin_window_s=t.checkin_window_s, bounce_s=t.bounce_s,
            min_press_s=t.min_press_s, max_press_s=t.max_press_s,
        )  # fmt: skip
        self.button = GestureButton(
            g.button_pin, timing, self._on_gesture, on_press=lambda: self.observer("button_down", {"pin": g.button_pin}),
            alarm_open=lambda: self.open_alarm is not None, pin_factory=self._pin_factory,
            on_ignored=lambda reason: self.observer("button_ignored", {"reason": reason}),
        )  # fmt: skip
        if self.modem is not None:
            from modem.power import ModemPower
            from modem.supervisor import ModemSupervisor

            power = None
            if mc.power_pin:
                power = ModemPower(mc.power_pin, mode=mc.power_mode, active_high=mc.power_active_high,
                                   off_s=mc.power_off_s, pin_factory=self._pin_factory)
            self.modem.sms_timeout_s = mc.sms_timeout_s
            self.supervisor = ModemSupervisor(self.modem, sim_pin=mc.sim_pin, gnss=mc.gnss, power=power,
                                              observer=self.observer)
        elif self.cfg.sms.recipients:
            log.error("SMS fallback numbers are configured but the device has no modem: "
                      "alarms cannot fall back to SMS")
        self.fallback = SmsFallback(self.cfg, self.queue, self.supervisor, position=lambda: self.modem_state.position,
                                    tz=self.tz, observer=self.observer, on_fallback=self._on_fallback)
        self._open_battery()
        self.checkin.restore(self.queue.get_state(CHECKIN_STATE))
        if self._control_wanted:
            self._start_control()
        if self.supervisor is not None:
            self._spawn(self._modem_loop, "modem")
        self.link.start()
        self._spawn(self._sender_loop, "sender")
        self._spawn(self._alive_loop, "alive")
        self._spawn(lambda: self.fallback.run(self._stop, lambda: self._beat("sms")), "sms")
        self._spawn(self._house_loop, "house")
        log.info("device %s started, firmware %s, %d event(s) queued", self.device_id, FIRMWARE_VERSION, self.queue.depth())

    def stop(self) -> None:
        """Stop cleanly: queued events, the SMS fallback plan, a running check-in and the shift
        state stay on disk and carry on after the next start. Calling it again does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        with self._lock:  # an event being written finishes first
            pass
        if self.control is not None:
            self.control.stop()
        for th in self._threads:
            th.join(5)
        self.link.stop()
        if self.supervisor is not None:
            self.supervisor.close()
        elif self.modem is not None:
            self.modem.close()
        if self.button:
            self.button.close()
        if self.feedback:
            self.feedback.close()
        if self.battery is not None:
            self.battery.source.close()
        self.queue.close()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        self._beat(name)
        th = threading.Thread(target=target, name=f"device-{name}", daemon=True)
        th.start()
        self._threads.append(th)

    def _beat(self, name: str) -> None:
        self.heartbeats[name] = time.monotonic()

    def _open_battery(self) -> None:
        b = self.cfg.battery
        source = self._battery_source
        if source is None:
            try:
                source = open_battery(b.source, i2c_bus=b.i2c_bus, i2c_address=b.i2c_address)
            except LonewatchError as exc:
                log.error("battery gauge unavailable, battery %% will be unknown: %s", exc)
                source = None
        if source is not None:
            self.battery = BatteryMonitor(source, b.low_pct, b.restore_pct,
                                          low=self.queue.get_state("battery_low") is True)

    def _start_control(self) -> None:
        try:
            server = ControlServer(socket_path(self.state_dir), self.handle_control)
            server.start()
        except OSError as exc:  # never fatal: the button and the schedule still work
            log.error("control socket unavailable (%s): `lonewatch device shift` will not reach "
                      "this daemon", exc)
            return
        self.control = server

    def health(self) -> list[str]:
        """Problems that should stop the systemd watchdog pings (empty = healthy): a stalled
        sender / alive / SMS / housekeeping loop, a dead MQTT network thread, or a queue that
        cannot be read. A missing broker or modem is *not* unhealthy: restarting would not
        help, and the daemon keeps trying by itself."""
        problems = []
        now = time.monotonic()
        for name in ("sender", "alive", "sms", "house"):
            age = now - self.heartbeats.get(name, now)
            if age > STALL_S:
                problems.append(f"{name} loop stalled for {age:.0f} s")
        for th in self._threads:
            if not th.is_alive() and not self._stop.is_set():
                problems.append(f"thread {th.name} died")
        if not self.link.loop_alive():
            problems.append("MQTT network thread not running")
        try:
            self.queue.depth()
        except LonewatchError as exc:
            problems.append(f"queue unusable: {exc}")
        return problems

    # --- events ------------------------------------------------------------------------

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
            event = Event(
                device=self.device_id, seq=seq, kind=kind, ts=time.time(),
                position=self.modem_state.position, data=data or {},
            )  # fmt: skip
            try:
                payload = encode(event)
            except ValidationError as exc:
                if event.position is None or not exc.field.startswith("position"):
                    raise
                # A bad fix must never cost the alarm: send it without the position.
                log.error("position %r unusable (%s); raising %s without it", event.position, exc, kind)
                event = dataclasses.replace(event, position=None)
                payload = encode(event)
            extra = state(event) if callable(state) else dict(state or {})
            if kind in ALARM_KINDS:
                extra["open_alarm"] = event.id
            self.queue.put_with_state(event.id, kind, payload, priority=alarm_priority(kind), state=extra)
        self.observer("queued", {"id": event.id, "kind": kind, "queue_depth": self.queue.depth()})
        self._wake.set()
        if self.fallback is not None:
            self.fallback.wake()
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

    # --- control socket ----------------------------------------------------------------

    def handle_control(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request (:mod:`device.control`). DeviceError → ``ok: false``."""
        cmd = req.get("cmd")
        if cmd in ("shift_start", "shift_end"):
            ev = self.shift(cmd == "shift_start", source="cli")
            return {"ok": True, "id": ev.id, "kind": ev.kind}
        if cmd == "checkin_start":
            duration = req.get("duration_s")
            minimum = 5 if self.cfg.timing.test_mode else 60
            if duration is not None and (not isinstance(duration, int) or not minimum <= duration <= 86400):
                raise DeviceError(f"duration_s must be an integer {minimum}..86400")
            ev = self.start_checkin(duration)
            return {"ok": True, "id": ev.id, "kind": ev.kind, "duration_s": ev.data["duration_s"]}
        if cmd == "checkin_done":
            ev = self.finish_checkin()
            return {"ok": True, "id": ev.id, "kind": ev.kind}
        if cmd == "status":
            return {"ok": True, **self.status()}
        raise DeviceError(f"unknown command {cmd!r}")

    def status(self) -> dict[str, Any]:
        """What ``lonewatch device status`` shows: shift, check-in, open alarm, queue, link,
        modem and battery."""
        remaining = self.checkin.remaining_s()
        ms = self.modem_state
        return {
            "device": self.device_id, "firmware": FIRMWARE_VERSION, "on_shift": self.on_shift,
            "checkin": None if remaining is None else {"id": self.checkin.current.id if self.checkin.current else None,
                                                        "remaining_s": round(remaining)},
            "open_alarm": self.open_alarm, "queue_depth": self.queue.depth(),
            "connected": self.link.connected.is_set(), "modem_ready": ms.modem_ready,
            "signal_dbm": ms.signal_dbm, "registration": ms.registration,
            "battery_pct": self.battery.percent if self.battery else None,
            "problems": self.health(),
        }  # fmt: skip

    # --- acks from the relay -----------------------------------------------------------

    def _on_ack(self, ack: Ack) -> None:
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
            signal_dbm=ms.signal_dbm, registration=ms.registration, position=ms.position,
            uptime_s=round(time.monotonic() - self._started, 1), firmware=FIRMWARE_VERSION,
            queue_depth=self.queue.depth(),
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


def _zone(name: str):
    if not name:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)

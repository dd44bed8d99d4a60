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

This module holds :class:`DeviceDaemon` (construction, lifecycle, health, control socket and
status) and :class:`ModemState`; the events (raise, gestures, cancel, check-in, shift) are in
:mod:`device.daemon_actions`, the acks and the loops in :mod:`device.daemon_loops`, mixed in
(issue 9 split).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol.errors import LonewatchError
from protocol.messages import Position

from .battery import BatteryMonitor, BatterySource, open_battery
from .button import GestureButton, GestureTiming
from .checkin import STATE_KEY as CHECKIN_STATE
from .checkin import CheckinTimer
from .config_sections import FIRMWARE_VERSION
from .daemon_actions import DaemonActions, DeviceError
from .daemon_loops import DaemonLoops
from .daemon_place import PlaceParts
from device.config import DeviceConfig
from device.control import ControlServer, socket_path
from .fallback import SmsFallback
from .feedback import Feedback
from .link import MqttLink
from .mandown_watch import start_for as start_mandown
from .queue import EventQueue
from .shift import ShiftSchedule
from .voice import VoiceService

__all__ = ["FIRMWARE_VERSION", "STALL_S", "DeviceDaemon", "DeviceError", "ModemState", "Observer"]

log = logging.getLogger(__name__)

#: Observer signature: ``(step, fields)`` — the demo's timeline and the tests watch this.
Observer = Callable[[str, dict[str, Any]], None]
#: A thread whose heartbeat is older than this is taken as stalled by :meth:`health`, seconds.
STALL_S = 30.0


class ModemState:
    """Last readings from the modem, refreshed by the daemon's modem thread.

    ``signal_dbm`` (dBm or None), ``registration`` (see protocol REGISTRATION_STATES),
    ``position`` (last GNSS fix or None)."""

    def __init__(self) -> None:
        self.signal_dbm: int | None = None
        self.registration = "unknown"
        self.position: Position | None = None
        self.modem_ready = False


class DeviceDaemon(DaemonActions, DaemonLoops):
    """One lone worker's device.

    Args:
        cfg: validated device config.
        pin_factory: gpiozero pin factory; None = gpiozero's default (real pins).
        modem: an opened-or-openable :class:`modem.at.Modem`, or None (no modem).
        observer: optional ``(step, fields)`` hook.
        battery: a :class:`device.battery.BatterySource`; None = from ``[battery] source``.
        accel: the man-down accelerometer (:mod:`device.accel`), used when ``[mandown]
            enabled``; None = no man-down (logged as an error if it is enabled).
        control: serve the local control socket (``lonewatch device shift …``).

    Raises:
        device.queue.QueueError: the state directory or queue cannot be used.
    """

    def __init__(self, cfg: DeviceConfig, *, pin_factory=None, modem=None, observer: Observer | None = None,
                 battery: BatterySource | None = None, control: bool = True, beacons=None, accel=None) -> None:
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
        #: Listen-in and call-back (issue 11); None when ``[voice]`` is off or there is no modem.
        self.voice: VoiceService | None = None
        #: Beacons, shift-start self-test, unprotected warning (issue 12; ``beacons``: a scanner).
        self.place = PlaceParts(self, beacons)
        self._accel = accel
        self.mandown = None  # device.mandown_watch.MandownWatch while man-down runs

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
            pause_presses=self.cfg.mandown.pause_presses if self._accel is not None and self.cfg.mandown.enabled else 0,
            pause_window_s=self.cfg.mandown.pause_window_s,
        )  # fmt: skip
        self.button = GestureButton(
            g.button_pin, timing, self._on_gesture, on_press=lambda: self._on_press(g.button_pin),
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
        self.mandown = start_mandown(self, self._accel)  # None unless [mandown] enabled + a sensor
        self.checkin.restore(self.queue.get_state(CHECKIN_STATE))
        if self._control_wanted:
            self._start_control()
        if self.supervisor is not None:
            self._spawn(self._modem_loop, "modem")
        self.voice = VoiceService.for_daemon(self)
        if self.voice is not None:
            self._spawn(lambda: self.voice.run(self._stop, lambda: self._beat("voice")), "voice")
        self.link.start()
        self._spawn(self._sender_loop, "sender")
        self._spawn(self._alive_loop, "alive")
        self._spawn(lambda: self.fallback.run(self._stop, lambda: self._beat("sms")), "sms")
        self._spawn(self._house_loop, "house")
        self.place.start(self._spawn)
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
        self.place.stop()
        for th in self._threads:
            th.join(5)
        self.link.stop()
        if self.supervisor is not None:
            self.supervisor.close()
        elif self.modem is not None:
            self.modem.close()
        if self.mandown is not None:
            self.mandown.stop()
        if self._accel is not None:
            self._accel.close()
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

    def _on_press(self, pin: int) -> None:
        self.observer("button_down", {"pin": pin})
        if self.mandown is not None:
            self.mandown.press()

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
        if self.mandown is not None and not self.mandown.alive() and not self._stop.is_set():
            problems.append("man-down watcher died")
        try:
            self.queue.depth()
        except LonewatchError as exc:
            problems.append(f"queue unusable: {exc}")
        return problems

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
            "mandown": self.mandown.state if self.mandown else None,
            "problems": self.health(), **self.place.status(),
        }  # fmt: skip


def _zone(name: str):
    if not name:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)

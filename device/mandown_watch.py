"""Man-down on the device (issue 10): the accelerometer's interrupt lines → the detector
(:mod:`device.mandown`) → pre-alarm feedback → ``man_down`` through the daemon's durable
queue (so the same SMS fallback and feedback as a panic alarm apply).

Power: while the worker is upright the chip guards alone (watch mode, :mod:`device.accel`)
and this thread only wakes once a second for pauses and every ``idle_check_s`` for one
sample; on a tilt or free-fall interrupt it switches the chip to stream mode and reads the
FIFO each time the data line rises (2 reads a second at 50 Hz), until the worker has been
upright again for :data:`IDLE_AFTER_S`. With ``no_motion_s`` set it streams all the time
(stillness while upright cannot be seen by the chip's interrupts).

Pauses (the detector then neither pre-alarms nor alarms, a running pre-alarm is cancelled):

* **off shift** (``only_on_shift``, default): the worker is not at work;
* **on the charger**, if a charger's "charging" signal is wired to ``charge_pin``;
* **the worker's pause gesture**: ``pause_presses`` (4) short presses within
  ``pause_window_s`` (3 s) — distinct from the alarm (a 2 s hold), cancel (3 presses) and
  check-in (2 presses). The same gesture again resumes; the pause ends by itself after
  ``pause_max_s`` (15 min) with the ``mandown_resumed`` vibration. A restart of the daemon
  also ends it (detection on is the safe state).

During the pre-alarm the ``mandown_prealarm`` pattern repeats every
:data:`PREALARM_REPEAT_S`; any button press cancels it (``mandown_cancelled``), as does
standing up and moving. A raised ``man_down`` is an open alarm like a panic: the cancel
gesture sends ``cancel`` (Contact ID 406).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .accel import AccelError, Accelerometer, InterruptLines, WakeSettings
from .mandown import MandownDetector, MandownProfile, Transition, tilt_deg_of
from .mandown_config import MandownConfig

log = logging.getLogger(__name__)

__all__ = ["IDLE_AFTER_S", "PREALARM_REPEAT_S", "MandownWatch", "open_accelerometer", "start_for"]

#: Back to watch mode after the wearer has been upright (detector idle) this long, seconds.
IDLE_AFTER_S = 5.0
#: The pre-alarm vibration is played again this often, seconds.
PREALARM_REPEAT_S = 2.0
#: Longest wait of the loop (pauses, shift and the idle check are looked at this often), s.
LOOP_S = 1.0


def open_accelerometer(cfg: MandownConfig, *, pin_factory=None) -> Accelerometer:
    """The accelerometer for ``[mandown] sensor``: a :class:`device.accel_lis3dh.Lis3dh`
    on I2C, or for ``"sim"`` a :class:`device.accel_sim.SimAccelerometer` replaying
    ``sim_trace`` on ``pin_factory`` (which must be a MockFactory).

    Raises:
        AccelError: the chip cannot be opened. device.accel_trace.TraceError: bad trace.
    """
    if cfg.sensor == "sim":
        from .accel_sim import SimAccelerometer
        from .accel_trace import load_trace

        if pin_factory is None:
            raise AccelError('sensor = "sim" drives gpiozero MockFactory pins: tests and the demo only')
        return SimAccelerometer(load_trace(cfg.sim_trace), pin_factory=pin_factory, data_pin=cfg.data_pin,
                                wake_pin=cfg.wake_pin, speed=cfg.sim_speed, loop=cfg.sim_loop)
    from .accel_lis3dh import Lis3dh

    return Lis3dh(cfg.i2c_bus, cfg.i2c_address, rate_hz=cfg.rate_hz)


class MandownWatch:
    """Runs man-down for one device (module docstring).

    Args:
        cfg: ``[mandown]``.
        accel: the accelerometer (closed by its owner, not here).
        on_man_down: ``(data) -> None`` raises the ``man_down`` event; ``data`` has
            ``trigger`` (``fall``/``tilt``/``no_motion``) and ``still_s``.
        feedback: ``(pattern) -> None`` plays a :mod:`device.feedback` pattern.
        on_shift: ``() -> bool`` whether the worker is on shift.
        observer: ``(step, fields)``: ``mandown`` (every detector transition, fields of
            :meth:`device.mandown.Transition.as_dict`), ``mandown_mode``, ``mandown_pause``,
            ``mandown_sensor_error``.
        pin_factory: gpiozero pin factory for the interrupt lines and the charger input.
        profile: thresholds (default: ``cfg.thresholds()``).
    """

    def __init__(self, cfg: MandownConfig, accel: Accelerometer, *, on_man_down: Callable[[dict[str, Any]], None],
                 feedback: Callable[[str], None], on_shift: Callable[[], bool],
                 observer: Callable[[str, dict[str, Any]], None] | None = None, pin_factory=None,
                 profile: MandownProfile | None = None) -> None:
        self.cfg = cfg
        self.accel = accel
        self.profile = profile or cfg.thresholds()
        self.detector = MandownDetector(self.profile, cfg.upright_axis)
        self.on_man_down, self.feedback, self.on_shift = on_man_down, feedback, on_shift
        self.observer = observer or (lambda step, fields: None)
        self._pin_factory = pin_factory
        self._event = threading.Event()
        self._stop = threading.Event()
        self._presses: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._pause_until: float | None = None
        self._thread: threading.Thread | None = None
        self._lines: InterruptLines | None = None
        self._charger = None
        self.mode = "off"
        self._next_buzz = 0.0
        self.heartbeat = time.monotonic()
        self.sensor_errors = 0
        self.man_downs = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Claim the interrupt lines (and charger input), program the chip, start the thread.

        Raises:
            AccelError: the chip cannot be programmed (the caller logs it: no man-down).
        """
        c = self.cfg
        self._lines = InterruptLines(c.data_pin, c.wake_pin, self._event.set, pin_factory=self._pin_factory)
        if c.charge_pin:
            from gpiozero import DigitalInputDevice

            self._charger = DigitalInputDevice(c.charge_pin, pull_up=not c.charge_active_high,
                                               pin_factory=self._pin_factory)
            self._charger.when_activated = lambda *_: self._event.set()
            self._charger.when_deactivated = lambda *_: self._event.set()
        try:
            self.accel.configure(WakeSettings(upright_axis=c.upright_axis, tilt_deg=self.profile.tilt_deg,
                                              freefall_g=self.profile.freefall_g, freefall_s=self.profile.freefall_s))
        except Exception:
            self._release()
            raise
        self.mode = "watch"
        self._thread = threading.Thread(target=self._run, name="device-mandown", daemon=True)
        self._thread.start()
        log.info("man-down on: profile %s, upright axis %s, %s", c.profile, c.upright_axis, self.profile)

    def stop(self) -> None:
        """Stop the thread and release the pins (idempotent)."""
        self._stop.set()
        self._event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(3)
        self._release()

    def _release(self) -> None:
        for dev in (self._lines, self._charger):
            if dev is not None:
                dev.close()
        self._lines = self._charger = None

    def alive(self) -> bool:
        """Whether the watcher thread runs (for the daemon's watchdog health)."""
        return self._thread is not None and self._thread.is_alive()

    # -- from the button ------------------------------------------------------------------
    def press(self) -> None:
        """A (debounced) button press: cancels a running pre-alarm."""
        with self._lock:
            self._presses.append(time.monotonic())
        self._event.set()

    def toggle_pause(self) -> bool:
        """The worker's pause gesture: start a pause of ``pause_max_s`` or end the running
        one. Returns whether man-down is now paused by the worker."""
        with self._lock:
            if self._pause_until is not None:
                self._pause_until = None
                paused = False
            else:
                self._pause_until = time.monotonic() + self.cfg.pause_max_s
                paused = True
        self.observer("mandown_pause", {"paused": paused, "max_s": self.cfg.pause_max_s, "by": "worker"})
        self.feedback("mandown_paused" if paused else "mandown_resumed")
        self._event.set()
        return paused

    @property
    def state(self) -> str:
        return self.detector.state

    # -- the loop -------------------------------------------------------------------------
    def _pause_reason(self, mono: float) -> str | None:
        with self._lock:
            if self._pause_until is not None and mono >= self._pause_until:
                self._pause_until = None
                ended = True
            else:
                ended = False
            worker = self._pause_until is not None
        if ended:
            log.info("man-down pause ended by itself after %.0f s", self.cfg.pause_max_s)
            self.observer("mandown_pause", {"paused": False, "by": "timeout"})
            self.feedback("mandown_resumed")
        if worker:
            return "worker"
        if self._charger is not None and self._charger.is_active:
            return "charger"
        if self.cfg.only_on_shift and not self.on_shift():
            return "off_shift"
        return None

    def _set_mode(self, mode: str, why: str) -> None:
        if mode != self.mode:
            self.accel.set_mode(mode)
            self.mode = mode
            self.observer("mandown_mode", {"mode": mode, "why": why})

    def _run(self) -> None:
        det = self.detector
        upright_since: float | None = None
        next_check = 0.0
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            self._event.wait(LOOP_S)
            self._event.clear()
            if self._stop.is_set():
                break
            mono = time.monotonic()
            trans: list[Transition] = []
            try:
                now = self.accel.clock()
                reason = self._pause_reason(mono)
                if reason and not det.paused:
                    trans += det.pause(now, reason)
                elif not reason and det.paused:
                    trans += det.resume(now)
                with self._lock:
                    presses, self._presses = len(self._presses), collections.deque()
                for _ in range(presses):
                    trans += det.press(now)
                if det.paused:
                    self._set_mode("off", reason or "paused")
                    upright_since = None
                else:
                    if self.mode != "stream":
                        why = self._wake_reason(mono >= next_check)
                        if mono >= next_check:
                            next_check = mono + self.cfg.idle_check_s
                        if why:
                            self._set_mode("stream", why)
                    if self.mode == "stream":
                        for s in self.accel.read_fifo():
                            trans += det.feed(s.t, s.ax, s.ay, s.az)
                        trans += det.tick(self.accel.clock())
                        if det.active:
                            upright_since = None
                        elif upright_since is None:
                            upright_since = mono
                        elif mono - upright_since >= IDLE_AFTER_S:
                            self._set_mode("watch", "upright")
                            upright_since = None
                self.sensor_errors = 0
            except AccelError as exc:
                self.sensor_errors += 1
                log.error("accelerometer error (%d in a row): %s", self.sensor_errors, exc)
                self.observer("mandown_sensor_error", {"error": str(exc)[:200], "count": self.sensor_errors})
                trans += det.tick(self.accel.clock())  # a running pre-alarm still ends on time
                self._stop.wait(min(30.0, 0.5 * 2 ** min(self.sensor_errors, 6)))
            self._handle(trans)
            if det.state == "prealarm" and mono >= self._next_buzz:
                self._next_buzz = mono + PREALARM_REPEAT_S
                self.feedback("mandown_prealarm")
        self._set_mode_quietly("off")

    def _set_mode_quietly(self, mode: str) -> None:
        try:
            self.accel.set_mode(mode)
        except Exception:  # noqa: BLE001 - stopping: the chip may be gone
            pass

    def _wake_reason(self, check_due: bool) -> str | None:
        """Why watch mode must switch to stream mode, or None."""
        if self.detector.active:
            return "detector"
        assert self._lines is not None
        if self._lines.wake_active or check_due:
            src = self.accel.wake_source()
            if src:
                return "+".join(sorted(src))
        if check_due:
            s = self.accel.read_now()
            up = self.detector.up
            if tilt_deg_of(s.ax, s.ay, s.az, up) > self.profile.tilt_deg:
                return "check"
        return None

    def _handle(self, trans: list[Transition]) -> None:
        for tr in trans:
            self.observer("mandown", tr.as_dict())
            log.info("man-down: %s", tr.as_dict())
            if tr.state == "prealarm":
                self._next_buzz = 0.0  # the loop plays it now, then every PREALARM_REPEAT_S
            elif tr.state == "cancelled" and tr.detail.get("reason") != "paused":
                self.feedback("mandown_cancelled")
            elif tr.state == "man_down":
                self.man_downs += 1
                started = self.detector.stillness_started
                data = {"trigger": tr.detail.get("trigger", "unknown"),
                        "still_s": round(tr.t_s - started, 1) if started is not None else None}
                try:
                    self.on_man_down({k: v for k, v in data.items() if v is not None})
                except Exception:  # noqa: BLE001 - the daemon logs and plays no_connection itself
                    log.exception("could not raise man_down")


def start_for(daemon: Any, accel: Accelerometer | None) -> MandownWatch | None:
    """Start man-down for a :class:`device.daemon.DeviceDaemon` when ``[mandown] enabled``
    and a sensor was handed in: ``man_down`` goes through ``daemon.raise_event`` (durable
    queue, SMS fallback, feedback as for a panic), pre-alarm patterns through its feedback,
    shifts from ``daemon.on_shift``. Returns the running watcher or None. A sensor that
    fails at start is logged, never fatal: the panic button must work without it."""
    cfg = daemon.cfg.mandown
    if not cfg.enabled:
        return None
    if accel is None:
        log.error("[mandown] enabled, but no accelerometer was handed in: falls are NOT watched")
        return None

    def raise_man_down(data: dict[str, Any]) -> None:
        try:
            daemon.observer("alarm_recognised", {"kind": "man_down", **data})
            daemon.raise_event("man_down", data)
        except Exception:
            # Nobody pressed anything: an error here must not vanish in the watcher thread.
            log.exception("could not raise man_down")
            daemon.feedback and daemon.feedback.play("no_connection")

    watch = MandownWatch(cfg, accel, on_man_down=raise_man_down,
                         feedback=lambda p: daemon.feedback and daemon.feedback.play(p),
                         on_shift=lambda: daemon.on_shift, observer=daemon.observer, pin_factory=daemon._pin_factory)
    try:
        watch.start()
    except Exception as exc:  # noqa: BLE001 - AccelError, or pins already taken
        log.error("accelerometer unusable, falls are NOT watched: %s", exc)
        daemon.observer("mandown_sensor_error", {"error": str(exc)[:200], "count": 1})
        return None
    return watch

"""The doctor's hardware checks: button, modem port, SIM, registration, signal, GNSS (SPEC §5),
and :func:`simulated_hardware` for ``doctor --simulate``.

Split out of :mod:`device.doctor` (issue 9): :class:`HardwareChecks` is mixed into
:class:`device.doctor.Doctor` and uses its ``cfg``, ``pin_factory``, ``finger``, ``prompt``,
``button_timeout_s`` and ``_add``; :mod:`device.doctor` re-exports :func:`simulated_hardware`
and the thresholds. The button is read through gpiozero (a MockFactory pin pressed by a
simulated finger with ``--simulate``), the modem through :class:`modem.at.Modem` (the modem
simulator on a pty with ``--simulate``); the serial-console fix follows SPEC §7.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from device.config import DeviceConfig
from device.doctor_voice import check_voice

from .doctor_result import Check

__all__ = ["SERIAL_CONSOLE_FIX", "SIGNAL_FAIL_DBM", "SIGNAL_WARN_DBM", "HardwareChecks", "simulated_hardware"]

#: Signal thresholds in dBm: below FAIL is too weak for reliable alarms, below WARN marginal.
SIGNAL_FAIL_DBM, SIGNAL_WARN_DBM = -105, -95
#: How to free the modem's UART from the Pi's serial console (SPEC §7).
SERIAL_CONSOLE_FIX = ("disable the serial console on this UART: `sudo raspi-config` → Interface Options → Serial Port → "
                      "login shell over serial: No, serial port hardware: Yes (or `sudo raspi-config nonint "
                      "do_serial_cons 1`); or remove `console=serial0,115200` from /boot/firmware/cmdline.txt "
                      "(/boot/cmdline.txt on older releases) and `sudo systemctl disable --now serial-getty@ttyS0`; "
                      "then reboot")



class HardwareChecks:
    """The button and modem checks of :class:`device.doctor.Doctor` (a mixin, no state of its own)."""

    def _button(self) -> None:
        try:
            from gpiozero import Button

            button = Button(self.cfg.gpio.button_pin, pull_up=True, bounce_time=None, pin_factory=self.pin_factory)
        except Exception as exc:  # gpiozero raises many kinds (BadPinFactory, GPIOPinInUse …)
            busy = "busy" in str(exc).lower() or "in use" in str(exc).lower()
            self._add(Check("button", "fail", f"cannot read GPIO {self.cfg.gpio.button_pin}: {exc}",
                            "stop the device service first: sudo systemctl stop lonewatch-device" if busy else
                            "run doctor on the Pi (python3-lgpio installed), or try it here with --simulate"))
            return
        pressed, released = threading.Event(), threading.Event()
        button.when_pressed = lambda: pressed.set()
        button.when_released = lambda: pressed.is_set() and released.set()
        try:
            self.prompt(f"Press the panic button now (GPIO {self.cfg.gpio.button_pin}), within "
                        f"{self.button_timeout_s:.0f} s …")
            if self.finger is not None:
                threading.Thread(target=self.finger, name="doctor-finger", daemon=True).start()
            t0 = time.monotonic()
            if not pressed.wait(self.button_timeout_s):
                self._add(Check("button", "fail", f"no press on GPIO {self.cfg.gpio.button_pin} within "
                                f"{self.button_timeout_s:.0f} s",
                                "check the wiring (button between GPIO and GND, hardware/README.md) and [gpio] button_pin"))
                return
            after = time.monotonic() - t0
            released.wait(max(1.0, self.button_timeout_s - after))
            self._add(Check("button", "pass", f"press seen on GPIO {self.cfg.gpio.button_pin} after {after:.1f} s",
                            data={"pin": self.cfg.gpio.button_pin, "after_s": round(after, 2)}))
        finally:
            button.close()

    def _modem(self) -> None:
        from modem.at import CmeError, Modem, ModemError, ModemGone, ModemTimeout, SerialConsoleError, SimLocked

        mc = self.cfg.modem
        modem = Modem(mc.port, mc.baudrate, flavour=mc.flavour)
        try:
            try:
                modem.open()
                state = modem.init(pin=mc.sim_pin or None)
            except ModemGone as exc:
                self._add(Check("modem.port", "fail", f"cannot open {mc.port}: {exc}",
                                "is the modem powered and plugged in? `ls -l /dev/lonewatch-modem` — install "
                                "hardware/99-lonewatch-modem.rules, or set [modem] port"))
                return
            except SerialConsoleError as exc:
                self._add(Check("modem.port", "fail", f"a Linux login console answers on {mc.port}, not the modem "
                                f"(saw {exc.evidence!r})", SERIAL_CONSOLE_FIX))
                return
            except ModemTimeout:
                self._add(Check("modem.port", "fail", f"no answer to AT on {mc.port}",
                                "wrong port or baud rate ([modem] baudrate), or a serial console still runs on the "
                                "UART (remove console=serial0,115200 from cmdline.txt)"))
                return
            except SimLocked as exc:
                self._add(Check("modem.port", "pass", f"modem answers on {mc.port}"))
                fix = ("set [modem] sim_pin in device.toml" if exc.state == "SIM PIN" else
                       "unlock the SIM with its PUK in a phone, then disable the PIN or set [modem] sim_pin")
                self._add(Check("modem.sim", "fail", f"SIM not ready: {exc.state}", fix))
                return
            except CmeError as exc:
                self._add(Check("modem.port", "pass", f"modem answers on {mc.port}"))
                fix = {10: "insert the SIM card (power off first)", 16: "[modem] sim_pin is wrong — careful: "
                       "three wrong PINs lock the SIM"}.get(exc.code or 0, "see the error text; try the SIM in a phone")
                self._add(Check("modem.sim", "fail", f"SIM problem: {exc}", fix))
                return
            self._add(Check("modem.port", "pass", f"modem answers on {mc.port} ({modem.flavour})"))
            self._add(Check("modem.sim", "pass", f"SIM {state.lower()}"))
            self._modem_network(modem)
            check_voice(self.cfg, modem, self._add)
        except ModemError as exc:
            self._add(Check("modem.port", "fail", f"modem error: {exc}", "power-cycle the modem and run doctor again"))
        finally:
            modem.close()

    def _modem_network(self, modem: Any) -> None:
        from modem.at import ModemError

        try:
            reg = modem.registration()
            if reg.registered:
                self._add(Check("modem.registration", "pass", f"registered ({reg.state}, {reg.technology})",
                                data={"registration": reg.state, "technology": reg.technology}))
            else:
                fix = ("the network refuses this SIM: ask the operator (activated? roaming allowed?)"
                       if reg.state == "denied" else
                       "wait a minute; check the antenna and coverage at this spot, and that the SIM is activated")
                self._add(Check("modem.registration", "fail", f"not registered ({reg.state})", fix,
                                data={"registration": reg.state}))
        except ModemError as exc:
            self._add(Check("modem.registration", "fail", f"registration query failed: {exc}", "power-cycle the modem"))
        try:
            dbm = modem.signal().rssi_dbm
        except ModemError as exc:
            self._add(Check("modem.signal", "fail", f"signal query failed: {exc}", "power-cycle the modem"))
        else:
            if dbm is None:
                self._add(Check("modem.signal", "fail", "no signal", "connect the antenna; move to a window to test"))
            elif dbm < SIGNAL_FAIL_DBM:
                self._add(Check("modem.signal", "fail", f"{dbm} dBm: too weak for reliable alarms",
                              "better antenna placement, or a repeater at this site", data={"signal_dbm": dbm}))
            elif dbm < SIGNAL_WARN_DBM:
                self._add(Check("modem.signal", "warn", f"{dbm} dBm: marginal",
                                "alarms may be delayed in the worst corners: walk the site with doctor",
                                data={"signal_dbm": dbm}))
            else:
                self._add(Check("modem.signal", "pass", f"{dbm} dBm", data={"signal_dbm": dbm}))
        if not self.cfg.modem.gnss:
            self._add(Check("modem.gnss", "skip", "GNSS off in device.toml ([modem] gnss = false)"))
            return
        try:
            modem.start_gnss()
            fix = modem.gnss()
        except ModemError as exc:
            self._add(Check("modem.gnss", "fail", f"GNSS query failed: {exc}", "does this modem have GNSS? else set gnss = false"))
            return
        if fix is None:
            self._add(Check("modem.gnss", "warn", "no GNSS fix yet",
                            "connect the GNSS antenna; a first fix outdoors takes up to 15 minutes, indoors there may be none "
                            "(alarms then go without position)"))
        else:
            acc = f" ±{fix.accuracy_m:.0f} m" if fix.accuracy_m is not None else ""
            self._add(Check("modem.gnss", "pass", f"fix {fix.lat:.5f}, {fix.lon:.5f}{acc}",
                            data={"lat": fix.lat, "lon": fix.lon, "accuracy_m": fix.accuracy_m}))


@contextlib.contextmanager
def simulated_hardware(cfg: DeviceConfig, *, press_after_s: float = 0.5, press_s: float = 0.3,
                       fix: tuple[float, float, float] | None = (55.676098, 12.568337, 1.0)
                       ) -> Iterator[tuple[DeviceConfig, Any, Callable[[], None]]]:
    """For ``doctor --simulate`` (a laptop, a demo, the tests): the modem simulator on a
    pseudo-terminal (``cfg.modem.port`` replaced by it; GNSS ``fix`` as lat, lon, HDOP) and a
    gpiozero MockFactory whose button pin a simulated finger presses ``press_after_s`` after
    the prompt, for ``press_s`` seconds. Yields ``(cfg, pin_factory, finger)``."""
    from gpiozero.pins.mock import MockFactory

    from modem.simulator import ModemSimulator

    factory = MockFactory()
    pin = factory.pin(cfg.gpio.button_pin)

    def finger() -> None:
        time.sleep(press_after_s)
        pin.drive_low()
        time.sleep(press_s)
        pin.drive_high()

    flavour = cfg.modem.flavour if cfg.modem.flavour != "auto" else "sim7600"
    with ModemSimulator(flavour=flavour) as sim:
        sim.gnss_fix = fix
        if cfg.modem.sim_pin:
            sim.pin = cfg.modem.sim_pin
        yield replace(cfg, modem=replace(cfg.modem, port=sim.port, enabled=True)), factory, finger

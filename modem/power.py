"""Power-cycling the modem through a GPIO pin (SPEC §2: "the port vanishing → reopen, then
power-cycle the modem via a GPIO if wired").

Two wirings are common on Pi modem HATs:

* ``"switch"``: the pin drives a load switch / MOSFET in the modem's supply. Cycling cuts the
  supply for ``off_s`` seconds. This also recovers a modem whose firmware hangs so hard that it
  ignores its power key, so it is the recommended wiring.
* ``"pwrkey"``: the pin drives the modem's PWRKEY line (through the HAT's transistor, so pin
  high = key pressed). SIM7600: a ≥ 2.5 s press switches it off, a ≥ 0.5 s press on again
  (SIM7600 hardware design manual, "power on/off sequence"). Cycling = off press, ``off_s``
  pause, on press.

gpiozero is imported only here (STYLE: hardware libraries only inside the real backend); tests
pass a ``MockFactory`` and watch the pin's state history.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

log = logging.getLogger(__name__)

PowerMode = Literal["switch", "pwrkey"]
POWER_MODES = ("switch", "pwrkey")

#: PWRKEY press lengths, seconds (SIM7600 hardware design: off ≥ 2.5 s, on ≥ 0.5 s).
PWRKEY_OFF_PRESS_S = 3.0
PWRKEY_ON_PRESS_S = 1.0


class ModemPower:
    """The GPIO that powers (or wakes) the modem.

    Args:
        pin: BCM pin number.
        mode: ``"switch"`` or ``"pwrkey"`` (see module doc).
        active_high: pin level that means "supply on" / "key pressed".
        off_s: how long the supply stays off (switch) or the pause between presses (pwrkey), s.
        pin_factory: gpiozero pin factory (MockFactory in tests); None = gpiozero's default.
        presses_s: pwrkey mode: (off press, on press) lengths in seconds.

    Raises:
        ValueError: unknown mode. gpiozero errors if the pin cannot be claimed.
    """

    def __init__(self, pin: int, *, mode: str = "switch", active_high: bool = True,
                 off_s: float = 3.0, pin_factory=None,
                 presses_s: tuple[float, float] = (PWRKEY_OFF_PRESS_S, PWRKEY_ON_PRESS_S)) -> None:
        from gpiozero import DigitalOutputDevice

        if mode not in POWER_MODES:
            raise ValueError(f"unknown modem power mode {mode!r}; choose switch or pwrkey")
        self.mode = mode
        self.off_s = off_s
        self.presses_s = presses_s
        self.cycles = 0
        self._stop = threading.Event()
        # A supply switch starts "on" (the modem must be powered); a power key starts released.
        self.output = DigitalOutputDevice(pin, active_high=active_high,
                                          initial_value=(mode == "switch"),
                                          pin_factory=pin_factory)

    def cycle(self) -> None:
        """Power the modem off and on again; blocks for about ``off_s`` seconds (plus the
        key presses in pwrkey mode). The caller reopens the port after the modem booted."""
        self.cycles += 1
        log.warning("power-cycling the modem (%s, cycle %d)", self.mode, self.cycles)
        if self.mode == "switch":
            self.output.off()
            self._stop.wait(self.off_s)
            self.output.on()
            return
        for press_s in self.presses_s:
            self.output.on()
            self._stop.wait(press_s)
            self.output.off()
            self._stop.wait(self.off_s)

    def close(self) -> None:
        """Release the pin (a supply switch pin is left to its pull, normally "on")."""
        self._stop.set()
        self.output.close()

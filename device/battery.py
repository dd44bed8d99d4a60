"""Battery state of charge: a source interface, a fake for tests and the demo, one real I2C fuel
gauge (MAX17048, as on common Pi Zero UPS HATs), and the low-battery watch with hysteresis
(SPEC §2: ``low_battery`` / ``battery_restore`` events, battery % in every alive).

MAX17048 (Maxim/Analog Devices data sheet, "Register Summary"): I2C address 0x36; registers are
16-bit big-endian — ``VCELL`` 0x02 (78.125 µV per LSB), ``SOC`` 0x04 (high byte = whole %,
low byte = 1/256 %), ``VERSION`` 0x08, ``CRATE`` 0x16 (signed, 0.208 %/h per LSB). The SOC may
read a little above 100 % on a full cell and is clamped.

smbus2 is imported only inside :class:`Max17048` (STYLE: hardware libraries only in the real
backend), so this module imports anywhere.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.errors import LonewatchError

log = logging.getLogger(__name__)

__all__ = ["BatteryError", "BatteryMonitor", "BatteryReading", "BatterySource", "FakeBattery",
           "Max17048", "open_battery"]


class BatteryError(LonewatchError, OSError):
    """The fuel gauge cannot be read (I2C error, no such device, implausible data)."""


@dataclass(frozen=True)
class BatteryReading:
    """``percent`` state of charge 0–100 (float), ``voltage_v`` cell volts or None,
    ``charging`` True/False or None when the gauge cannot tell."""

    percent: float
    voltage_v: float | None = None
    charging: bool | None = None


class BatterySource(Protocol):
    """What the daemon needs from a battery: :meth:`read` (raises BatteryError) and close."""

    def read(self) -> BatteryReading: ...

    def close(self) -> None: ...


class FakeBattery:
    """A battery whose charge tests and the demo set: ``percent`` (0–100), ``fail`` (read
    raises BatteryError while True). Thread-safe."""

    def __init__(self, percent: float = 100.0, voltage_v: float | None = 4.1) -> None:
        self._lock = threading.Lock()
        self.percent = percent
        self.voltage_v = voltage_v
        self.fail = False

    def read(self) -> BatteryReading:
        with self._lock:
            if self.fail:
                raise BatteryError("fake battery: read failed")
            return BatteryReading(max(0.0, min(100.0, self.percent)), self.voltage_v, None)

    def close(self) -> None:
        pass


class Max17048:
    """MAX17048 / MAX17049 fuel gauge on I2C.

    Args:
        bus: I2C bus number (1 on a Pi: GPIO 2/3).
        address: 7-bit address, 0x36.
        bus_factory: ``(bus) -> SMBus-like`` with ``read_i2c_block_data(addr, reg, n)``;
            default ``smbus2.SMBus`` (imported here only).

    Raises:
        BatteryError: the bus cannot be opened or the chip does not answer like a MAX17048.
    """

    REG_VCELL, REG_SOC, REG_VERSION, REG_CRATE = 0x02, 0x04, 0x08, 0x16

    def __init__(self, bus: int = 1, address: int = 0x36, *, bus_factory: Any = None) -> None:
        if bus_factory is None:
            try:
                from smbus2 import SMBus
            except ImportError as exc:
                raise BatteryError("smbus2 is not installed: pip install 'lonewatch[device]'") from exc
            bus_factory = SMBus
        self.address = address
        try:
            self._bus = bus_factory(bus)
        except OSError as exc:
            raise BatteryError(f"cannot open I2C bus {bus}: {exc}") from exc
        version = self._word(self.REG_VERSION)
        if version & 0xFFF0 != 0x0010:
            raise BatteryError(f"no MAX17048 at 0x{address:02x} (version register 0x{version:04x})")

    def _word(self, register: int) -> int:
        try:
            hi, lo = self._bus.read_i2c_block_data(self.address, register, 2)
        except (OSError, ValueError) as exc:
            raise BatteryError(f"I2C read of register 0x{register:02x} failed: {exc}") from exc
        return (hi << 8) | lo

    def read(self) -> BatteryReading:
        """State of charge, cell voltage and (from ``CRATE``) whether it is charging."""
        soc = self._word(self.REG_SOC) / 256.0
        volts = self._word(self.REG_VCELL) * 78.125e-6
        crate = self._word(self.REG_CRATE)
        if crate >= 0x8000:
            crate -= 0x10000
        if not 0.0 <= volts <= 5.5:
            raise BatteryError(f"implausible cell voltage {volts:.2f} V")
        rate = crate * 0.208  # % per hour
        return BatteryReading(min(100.0, soc), round(volts, 3),
                              None if abs(rate) < 0.5 else rate > 0)

    def close(self) -> None:
        try:
            self._bus.close()
        except OSError:
            pass


def open_battery(source: str, *, i2c_bus: int = 1, i2c_address: int = 0x36) -> BatterySource | None:
    """The battery for config ``[battery] source``: None for ``"none"``, a FakeBattery for
    ``"fake"``, a Max17048 for ``"max17048"``.

    Raises:
        ValueError: unknown source. BatteryError: the gauge cannot be opened.
    """
    if source == "none":
        return None
    if source == "fake":
        return FakeBattery()
    if source == "max17048":
        return Max17048(i2c_bus, i2c_address)
    raise ValueError(f"unknown battery source {source!r}")


class BatteryMonitor:
    """Turns readings into ``low_battery`` / ``battery_restore`` with hysteresis.

    ``low_battery`` when the charge is at or below ``low_pct`` (and was not low), then
    ``battery_restore`` only once it is at or above ``restore_pct`` (> ``low_pct``), so a cell
    hovering around one threshold does not flap. The low flag is kept in the device state by the
    caller, so a restart does not repeat the event.

    Args:
        source: the battery.
        low_pct, restore_pct: thresholds in %.
        low: whether the battery was low before (restored from the device state).
    """

    def __init__(self, source: BatterySource, low_pct: int, restore_pct: int, *,
                 low: bool = False) -> None:
        if restore_pct <= low_pct:
            raise ValueError("restore_pct must be above low_pct")
        self.source = source
        self.low_pct, self.restore_pct = low_pct, restore_pct
        self.low = low
        #: Last good reading, or None (unreadable so far).
        self.last: BatteryReading | None = None
        self.errors = 0

    @property
    def percent(self) -> int | None:
        """Last charge in whole % (for the alive message), None if never read."""
        return None if self.last is None else int(round(self.last.percent))

    def check(self) -> str | None:
        """Read once; returns ``"low_battery"``, ``"battery_restore"`` or None. A failed read
        is logged and counted, and leaves the state as it was."""
        try:
            reading = self.source.read()
        except BatteryError as exc:
            self.errors += 1
            log.warning("battery read failed (%d so far): %s", self.errors, exc)
            return None
        self.last = reading
        if not self.low and reading.percent <= self.low_pct:
            self.low = True
            return "low_battery"
        if self.low and reading.percent >= self.restore_pct:
            self.low = False
            return "battery_restore"
        return None

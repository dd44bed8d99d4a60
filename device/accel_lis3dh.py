"""ST LIS3DH 3-axis accelerometer on I2C (issue 10), through smbus2 like the fuel gauge.

Register map and values from the ST LIS3DH data sheet (DocID17530, section 8 "Register
mapping") and application note AN3308 (free-fall and inertial interrupt set-up). Address
0x18 (SDO/SA0 to GND) or 0x19 (SDO to 3V3); ``WHO_AM_I`` reads 0x33.

Set-up (:meth:`Lis3dh.configure`): 50 Hz (25/100 selectable), high resolution, ±8 g (falls
peak at 3–8 g at the hip; 4 mg per digit), FIFO in stream mode, interrupts latched:

* INT1 pin (*data* line): FIFO watermark (``CTRL_REG3.I1_WTM``), only in stream mode;
* INT2 pin (*wake* line): interrupt generator 1 = tilt (the upright axis' *low* event,
  ``|a| < cos(tilt)``, for ``tilt_s``) and generator 2 = free fall (AND of the three low
  events below ``freefall_g`` for ``freefall_s``, AN3308 §6), only in watch mode.

Thresholds at ±8 g are 62 mg per LSB (``INTx_THS``), durations 1/ODR per LSB. Reading
``INTx_SRC`` clears a latched interrupt. In FIFO mode a burst read from ``OUT_X_L`` rolls over
from 0x2D back to 0x28 (AN3308 §9), so one read fetches several samples.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from .accel import FIFO_SIZE, MODES, WATERMARK, AccelError, Sample, WakeSettings

log = logging.getLogger(__name__)

__all__ = ["Lis3dh"]

# --- registers ---------------------------------------------------------------------------
WHO_AM_I: Final = 0x0F
CTRL_REG1: Final = 0x20
CTRL_REG2: Final = 0x21
CTRL_REG3: Final = 0x22
CTRL_REG4: Final = 0x23
CTRL_REG5: Final = 0x24
CTRL_REG6: Final = 0x25
REFERENCE: Final = 0x26
STATUS_REG: Final = 0x27
OUT_X_L: Final = 0x28
FIFO_CTRL_REG: Final = 0x2E
FIFO_SRC_REG: Final = 0x2F
INT1_CFG: Final = 0x30
INT1_SRC: Final = 0x31
INT1_THS: Final = 0x32
INT1_DURATION: Final = 0x33
INT2_CFG: Final = 0x34
INT2_SRC: Final = 0x35
INT2_THS: Final = 0x36
INT2_DURATION: Final = 0x37
#: Sub-address bit that makes the chip auto-increment on multi-byte reads.
AUTO_INCREMENT: Final = 0x80

# --- values ------------------------------------------------------------------------------
CHIP_ID: Final = 0x33
#: CTRL_REG1 ODR field (bits 7:4) | Xen | Yen | Zen.
DATARATE: Final = {25: 0x30, 50: 0x40, 100: 0x50}
AXES_ENABLE: Final = 0x07
#: CTRL_REG4: BDU (block data update) | FS = ±8 g (0b10 << 4) | HR (high resolution).
BDU: Final = 0x80
RANGE_8_G: Final = 0x20
HIGH_RES: Final = 0x08
#: Output: 12-bit left-justified in high resolution; at ±8 g 4 mg per digit.
MG_PER_DIGIT_8G: Final = 4.0
#: INTx_THS LSB at ±8 g, in g.
THS_LSB_8G: Final = 0.062
#: CTRL_REG5: FIFO_EN | LIR_INT1 (latch generator 1) | LIR_INT2 (latch generator 2).
FIFO_EN: Final = 0x40
LIR_INT1: Final = 0x08
LIR_INT2: Final = 0x02
#: FIFO_CTRL_REG mode field (bits 7:6).
FIFO_STREAM: Final = 0x80
#: CTRL_REG3 (to the INT1 pin): FIFO watermark.
I1_WTM: Final = 0x04
#: CTRL_REG6 (to the INT2 pin): interrupt generators 1 and 2.
I2_IA1: Final = 0x40
I2_IA2: Final = 0x20
#: INTx_CFG bits: AOI (AND of events), and the low / high events of each axis.
AOI_AND: Final = 0x80
XLIE, YLIE, ZLIE = 0x01, 0x04, 0x10
LOW_EVENT: Final = (XLIE, YLIE, ZLIE)
#: INTx_SRC: IA (an interrupt is active).
SRC_IA: Final = 0x40
#: FIFO_SRC_REG: OVRN_FIFO (full, oldest overwritten), EMPTY, FSS (unread samples 0..31).
FIFO_OVRN: Final = 0x40
FIFO_EMPTY: Final = 0x20
FIFO_FSS: Final = 0x1F
#: Samples per burst read (6 bytes each; SMBus block reads carry at most 32 bytes).
BURST: Final = 5


class Lis3dh:
    """LIS3DH on I2C: the :class:`device.accel.Accelerometer` of a real device.

    Args:
        bus: I2C bus number (1 on a Pi: GPIO 2/3).
        address: 0x18 or 0x19.
        rate_hz: 25, 50 or 100.
        bus_factory: ``(bus) -> SMBus-like`` with ``read_byte_data``, ``write_byte_data``,
            ``read_i2c_block_data``; default ``smbus2.SMBus`` (imported here only).
        clock: monotonic clock for sample times (tests inject one).

    Raises:
        AccelError: smbus2 missing, the bus cannot be opened, or ``WHO_AM_I`` is not 0x33.
        ValueError: unsupported rate.
    """

    def __init__(self, bus: int = 1, address: int = 0x18, *, rate_hz: int = 50, bus_factory: Any = None,
                 clock=time.monotonic) -> None:
        if rate_hz not in DATARATE:
            raise ValueError(f"rate_hz must be one of {sorted(DATARATE)}, got {rate_hz}")
        if bus_factory is None:
            try:
                from smbus2 import SMBus
            except ImportError as exc:
                raise AccelError("smbus2 is not installed: pip install 'lonewatch[device]'") from exc
            bus_factory = SMBus
        self.address = address
        self.rate_hz = float(rate_hz)
        self.clock = clock
        self._last_t = 0.0
        try:
            self._bus = bus_factory(bus)
        except OSError as exc:
            raise AccelError(f"cannot open I2C bus {bus}: {exc}") from exc
        who = self._read(WHO_AM_I)
        if who != CHIP_ID:
            self.close()
            raise AccelError(f"no LIS3DH at 0x{address:02x} (WHO_AM_I 0x{who:02x}, expected 0x{CHIP_ID:02x})")

    # -- bus ------------------------------------------------------------------------------
    def _read(self, register: int) -> int:
        try:
            return int(self._bus.read_byte_data(self.address, register))
        except (OSError, ValueError) as exc:
            raise AccelError(f"I2C read of LIS3DH register 0x{register:02x} failed: {exc}") from exc

    def _write(self, register: int, value: int) -> None:
        try:
            self._bus.write_byte_data(self.address, register, value & 0xFF)
        except (OSError, ValueError) as exc:
            raise AccelError(f"I2C write of LIS3DH register 0x{register:02x} failed: {exc}") from exc

    def _burst(self, register: int, n: int) -> list[int]:
        try:
            data = list(self._bus.read_i2c_block_data(self.address, register | AUTO_INCREMENT, n))
        except (OSError, ValueError) as exc:
            raise AccelError(f"I2C burst read at 0x{register:02x} failed: {exc}") from exc
        if len(data) != n:
            raise AccelError(f"I2C burst read returned {len(data)} bytes, expected {n}")
        return data

    # -- Accelerometer --------------------------------------------------------------------
    def configure(self, wake: WakeSettings) -> None:
        """Program sampling, FIFO and both interrupt generators (module docstring)."""
        odr = int(self.rate_hz)
        self._write(CTRL_REG1, DATARATE[odr] | AXES_ENABLE)
        self._write(CTRL_REG2, 0x00)  # no high-pass filter: tilt and free fall need gravity
        self._write(CTRL_REG4, BDU | RANGE_8_G | HIGH_RES)
        self._write(CTRL_REG5, FIFO_EN | LIR_INT1 | LIR_INT2)
        self._write(FIFO_CTRL_REG, FIFO_STREAM | WATERMARK)
        tilt_ths = max(1, min(127, round(wake.tilt_threshold_g / THS_LSB_8G)))
        ff_ths = max(1, min(127, round(wake.freefall_g / THS_LSB_8G)))
        self._write(INT1_CFG, LOW_EVENT[wake.axis_index])          # OR of one event: tilt
        self._write(INT1_THS, tilt_ths)
        self._write(INT1_DURATION, max(0, min(127, round(wake.tilt_s * odr))))
        self._write(INT2_CFG, AOI_AND | XLIE | YLIE | ZLIE)         # AND of lows: free fall
        self._write(INT2_THS, ff_ths)
        self._write(INT2_DURATION, max(0, min(127, round(wake.freefall_s * odr))))
        self.set_mode("watch")
        log.info("LIS3DH at 0x%02x: %d Hz, ±8 g, tilt < %.2f g, free fall < %.2f g",
                 self.address, odr, tilt_ths * THS_LSB_8G, ff_ths * THS_LSB_8G)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._write(CTRL_REG3, I1_WTM if mode == "stream" else 0x00)
        self._write(CTRL_REG6, (I2_IA1 | I2_IA2) if mode == "watch" else 0x00)
        if mode == "watch":
            self.wake_source()  # generators latch while not routed: clear what is stale

    def read_fifo(self) -> list[Sample]:
        src = self._read(FIFO_SRC_REG)
        if src & FIFO_EMPTY:
            return []
        n = FIFO_SIZE if src & FIFO_OVRN else (src & FIFO_FSS)
        raw: list[tuple[float, float, float]] = []
        while len(raw) < n:
            k = min(BURST, n - len(raw))
            data = self._burst(OUT_X_L, 6 * k)
            raw.extend(_decode(data[6 * i:6 * i + 6]) for i in range(k))
        return self._stamp(raw)

    def read_now(self) -> Sample:
        return self._stamp([_decode(self._burst(OUT_X_L, 6))])[0]

    def wake_source(self) -> set[str]:
        out = set()
        if self._read(INT1_SRC) & SRC_IA:
            out.add("tilt")
        if self._read(INT2_SRC) & SRC_IA:
            out.add("freefall")
        return out

    def close(self) -> None:
        try:
            self._bus.close()
        except OSError:
            pass

    def _stamp(self, raw: list[tuple[float, float, float]]) -> list[Sample]:
        """Sample times: the newest is now, the others 1/ODR apart (the FIFO has no clock);
        never earlier than the previous read's newest."""
        now = self.clock()
        dt = 1.0 / self.rate_hz
        out = []
        for i, (x, y, z) in enumerate(raw):
            t = max(now - (len(raw) - 1 - i) * dt, self._last_t + 1e-6)
            self._last_t = t
            out.append(Sample(t, x, y, z))
        return out


def _decode(b: list[int]) -> tuple[float, float, float]:
    """Six output bytes (X_L, X_H, Y_L, Y_H, Z_L, Z_H) → g (12-bit left-justified, ±8 g)."""
    vals = []
    for lo, hi in ((b[0], b[1]), (b[2], b[3]), (b[4], b[5])):
        v = (hi << 8) | lo
        if v >= 0x8000:
            v -= 0x10000
        vals.append((v >> 4) * MG_PER_DIGIT_8G / 1000.0)
    return vals[0], vals[1], vals[2]

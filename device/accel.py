"""The accelerometer edge (issue 10): a small interface with a real I2C driver
(:mod:`device.accel_lis3dh`) and a simulated twin that replays a trace
(:mod:`device.accel_sim`), plus the two interrupt lines read through gpiozero.

The chip samples by itself (50 Hz into its 32-sample FIFO) and has its own interrupt engine,
so the Pi does not poll at 50 Hz all night:

* **watch mode** (the worker is upright): the *wake* line (LIS3DH INT2) rises when the chip
  sees free fall (all axes below ``freefall_g`` for ``freefall_s``) or a tilt (the upright
  axis below ``cos(tilt_deg)`` for ``tilt_s``); nothing else wakes the Pi;
* **off** (man-down paused): the chip samples on, but drives neither line;
* **stream mode** (something is happening): the *data* line (INT1) rises each time the FIFO
  holds ``WATERMARK`` samples (every 0.5 s at 50 Hz) and the Pi reads them in one burst; the
  wake line is not routed then.

Axes and units everywhere: g on the device axes of hardware/README.md (+x to the wearer's
right, +y forward away from the body, +z up when worn upright; at rest +1 g on the axis
pointing up). Times are seconds on the accelerometer's :meth:`Accelerometer.clock`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from protocol.errors import LonewatchError

from .mandown import axis_vector

log = logging.getLogger(__name__)

__all__ = ["MODES", "WATERMARK", "AccelError", "Accelerometer", "InterruptLines", "Sample", "WakeSettings"]

#: FIFO level at which the data line rises in stream mode (LIS3DH FIFO holds 32).
WATERMARK = 25
FIFO_SIZE = 32
MODES = ("watch", "stream", "off")


class AccelError(LonewatchError, OSError):
    """The accelerometer cannot be used (I2C error, wrong chip, implausible data)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: ``t`` seconds (accelerometer clock), ``ax, ay, az`` in g."""

    t: float
    ax: float
    ay: float
    az: float


@dataclass(frozen=True)
class WakeSettings:
    """What the chip watches in watch mode (derived from the man-down profile).

    ``upright_axis`` (``"+z"`` …), ``tilt_deg``: wake when tilted beyond it for ``tilt_s``;
    ``freefall_g`` / ``freefall_s``: wake on free fall."""

    upright_axis: str = "+z"
    tilt_deg: float = 45.0
    tilt_s: float = 0.5
    freefall_g: float = 0.5
    freefall_s: float = 0.1

    @property
    def tilt_threshold_g(self) -> float:
        """``|a|`` on the upright axis below which the chip calls the device tilted."""
        return math.cos(math.radians(self.tilt_deg))

    @property
    def axis_index(self) -> int:
        vec = axis_vector(self.upright_axis)
        return next(i for i, v in enumerate(vec) if v)


class Accelerometer(Protocol):
    """What man-down needs from a 3-axis accelerometer. Every method may raise AccelError."""

    #: Output data rate, Hz.
    rate_hz: float

    def clock(self) -> float:
        """Now, on the clock the samples' ``t`` use (seconds; monotonic)."""
        ...

    def configure(self, wake: WakeSettings) -> None:
        """Set the chip up: sampling, FIFO, interrupt thresholds; starts in watch mode."""
        ...

    def set_mode(self, mode: str) -> None:
        """``"watch"`` (wake line on tilt / free fall; stale latches cleared), ``"stream"``
        (data line on FIFO watermark) or ``"off"`` (no line driven: man-down paused).
        Raises ValueError for another mode."""
        ...

    def read_fifo(self) -> list[Sample]:
        """Every sample in the FIFO (at most 32, oldest first); lowers the data line."""
        ...

    def read_now(self) -> Sample:
        """The newest sample (one short read; used by the occasional check in watch mode)."""
        ...

    def wake_source(self) -> set[str]:
        """Read and clear the latched wake interrupt: a subset of ``{"tilt", "freefall"}``."""
        ...

    def close(self) -> None:
        ...


class InterruptLines:
    """The accelerometer's data and wake lines as gpiozero inputs (push-pull, active high;
    pull-down so an unconnected line reads inactive).

    Args:
        data_pin, wake_pin: BCM pins (LIS3DH INT1, INT2).
        on_edge: ``() -> None`` called on every rising edge (from gpiozero's thread — keep
            it short: the man-down watcher only sets an event there).
        pin_factory: gpiozero pin factory (MockFactory in tests and the demo).
    """

    def __init__(self, data_pin: int, wake_pin: int, on_edge: Callable[[], None], *, pin_factory=None) -> None:
        from gpiozero import DigitalInputDevice  # hardware library imported only here

        self.data = DigitalInputDevice(data_pin, pull_up=False, pin_factory=pin_factory)
        try:
            self.wake = DigitalInputDevice(wake_pin, pull_up=False, pin_factory=pin_factory)
        except Exception:
            self.data.close()
            raise
        self.data.when_activated = lambda *_: on_edge()
        self.wake.when_activated = lambda *_: on_edge()

    @property
    def data_active(self) -> bool:
        return bool(self.data.is_active)

    @property
    def wake_active(self) -> bool:
        return bool(self.wake.is_active)

    def close(self) -> None:
        for dev in (self.data, self.wake):
            dev.close()

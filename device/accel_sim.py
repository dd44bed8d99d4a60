"""A simulated accelerometer that replays a trace (issue 10): the working twin of
:class:`device.accel_lis3dh.Lis3dh` for tests, the demo and the benchmark.

It behaves like the chip, not like a mock: it "samples" the trace in real time (or
``speed`` times faster) into a 32-sample FIFO, runs the same interrupt engine the LIS3DH is
programmed with (tilt = upright axis below ``cos(tilt_deg)`` for ``tilt_s``; free fall = all
axes below ``freefall_g`` for ``freefall_s``; latched until :meth:`wake_source` reads them) and
drives the data and wake lines as real edges on gpiozero MockFactory pins
(``drive_high``/``drive_low``), so the daemon's interrupt path is the one a real device runs.

After the trace ends the "chip" keeps reading its last sample (a device that came to rest
stays at rest) unless ``loop`` repeats the trace. The trace's ``button`` column is not played
here: tests and the demo press the MockFactory button pin like a finger.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from .accel import FIFO_SIZE, MODES, WATERMARK, AccelError, Sample, WakeSettings
from .accel_trace import Trace

log = logging.getLogger(__name__)

__all__ = ["SimAccelerometer"]


class SimAccelerometer:
    """Replays ``trace`` as an accelerometer on MockFactory pins.

    Args:
        trace: what the chip will measure (its ``t_s`` start at the sim's clock 0).
        pin_factory: the gpiozero MockFactory the daemon uses.
        data_pin, wake_pin: BCM pins of the data (INT1) and wake (INT2) lines.
        speed: trace seconds per wall-clock second (1 = real time).
        loop: start the trace again at its end (benchmarks of long idle periods).
        chunk_s: how often the simulated chip catches up with the clock, wall seconds at
            real time (divided by ``speed`` when faster).

    The clock starts at :meth:`start` (called by :meth:`configure` if not before).
    ``fail`` (set True) makes every call raise AccelError, like a chip that stopped answering.
    """

    def __init__(self, trace: Trace, *, pin_factory, data_pin: int, wake_pin: int, speed: float = 1.0,
                 loop: bool = False, chunk_s: float = 0.1) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.trace = trace
        self.rate_hz = trace.rate_hz
        self.speed = speed
        self.loop = loop
        self.chunk_s = chunk_s
        self.fail = False
        self._t0 = trace.samples[0].t_s
        self._period = trace.duration_s + 1.0 / trace.rate_hz
        self._factory = pin_factory
        self._data_pin_no, self._wake_pin_no = data_pin, wake_pin
        self._lock = threading.Lock()
        self._fifo: collections.deque[Sample] = collections.deque(maxlen=FIFO_SIZE)
        self._k = 0
        self._newest: Sample | None = None
        self._wake: WakeSettings | None = None
        self._mode = "off"
        self._latched: set[str] = set()
        self._runs = {"tilt": 0, "freefall": 0}
        self._m0: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Wake interrupts raised so far, (clock s, kind) — for tests and the demo timeline.
        self.raised: list[tuple[float, str]] = []
        self.reads = 0

    # -- time ----------------------------------------------------------------------------
    def start(self) -> "SimAccelerometer":
        """Start the clock and the simulated chip (idempotent)."""
        if self._thread is None:
            self._m0 = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="accel-sim", daemon=True)
            self._thread.start()
        return self

    def clock(self) -> float:
        if self._m0 is None:
            return 0.0
        return (time.monotonic() - self._m0) * self.speed

    def wall_time_of(self, t: float) -> float:
        """The ``time.monotonic()`` at which clock time ``t`` (= trace time - start) is reached."""
        return (self._m0 or time.monotonic()) + t / self.speed

    @property
    def finished(self) -> bool:
        """The trace has been played to its end (never with ``loop``)."""
        return not self.loop and self._k >= len(self.trace.samples)

    def _sample(self, k: int) -> Sample:
        n = len(self.trace.samples)
        if k >= n and not self.loop:
            s = self.trace.samples[-1]
            return Sample(s.t_s - self._t0 + (k - n + 1) / self.rate_hz, s.ax, s.ay, s.az)
        s = self.trace.samples[k % n]
        return Sample(s.t_s - self._t0 + (k // n) * self._period, s.ax, s.ay, s.az)

    # -- the chip --------------------------------------------------------------------------
    def _run(self) -> None:
        # Faster than real time, catch up more often: the FIFO holds only 0.64 s at 50 Hz.
        chunk = self.chunk_s / max(1.0, self.speed)
        while not self._stop.wait(chunk):
            now = self.clock()
            with self._lock:
                while True:
                    s = self._sample(self._k)
                    if s.t > now:
                        break
                    self._k += 1
                    self._on_sample(s)
                self._drive()

    def _on_sample(self, s: Sample) -> None:
        self._fifo.append(s)
        self._newest = s
        w = self._wake
        if w is None:
            return
        a = (s.ax, s.ay, s.az)
        conds = {"tilt": (abs(a[w.axis_index]) < w.tilt_threshold_g, max(1, round(w.tilt_s * self.rate_hz))),
                 "freefall": (all(abs(v) < w.freefall_g for v in a), max(1, round(w.freefall_s * self.rate_hz)))}
        for kind, (cond, need) in conds.items():
            self._runs[kind] = self._runs[kind] + 1 if cond else 0
            if self._runs[kind] >= need and self._mode == "watch" and kind not in self._latched:
                self._latched.add(kind)
                self.raised.append((s.t, kind))

    def _drive(self) -> None:
        """Set the lines as the chip would (called with the lock held)."""
        if self._wake is None:
            return
        data = self._factory.pin(self._data_pin_no)
        wake = self._factory.pin(self._wake_pin_no)
        if self._mode == "stream" and len(self._fifo) >= WATERMARK:
            data.drive_high()
        else:
            data.drive_low()
        if self._latched and self._mode == "watch":
            wake.drive_high()
        else:
            wake.drive_low()

    def _check(self) -> None:
        if self.fail:
            raise AccelError("simulated accelerometer: I2C read failed")

    # -- Accelerometer --------------------------------------------------------------------
    def configure(self, wake: WakeSettings) -> None:
        self._check()
        with self._lock:
            self._wake = wake
            self._mode = "watch"
            self._latched.clear()
            self._runs = {"tilt": 0, "freefall": 0}
        self.start()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._check()
        with self._lock:
            self._mode = mode
            self._latched.clear()
            self._runs = {"tilt": 0, "freefall": 0} if mode == "watch" else self._runs
            self._drive()

    @property
    def mode(self) -> str:
        return self._mode

    def read_fifo(self) -> list[Sample]:
        self._check()
        with self._lock:
            out = list(self._fifo)
            self._fifo.clear()
            self.reads += 1
            self._drive()
        return out

    def read_now(self) -> Sample:
        self._check()
        with self._lock:
            if self._newest is None:
                s = self._sample(0)
                return Sample(0.0, s.ax, s.ay, s.az)
            return self._newest

    def wake_source(self) -> set[str]:
        self._check()
        with self._lock:
            out = set(self._latched)
            self._latched.clear()
            self._drive()
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2)

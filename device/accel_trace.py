"""Accelerometer traces on disk (issue 10 "Replay tool"): CSV with the header
``t_s,ax_g,ay_g,az_g`` and optionally ``button``.

* ``t_s``: seconds from the start of the trace, strictly increasing, never more than
  :data:`MAX_GAP_S` after the previous sample (a jump such as ``1e20`` is refused);
* ``ax_g, ay_g, az_g``: acceleration in g on the device axes of hardware/README.md
  (+x to the wearer's right, +y forward away from the body, +z up when worn upright); at
  rest the device reads +1 g on the axis pointing up;
* ``button``: ``1`` while the button is pressed, else ``0`` (optional column);
* sample rate 20–100 Hz (the median interval decides; single gaps are allowed).

Every problem is a :class:`TraceError` carrying file and line (``trace.csv:17: ax_g: not a
number: "x"``). Standard library only (the Pi has no pandas).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from protocol.errors import LonewatchError

__all__ = ["HEADER", "MAX_RATE_HZ", "MIN_RATE_HZ", "Trace", "TraceError", "TraceSample",
           "load_trace", "write_trace"]

HEADER = ("t_s", "ax_g", "ay_g", "az_g")
MIN_RATE_HZ, MAX_RATE_HZ = 20.0, 100.0
#: Values beyond this are not acceleration a wearable can report (LIS3DH: ±16 g), g.
MAX_ABS_G = 16.0
#: Longest allowed interval between two samples, s (a recording gap, not a broken clock).
MAX_GAP_S = 10.0


class TraceError(LonewatchError, ValueError):
    """A trace file cannot be used. ``path``, ``line`` (1-based, None for the whole file)."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class TraceSample:
    """One sample: ``t_s`` seconds, ``ax/ay/az`` g, ``button`` pressed."""

    t_s: float
    ax: float
    ay: float
    az: float
    button: bool = False


@dataclass(frozen=True)
class Trace:
    """A loaded trace: ``samples`` in time order, ``rate_hz`` (median), ``name``."""

    samples: tuple[TraceSample, ...]
    rate_hz: float
    name: str = "<trace>"
    has_button: bool = False

    @property
    def duration_s(self) -> float:
        return self.samples[-1].t_s - self.samples[0].t_s if self.samples else 0.0

    @classmethod
    def of(cls, samples: Sequence[TraceSample], name: str = "<trace>") -> "Trace":
        """A trace from samples in memory (the generator in tests/traces.py).

        Raises:
            TraceError: fewer than 2 samples, times not increasing, or rate outside 20–100 Hz.
        """
        _check_times([s.t_s for s in samples], name, None)
        return cls(tuple(samples), _rate([s.t_s for s in samples]), name,
                   any(s.button for s in samples))


def _rate(times: Sequence[float]) -> float:
    return 1.0 / statistics.median(b - a for a, b in zip(times, times[1:]))


def _check_times(times: Sequence[float], name: str, lines: Sequence[int] | None) -> None:
    if len(times) < 2:
        raise TraceError(name, None, "a trace needs at least 2 samples")
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise TraceError(name, lines[i] if lines else None,
                             f"t_s must increase: {times[i]:g} after {times[i - 1]:g}")
        if times[i] - times[i - 1] > MAX_GAP_S:
            raise TraceError(name, lines[i] if lines else None,
                             f"t_s jumps by {times[i] - times[i - 1]:g} s ({times[i]:g} after {times[i - 1]:g}); "
                             f"at most {MAX_GAP_S:g} s between samples")
    rate = _rate(times)
    if not MIN_RATE_HZ - 0.5 <= rate <= MAX_RATE_HZ + 0.5:
        raise TraceError(name, None, f"sample rate {rate:.1f} Hz is outside "
                         f"{MIN_RATE_HZ:.0f}–{MAX_RATE_HZ:.0f} Hz")


def load_trace(path: str | PathLike[str]) -> Trace:
    """Read a trace CSV.

    Raises:
        TraceError: unreadable file, not UTF-8, wrong header, a bad value (with its line),
            times not increasing, or a rate outside 20–100 Hz.
    """
    name = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise TraceError(name, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TraceError(name, None, f"not UTF-8 text (byte {exc.start})") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        raise TraceError(name, None, "empty file: expected a header t_s,ax_g,ay_g,az_g")
    cols = [h.strip() for h in header]
    if tuple(cols[:4]) != HEADER or cols[4:] not in ([], ["button"]):
        raise TraceError(name, 1, f"header must be {','.join(HEADER)}[,button], got {','.join(cols)!r}")
    width = len(cols)
    samples: list[TraceSample] = []
    lines: list[int] = []
    for lineno, row in enumerate(rows, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if row[0].lstrip().startswith("#"):
            continue
        if len(row) != width:
            raise TraceError(name, lineno, f"expected {width} values, got {len(row)}")
        vals: list[float] = []
        for col, raw in zip(cols[:4], row):
            try:
                v = float(raw)
            except ValueError:
                raise TraceError(name, lineno, f"{col}: not a number: {raw.strip()!r}") from None
            if not math.isfinite(v):
                raise TraceError(name, lineno, f"{col}: must be finite, got {raw.strip()}")
            if col != "t_s" and abs(v) > MAX_ABS_G:
                raise TraceError(name, lineno, f"{col}: {v:g} g is beyond ±{MAX_ABS_G:g} g")
            vals.append(v)
        button = False
        if width == 5:
            b = row[4].strip()
            if b not in ("0", "1"):
                raise TraceError(name, lineno, f"button: must be 0 or 1, got {b!r}")
            button = b == "1"
        if vals[0] < 0:
            raise TraceError(name, lineno, f"t_s: must be >= 0, got {vals[0]:g}")
        samples.append(TraceSample(vals[0], vals[1], vals[2], vals[3], button))
        lines.append(lineno)
    _check_times([s.t_s for s in samples], name, lines)
    return Trace(tuple(samples), _rate([s.t_s for s in samples]), name, width == 5)


def write_trace(path: str | PathLike[str], samples: Iterable[TraceSample], *, button: bool = False) -> int:
    """Write samples as a trace CSV (4 decimals: 0.1 mg); returns the number written."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER + (("button",) if button else ()))
        for s in samples:
            row = [f"{s.t_s:.4f}", f"{s.ax:.4f}", f"{s.ay:.4f}", f"{s.az:.4f}"]
            if button:
                row.append("1" if s.button else "0")
            w.writerow(row)
            n += 1
    return n

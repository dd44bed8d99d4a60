"""Summaries of repeated measurements and the result record of one benchmark figure.

Every figure is reported as the median over repeated runs plus its spread (min..max over
runs), with the workload stated in words — the issue's "median and spread over repeated
runs, with the workload stated".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0..100) of ``samples`` by linear interpolation between
    closest ranks (NumPy's default). Raises ValueError for no samples."""
    if not samples:
        raise ValueError("no samples")
    xs = sorted(samples)
    k = (len(xs) - 1) * pct / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over repeated runs (``runs`` values, same unit)."""

    median: float
    low: float
    high: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        """Summary of the per-run values. Raises ValueError for none."""
        if not values:
            raise ValueError("no runs")
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    def text(self, fmt: str = "{:.1f}") -> str:
        """``median (low–high)`` with ``fmt`` for each number."""
        if len(self.runs) == 1:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}–{fmt.format(self.high)})"


@dataclass
class Figure:
    """One row of the benchmark table.

    ``name`` what is measured; ``value`` its spread over runs (None when not measurable);
    ``unit``; ``goal`` the SPEC §6 goal in words and ``met`` whether the median meets it
    (None: no goal or not measurable); ``workload`` how it was measured; ``note`` anything
    the reader must know (e.g. why it could not be measured); ``extra`` raw per-run data.
    """

    name: str
    unit: str
    value: Spread | None
    goal: str = ""
    met: bool | None = None
    workload: str = ""
    note: str = ""
    fmt: str = "{:.1f}"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict (``bench/results.json``)."""
        out = asdict(self)
        out.pop("fmt")
        return out

"""Simulated BLE beacons for tests, the demo and ``lonewatch survey run --simulate``
(issue 12): a working :class:`device.beacons.BeaconScanner`, not a patch.

A test places beacons and moves the worker: :meth:`SimulatedScanner.set` says which beacons
are in range and how strong (dBm). Each :meth:`SimulatedScanner.scan` returns ``adverts``
advertisements per beacon in range (a beacon advertises several times a second; a scan
window hears a few), with an optional deterministic jitter so the smoothing has something
to smooth. ``adapter=False`` behaves like a Pi without a Bluetooth adapter.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping

from .beacons import Advert, BeaconUnavailableError

__all__ = ["SimulatedScanner"]


class SimulatedScanner:
    """Beacons in range → advertisements, like a real scan would report them.

    Args:
        beacons: beacon id → RSSI dBm of what is in range now.
        adverts: advertisements heard per beacon and scan.
        jitter_db: ± uniform noise per advertisement, dB (seeded: deterministic).
        adapter: False = no Bluetooth adapter (every scan raises BeaconUnavailableError).
        real_time: sleep for the scan window (the daemon's duty cycle); tests pass False.
        clock: Unix seconds of each advertisement.
    """

    def __init__(self, beacons: Mapping[str, float] | None = None, *, adverts: int = 3, jitter_db: float = 0.0,
                 adapter: bool = True, real_time: bool = False, seed: int = 12,
                 clock: Callable[[], float] = time.time) -> None:
        self._beacons = dict(beacons or {})
        self.adverts, self.jitter_db, self.adapter = adverts, jitter_db, adapter
        self.real_time, self.clock = real_time, clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.scans = 0

    def set(self, beacons: Mapping[str, float]) -> None:
        """Beacons in range from now on (id → dBm); ``{}`` = none (left the building)."""
        with self._lock:
            self._beacons = dict(beacons)

    def scan(self, duration_s: float) -> list[Advert]:
        """One scan window. Raises BeaconUnavailableError when ``adapter`` is False."""
        if not self.adapter:
            raise BeaconUnavailableError("no Bluetooth adapter found (simulated: hci0 missing)")
        if self.real_time:
            time.sleep(duration_s)
        with self._lock:
            self.scans += 1
            now = self.clock()
            out = []
            for bid, rssi in self._beacons.items():
                for _ in range(self.adverts):
                    noise = self._rng.uniform(-self.jitter_db, self.jitter_db) if self.jitter_db else 0.0
                    out.append(Advert(bid, rssi + noise, now))
            return out

    def close(self) -> None:
        """Nothing to release."""

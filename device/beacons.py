"""BLE location beacons: which room the worker is in (issue 12, SPEC §5b "Place").

GNSS has no fix in a basement laundry; a beacon on the wall of each room does. The device
listens for iBeacon and Eddystone-UID advertisements (:mod:`protocol.beacons`) and takes the
strongest beacon as the worker's place. The registry on the relay maps the beacon id to
site, building, floor and room (:mod:`relay.places`).

Scanning (:class:`BeaconService`): one scan window of ``scan_s`` seconds every
``interval_s`` while on shift (a low duty cycle: 2 s in 30 s by default), none off shift,
and one at once when an alarm is raised (:meth:`BeaconService.burst`). The alarm itself is
never held back for a scan: it carries the place known when it was raised, and the burst
refreshes the place for the alive sent right after it and for the relay's view of the device.

**Smoothing** (:class:`BeaconTracker`), and its limits:

* Per scan, a beacon's reading is the *median* RSSI of its advertisements in that window
  (one reflection does not decide).
* Across scans, an exponentially weighted mean: ``s ← s + alpha·(reading − s)`` (alpha 0.5:
  the last ~3 scans count). A beacon missing from ``lost_after_scans`` scans in a row is
  dropped as a candidate.
* The current place is kept until another beacon is stronger by ``hysteresis_db`` (3 dB);
  two beacons of equal strength therefore do not make the place flap. With no current
  place, equal beacons are decided by the lower id (deterministic).
* The place stays valid for ``beacon_max_age_s`` after its beacon was last heard (a worker
  crouching behind a machine), then it is None.

Limits: RSSI through a body or a steel shelf varies by 6–10 dB, so this finds the *room*
(or the neighbour through a thin wall), not a position in it; a beacon one floor up through
a light ceiling can win; a change of room shows after one to two scan intervals; beacons
should sit in the middle of their room, one per room, at the same TX power.

Backends (STYLE: hardware libraries imported only inside the real backend):
:class:`BleakScanner` (bleak on BlueZ — the Pi Zero W / 2 W radio) and
:class:`device.beacon_sim.SimulatedScanner` (tests, demo). No adapter → one clear warning,
the daemon works exactly as without beacons, and looks again every ``retry_s``.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from protocol.beacons import normalize_beacon_id, parse_eddystone_uid, parse_ibeacon
from protocol.errors import LonewatchError, ValidationError
from protocol.messages import BeaconSighting

__all__ = ["Advert", "BeaconScanner", "BeaconService", "BeaconTracker", "BeaconUnavailableError",
           "BleakScanner", "open_scanner"]

log = logging.getLogger(__name__)


class BeaconUnavailableError(LonewatchError, OSError):
    """No Bluetooth adapter, BlueZ/D-Bus not running, or bleak not installed."""


@dataclass(frozen=True, slots=True)
class Advert:
    """One advertisement heard: canonical beacon ``id``, ``rssi`` dBm, ``at`` Unix seconds."""

    id: str
    rssi: float
    at: float


class BeaconScanner(Protocol):
    """What the daemon needs from a scanner backend."""

    def scan(self, duration_s: float) -> list[Advert]:
        """Listen for ``duration_s`` seconds; every beacon advertisement heard.

        Raises:
            BeaconUnavailableError: no adapter (the caller warns once and carries on).
        """
        ...

    def close(self) -> None:
        """Release the adapter."""
        ...


# --------------------------------------------------------------------------- smoothing


@dataclass
class _Track:
    smoothed: float
    last_seen: float
    misses: int = 0


class BeaconTracker:
    """The strongest beacon, smoothed over scans (method and limits: module docstring).

    Args:
        alpha: weight of the newest scan in the running mean, 0 < alpha <= 1.
        lost_after_scans: scans in a row without the beacon before it is no candidate.
        hysteresis_db: how much stronger another beacon must be to take over, dB.
        max_age_s: how long the place stays valid after its beacon was last heard, s.
        min_rssi_dbm: weaker advertisements are ignored (another floor, the street).
        clock: Unix seconds (injectable for tests).
    """

    def __init__(self, *, alpha: float = 0.5, lost_after_scans: int = 2, hysteresis_db: float = 3.0,
                 max_age_s: float = 120.0, min_rssi_dbm: float = -100.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.lost_after_scans, self.hysteresis_db = alpha, lost_after_scans, hysteresis_db
        self.max_age_s, self.min_rssi_dbm, self.clock = max_age_s, min_rssi_dbm, clock
        self._tracks: dict[str, _Track] = {}
        self._current: str | None = None
        self._current_seen = 0.0
        self._current_rssi = 0.0
        self._lock = threading.Lock()

    def update(self, adverts: Iterable[Advert]) -> BeaconSighting | None:
        """Feed one scan's advertisements; returns :meth:`place` after it."""
        by_id: dict[str, list[Advert]] = {}
        for a in adverts:
            if a.rssi < self.min_rssi_dbm:
                continue
            try:
                bid = normalize_beacon_id(a.id)
            except ValidationError:
                log.debug("ignoring advertisement with a bad beacon id %r", a.id)
                continue
            by_id.setdefault(bid, []).append(a)
        with self._lock:
            for bid, track in list(self._tracks.items()):
                if bid not in by_id:
                    track.misses += 1
                    if track.misses >= self.lost_after_scans:
                        del self._tracks[bid]
            for bid, heard in by_id.items():
                reading = statistics.median(a.rssi for a in heard)
                seen = max(a.at for a in heard)
                track = self._tracks.get(bid)
                if track is None:
                    self._tracks[bid] = _Track(reading, seen)
                else:
                    track.smoothed += self.alpha * (reading - track.smoothed)
                    track.last_seen, track.misses = seen, 0
            self._choose()
        return self.place()

    def _choose(self) -> None:
        if not self._tracks:
            return  # keep the last place; it ages out in place()
        best_id = min(self._tracks, key=lambda b: (-self._tracks[b].smoothed, b))
        best = self._tracks[best_id]
        cur = self._tracks.get(self._current) if self._current else None
        if cur is not None and best_id != self._current and best.smoothed < cur.smoothed + self.hysteresis_db:
            best_id, best = self._current, cur  # not clearly stronger: stay (no flapping)
        self._current, self._current_seen, self._current_rssi = best_id, best.last_seen, best.smoothed

    def place(self, now: float | None = None) -> BeaconSighting | None:
        """The beacon taken as the worker's place, or None (none heard, or older than
        ``max_age_s``)."""
        now = self.clock() if now is None else now
        with self._lock:
            if self._current is None or now - self._current_seen > self.max_age_s:
                return None
            return BeaconSighting(self._current, round(self._current_rssi, 1), self._current_seen)

    def heard(self) -> dict[str, float]:
        """Candidate beacons now: id → smoothed RSSI dBm (the survey records these)."""
        with self._lock:
            return {b: round(t.smoothed, 1) for b, t in self._tracks.items()}


# --------------------------------------------------------------------------- real backend


class BleakScanner:
    """Scanner on bleak (BlueZ over D-Bus on the Pi). ``adapter`` e.g. ``"hci0"``.

    bleak is asyncio-only: each :meth:`scan` runs one short event loop in the calling (the
    beacon) thread. Advertisements that are no iBeacon / Eddystone-UID are ignored.

    Raises:
        BeaconUnavailableError: (from :meth:`scan`) bleak missing, no adapter, BlueZ down.
    """

    def __init__(self, adapter: str = "hci0") -> None:
        self.adapter = adapter

    def scan(self, duration_s: float) -> list[Advert]:
        import asyncio

        try:
            import bleak
        except ImportError as exc:
            raise BeaconUnavailableError(f"bleak is not installed ({exc}); pip install 'lonewatch[device]'") from None
        heard: list[Advert] = []

        def seen(device, adv) -> None:
            parsed = parse_ibeacon(adv.manufacturer_data or {}) or parse_eddystone_uid(adv.service_data or {})
            if parsed is not None and adv.rssi is not None:
                heard.append(Advert(parsed[0], float(adv.rssi), time.time()))

        async def run() -> None:
            async with bleak.BleakScanner(detection_callback=seen, bluez={"adapter": self.adapter}):
                await asyncio.sleep(duration_s)

        try:
            asyncio.run(run())
        except (bleak.exc.BleakError, OSError, EOFError) as exc:
            raise BeaconUnavailableError(f"Bluetooth adapter {self.adapter} unavailable: {exc}") from None
        except Exception as exc:  # dbus-fast errors when BlueZ is absent have their own types
            raise BeaconUnavailableError(f"Bluetooth adapter {self.adapter} unavailable: "
                                         f"{type(exc).__name__}: {exc}") from None
        return heard

    def close(self) -> None:
        """Nothing held between scans."""


def open_scanner(source: str, adapter: str = "hci0") -> BeaconScanner | None:
    """The scanner ``[beacons] source`` names: ``"none"`` → None, ``"bluez"`` → :class:`BleakScanner`.
    (The simulator is handed in by tests and the demo.)

    Raises:
        ValueError: unknown source.
    """
    if source == "none":
        return None
    if source == "bluez":
        return BleakScanner(adapter)
    raise ValueError(f"unknown beacon source {source!r}; expected none or bluez")


# --------------------------------------------------------------------------- the thread


class BeaconService:
    """Runs the scans (duty cycle: module docstring) and keeps the :class:`BeaconTracker`.

    Args:
        scanner: a backend. tracker: the smoothing.
        scan_s: one scan window, s. interval_s: between scans on shift, s.
        active: ``() -> bool``, scan only while True (on shift).
        retry_s: after "no adapter", look again this much later, s (warned once only).
        on_scan: optional ``(BeaconSighting | None) -> None`` after every scan.
    """

    def __init__(self, scanner: BeaconScanner, tracker: BeaconTracker, *, scan_s: float = 2.0,
                 interval_s: float = 30.0, active: Callable[[], bool] = lambda: True, retry_s: float = 300.0,
                 on_scan: Callable[[BeaconSighting | None], None] | None = None) -> None:
        self.scanner, self.tracker = scanner, tracker
        self.scan_s, self.interval_s, self.active, self.retry_s = scan_s, interval_s, active, retry_s
        self.on_scan = on_scan
        self.available: bool | None = None  # None: not tried yet
        self.scans = 0
        self._warned = False
        self._burst = threading.Event()

    def burst(self) -> None:
        """Scan now (an alarm was raised), whatever the duty cycle or shift."""
        self._burst.set()

    def scan_once(self) -> BeaconSighting | None:
        """One scan window now; the place after it. Never raises for a missing adapter."""
        try:
            adverts = self.scanner.scan(self.scan_s)
        except BeaconUnavailableError as exc:
            if not self._warned:
                log.warning("no Bluetooth beacons: %s — the device works without room-level place "
                            "(GNSS only); looking again every %.0f s", exc, self.retry_s)
                self._warned = True
            self.available = False
            return self.tracker.place()
        if self.available is False:
            log.warning("Bluetooth adapter available again: beacon scanning resumed")
        self.available = True
        self.scans += 1
        place = self.tracker.update(adverts)
        if self.on_scan is not None:
            self.on_scan(place)
        return place

    def run(self, stop: threading.Event, beat: Callable[[], None] = lambda: None) -> None:
        """The loop of the daemon's ``beacons`` thread, until ``stop`` is set."""
        next_at = 0.0
        while not stop.is_set():
            beat()
            now = time.monotonic()
            burst = self._burst.is_set()
            if burst or (now >= next_at and self.active()):
                self._burst.clear()
                self.scan_once()
                wait = self.retry_s if self.available is False and not burst else self.interval_s
                next_at = time.monotonic() + wait
            self._burst.wait(min(5.0, max(0.05, next_at - time.monotonic())) if self.active() else 5.0)
            if stop.is_set():
                return

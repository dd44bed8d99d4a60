"""The daemon's issue-12 parts in one place: beacon scanning, the shift-start self-test and
the unprotected warning, wired to a :class:`device.daemon.DeviceDaemon` through a few hook
calls (``after_event``, ``on_ack``, ``tick``, ``beacon``) so the daemon itself stays small.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from protocol.messages import ALARM_KINDS, Ack, BeaconSighting, Event

from .beacons import BeaconScanner, BeaconService, BeaconTracker, open_scanner
from .readiness import REGISTERED, CheckResult, ReadinessCheck, UnprotectedWatch

if TYPE_CHECKING:
    from .daemon import DeviceDaemon

__all__ = ["PlaceParts"]

log = logging.getLogger(__name__)


class PlaceParts:
    """Beacons, readiness and the unprotected watch of one daemon.

    Args:
        daemon: the device daemon (its config, modem state, link, feedback, battery, button).
        scanner: a beacon scanner handed in (simulator), or None for ``[beacons] source``.
    """

    def __init__(self, daemon: DeviceDaemon, scanner: BeaconScanner | None = None) -> None:
        self.d = daemon
        b, r = daemon.cfg.beacons, daemon.cfg.readiness
        try:
            scanner = scanner if scanner is not None else open_scanner(b.source, b.adapter)
        except ValueError as exc:
            log.error("beacons off: %s", exc)
            scanner = None
        self.tracker = BeaconTracker(alpha=b.alpha, lost_after_scans=b.lost_after_scans, hysteresis_db=b.hysteresis_db,
                                     max_age_s=b.beacon_max_age_s, min_rssi_dbm=b.min_rssi_dbm)
        self.beacons: BeaconService | None = None
        if scanner is not None:
            self.beacons = BeaconService(scanner, self.tracker, scan_s=b.scan_s, interval_s=b.interval_s,
                                         active=lambda: daemon.on_shift, on_scan=self._on_scan)
        self._last_beacon: str | None = None
        self.readiness = ReadinessCheck(r, self._default_checks(), raise_event=daemon.raise_event,
                                        play=self._play, observer=daemon.observer)
        self.unprotected = UnprotectedWatch(r, play=self._play, report=daemon.raise_event, observer=daemon.observer)

    # --- hooks called by the daemon --------------------------------------------------------

    def start(self, spawn) -> None:
        """Start the beacon thread (``spawn(target, name)`` is the daemon's). A daemon restarted
        on shift does not repeat the self-test (no new shift start); the relay's ready timeout
        still covers a shift whose readiness never arrived."""
        if self.beacons is not None:
            spawn(lambda: self.beacons.run(self.d._stop, lambda: self.d._beat("beacons")), "beacons")

    def stop(self) -> None:
        self.readiness.stop()
        if self.beacons is not None:
            self.beacons.scanner.close()

    def beacon(self) -> BeaconSighting | None:
        """The place the worker is at now (for events and alives), or None."""
        return self.tracker.place() if self.beacons is not None else None

    def after_event(self, event: Event) -> None:
        """An event is queued: an alarm scans at once; a shift start runs the self-test."""
        if (event.kind in ALARM_KINDS or event.kind == "shift_start") and self.beacons is not None:
            self.beacons.burst()  # an alarm: the freshest place; a shift start: scanning begins now
        if event.kind == "shift_start" and self.d.cfg.readiness.enabled:
            self.readiness.start(event.id)
        elif event.kind == "shift_end":
            self.readiness.stop()

    def on_ack(self, ack: Ack) -> None:
        self.readiness.on_ack(ack)

    def tick(self) -> None:
        """Once a second from the house loop: the unprotected watch."""
        if not self.d.cfg.readiness.enabled:
            return
        ms = self.d.modem_state
        sms_ok = self.d.supervisor is not None and ms.modem_ready and ms.registration in REGISTERED
        self.unprotected.tick(self.d.on_shift, self.d.link.connected.is_set(), sms_ok)

    def status(self) -> dict[str, Any]:
        """For ``lonewatch device status``."""
        place = self.beacon()
        return {"beacon": None if place is None else {"id": place.id, "rssi": place.rssi},
                "beacons_available": None if self.beacons is None else self.beacons.available,
                "readiness": self.readiness.last, "unprotected": self.unprotected.unprotected}

    # --- internals -------------------------------------------------------------------------

    def _play(self, pattern: str) -> None:
        if self.d.feedback is not None:
            self.d.feedback.play(pattern)

    def _on_scan(self, place: BeaconSighting | None) -> None:
        bid = place.id if place else None
        if bid != self._last_beacon:
            self._last_beacon = bid
            self.d.observer("beacon_place", {"beacon": bid, "rssi": place.rssi if place else None})

    def _default_checks(self) -> dict[str, Any]:
        d, r = self.d, self.d.cfg.readiness

        def modem() -> CheckResult:
            if d.supervisor is None:
                return CheckResult(False, "no modem: no SMS fallback", required=False)
            ms = d.modem_state
            ok = ms.modem_ready and ms.registration in REGISTERED
            return CheckResult(ok, f"registration {ms.registration}" if ms.modem_ready else "modem not answering")

        def signal() -> CheckResult:
            if d.supervisor is None:
                return CheckResult(False, "no modem", required=False)
            dbm = d.modem_state.signal_dbm
            if dbm is None:
                return CheckResult(False, "signal unknown")
            return CheckResult(dbm >= r.min_signal_dbm, f"{dbm} dBm (need >= {r.min_signal_dbm})")

        def battery() -> CheckResult:
            if d.battery is None:
                return CheckResult(True, "no fuel gauge", required=False)
            pct = d.battery.percent
            if pct is None:
                return CheckResult(False, "battery unknown")
            return CheckResult(pct >= r.min_battery_pct, f"{pct} % (need >= {r.min_battery_pct} %)")

        def place() -> CheckResult:
            pos, beacon = d.modem_state.position, self.beacon()
            fresh = pos is not None and time.time() - pos.fixed_at < 600
            if beacon is not None:
                return CheckResult(True, f"beacon {beacon.id} ({beacon.rssi:.0f} dBm)", required=r.require_place)
            if fresh:
                return CheckResult(True, "GNSS fix", required=r.require_place)
            return CheckResult(False, "no GNSS fix and no beacon", required=r.require_place)

        def button() -> CheckResult:
            if d.button is None:
                return CheckResult(False, "button not set up")
            pressed = d.button.button.is_pressed
            return CheckResult(not pressed, "button held or stuck at shift start" if pressed else "button released")

        return {"modem": modem, "signal": signal, "battery": battery, "place": place, "button": button}

"""The simulator's GNSS model: SIM7600 ``AT+CGPS``/``AT+CGPSINFO`` (SIMCom SIM7600 AT
manual, GNSS chapter) and Quectel ``AT+QGPS``/``AT+QGPSLOC`` (Quectel EC25 GNSS AT manual).
:class:`SimGnss` is a mixin of :class:`modem.simulator.ModemSimulator`.

Test-only: never used on the device.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

__all__ = ["SimGnss"]


class SimGnss:
    """GNSS engine state (on/off), the fix and its time; replies per flavour."""

    _lock: threading.RLock

    def _init_gnss(self) -> None:
        self._gnss_on = False
        self._fix: tuple[float, float, float] | None = None
        self.gnss_time = datetime(2026, 11, 30, 23, 5, 28, tzinfo=timezone.utc)
        #: ``"native"``: each manual's format for the command sent (``+CGPSINFO`` NMEA
        #: ``ddmm.mmmmmm``, ``+QGPSLOC`` mode 2 decimal degrees); ``"other"``: the other one
        #: (``+CGPSINFO`` in decimal degrees, ``+QGPSLOC`` as mode 0 ``ddmm.mmmmN`` even to
        #: ``AT+QGPSLOC=2``), as some firmware answers.
        self.gnss_format = "native"

    @property
    def gnss_fix(self) -> tuple[float, float, float] | None:
        """``(lat, lon, hdop)`` in decimal degrees, or None for no fix."""
        return self._fix

    @gnss_fix.setter
    def gnss_fix(self, value: tuple[float, float, float] | None) -> None:
        with self._lock:
            self._fix = value

    def _sim7600_gnss(self, up: str) -> tuple[list[str], str, list[str]]:
        if up in ("AT+CGPS=1", "AT+CGPS=0"):
            on = up.endswith("1")
            if on == self._gnss_on:
                return [], "ERROR", []  # SIM7600 answers ERROR when already in that state
            self._gnss_on = on
            return [], "OK", []
        if up == "AT+CGPS?":
            return [f"+CGPS: {int(self._gnss_on)},1"], "OK", []
        if up == "AT+CGPSINFO":
            if not self._gnss_on or self._fix is None:
                return ["+CGPSINFO: ,,,,,,,,"], "OK", []
            lat, lon, _hdop = self._fix
            t = self.gnss_time
            if self.gnss_format == "other":
                la, lo = f"{abs(lat):.6f}", f"{abs(lon):.6f}"
            else:
                la, lo = _dm(lat, 2), _dm(lon, 3)
            return [f"+CGPSINFO: {la},{'N' if lat >= 0 else 'S'},"
                    f"{lo},{'E' if lon >= 0 else 'W'},{t:%d%m%y},{t:%H%M%S}.0,"
                    "12.3,0.0,"], "OK", []
        return [], "ERROR", []

    def _quectel_gnss(self, up: str) -> tuple[list[str], str, list[str]]:
        if up in ("AT+QGPS=1", "AT+QGPSEND"):
            on = up == "AT+QGPS=1"
            if on and self._gnss_on:
                return [], self._cme(504), []
            if not on and not self._gnss_on:
                return [], self._cme(505), []
            self._gnss_on = on
            return [], "OK", []
        if up == "AT+QGPS?":
            return [f"+QGPS: {int(self._gnss_on)}"], "OK", []
        if up.startswith("AT+QGPSLOC"):
            if up != "AT+QGPSLOC=2":
                return [], self._cme(501), []
            if not self._gnss_on:
                return [], self._cme(505), []
            if self._fix is None:
                return [], self._cme(516), []
            lat, lon, hdop = self._fix
            t = self.gnss_time
            if self.gnss_format == "other":  # mode 0: ddmm.mmmmN / dddmm.mmmmE
                la = f"{_dm(lat, 2)[:9]}{'N' if lat >= 0 else 'S'}"
                lo = f"{_dm(lon, 3)[:10]}{'E' if lon >= 0 else 'W'}"
            else:
                la, lo = f"{lat:.5f}", f"{lon:.5f}"
            return [f"+QGPSLOC: {t:%H%M%S}.000,{la},{lo},{hdop:.1f},12.3,3,0.0,0.0,0.0,"
                    f"{t:%d%m%y},08"], "OK", []
        return [], "ERROR", []




def _dm(value: float, width: int) -> str:
    """Decimal degrees → NMEA ``ddmm.mmmmmm`` (width = digits of degrees)."""
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60
    return f"{degrees:0{width}d}{minutes:09.6f}"

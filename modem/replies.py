"""Pure parsing of AT replies: line classification (answer / final result code / URC), command
shapes, redaction of secrets, and the reply records (signal, registration, GNSS fix).

Sources: ITU-T V.250 (result codes), 3GPP TS 27.007 (``+CREG``/``+CGREG``/``+CEREG``, ``+CSQ``),
the SIM7600 AT manual (``+CGPSINFO``) and the Quectel EC25 GNSS manual (``+QGPSLOC``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import ModemReplyError

__all__ = [
    "TWO_LINE_URCS",
    "UERE_M",
    "URC_PREFIXES",
    "URC_WORDS",
    "GnssFix",
    "Registration",
    "Signal",
    "classify_line",
    "carries_secret",
    "command_shape",
    "parse_cgpsinfo",
    "parse_qgpsloc",
    "redact",
]

#: Metres of position error per unit of HDOP (a typical user-equivalent range error for a
#: consumer GNSS receiver). ``accuracy_m = HDOP × UERE_M`` when the modem gives nothing better.
UERE_M = 5.0
#: Largest HDOP a receiver reports (NMEA 0183 GSA/GGA: 0.5–99.9; some modems say 99.99 for
#: "very poor"): anything above is a garbled reply, never a fix.
MAX_HDOP = 100.0

_FINAL_OK = "OK"
_PROMPT = ">"
# Final failure codes of V.250 that only end dial/answer commands; elsewhere they are URCs.
_CALL_FINALS = frozenset({"NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE"})
_REG_FAMILY = frozenset({"+CREG", "+CGREG", "+CEREG", "+C5GREG"})
#: URCs followed by one more line (the SMS text or PDU) that belongs to them (27.005 §3.4.1).
TWO_LINE_URCS = frozenset({"+CMT", "+CDS", "+CBM"})
_MAX_LINE = 4096  # bytes without a line end before the buffer is taken as one (garbage) line

#: Whole-line URCs (SIM7600 and Quectel boot/power/call messages).
URC_WORDS = frozenset({
    "RING", "RDY", "SMS DONE", "PB DONE", "CALL READY", "SMS READY", "START",
    "NORMAL POWER DOWN", "POWERED DOWN", "UNDER-VOLTAGE POWER DOWN", "UNDER-VOLTAGE WARNING",
    "OVER-VOLTAGE POWER DOWN", "OVER-VOLTAGE WARNING", "NO CARRIER", "BUSY", "NO ANSWER",
})
#: Prefixes (before ``:``) of URCs. Some double as a command's answer (``+CREG``, ``+CPIN``,
#: ``+CGPSINFO``…): such a line is solicited only while that very command is pending.
URC_PREFIXES = frozenset({
    "+CMTI", "+CMT", "+CDS", "+CDSI", "+CBM", "+CBMI", "+CREG", "+CGREG", "+CEREG", "+C5GREG",
    "+CGEV", "+CPIN", "+CRING", "+CLIP", "+CCWA", "+CUSD", "+CTZV", "+CTZE", "+CIEV", "+CPSI",
    "+CGPSINFO", "+CGNSSINFO", "+SIMCARD", "+QIND", "+QUSIM", "+QGPSURC", "+QIURC", "+PSUTTZ",
    "*PSUTTZ", "^RSSI", "^MODE", "^BOOT", "^SYSSTART", "^SRVST", "DST",
})
#: Voice-call URCs (issue 11, :mod:`modem.calls`): SIM7600 ``VOICE CALL: BEGIN/END``,
#: ``MISSED_CALL``, ``+RXDTMF``; Quectel ``+QTONEDET``; unsolicited ``+CLCC`` (AT+CLCC=1).
URC_PREFIXES = URC_PREFIXES | frozenset({"VOICE CALL", "MISSED_CALL", "+RXDTMF", "+DTMF",
                                         "+QTONEDET", "+CLCC"})

_NAME_RE = re.compile(r"^AT([+^$*#%][A-Z0-9]+)", re.IGNORECASE)
# A command carrying a secret (27.007 §8.3 +CPIN, §7.5 +CPWD, §7.4 +CLCK), found anywhere in a
# line (an echo with noise in front, in lower case, with blanks, with its "AT" lost …): from
# the "=" on, everything to the end of the line is a secret.
_SECRET_RE = re.compile(r"((?:AT)?\s*\+\s*(?:CPIN2?|CPWD|CLCK)\s*=).*$", re.IGNORECASE)
_PIN_RE = re.compile(r"\d{4,8}")
_TECH_PREFIX = {"CREG": "+CREG", "CGREG": "+CGREG", "CEREG": "+CEREG"}

# 27.007 §7.2 <stat> → our state names (6/7/9/10 are the LTE "SMS only"/"CSFB" variants).
_REG_STATES = {
    0: "not_registered", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming",
    6: "home", 7: "roaming", 8: "emergency_only", 9: "home", 10: "roaming",
}
# Which unregistered state says most when no technology is registered.
_UNREG_RANK = ("denied", "emergency_only", "searching", "not_registered", "unknown")


def command_shape(cmd: str) -> tuple[str, str]:
    """Split ``AT+CREG?`` into (``"+CREG"``, ``"read"``).

    Kinds: ``"read"`` (``?``), ``"test"`` (``=?``), ``"set"`` (``=…``), ``"exec"`` (bare).
    Basic commands (``ATE0``, ``ATI``, ``ATD…``) give their letter as the name.
    """
    m = _NAME_RE.match(cmd)
    if m:
        name = m.group(1).upper()
        rest = cmd[m.end():]
    else:
        name = cmd[2:3].upper()
        rest = cmd[3:]
    if rest.startswith("=?"):
        return name, "test"
    if rest.startswith("?"):
        return name, "read"
    if rest.startswith("="):
        return name, "set"
    return name, "exec"


def _prefix(line: str) -> str:
    head, sep, _ = line.partition(":")
    return head.strip().upper() if sep else ""


def classify_line(line: str, pending: str | None) -> str:
    """Say what one received line (echo already removed) is, given the pending command or None.

    Returns ``"final"`` (ends the pending command), ``"info"`` (its information line), ``"urc"``
    (unsolicited: to the URC handler) or ``"stray"`` (a result code with nothing pending, e.g.
    the late ``OK`` of a command abandoned after shutdown; logged and dropped).

    Rules: ``+CREG: 1`` (one field) is the URC form; ``+CREG: 0,1`` is the solicited answer to
    ``AT+CREG?`` — the answer's second field is an unquoted ``<stat>`` while in the four/five
    field URC form it is the quoted ``<lac>``. Any registration line with no read/test of the
    same family pending is a URC.
    """
    upper = line.strip().upper()
    is_result = (upper in ("OK", "ERROR") or upper.startswith("+CME ERROR:")
                 or upper.startswith("+CMS ERROR:"))
    if pending is None:
        return "stray" if is_result else "urc"
    name, kind = command_shape(pending)
    if is_result:
        return "final"
    if upper in _CALL_FINALS:
        return "final" if name in ("D", "A", "O", "H") else "urc"
    prefix = _prefix(line)
    if prefix and prefix == name:
        if prefix in _REG_FAMILY:
            if kind == "test":
                return "info"
            if kind == "read":
                return "info" if _is_reg_answer(line) else "urc"
            return "urc"
        if prefix in URC_PREFIXES and kind == "set":
            return "urc"  # e.g. +CPIN: READY after AT+CPIN="…"
        return "info"
    if upper in URC_WORDS or (prefix and prefix in URC_PREFIXES):
        return "urc"
    return "info"


def _small_int(text: str, top: int) -> bool:
    text = text.strip()
    return text.isdigit() and len(text) <= 2 and int(text) <= top


def _is_reg_answer(line: str) -> bool:
    """Whether a ``+CREG``/``+CGREG``/``+CEREG`` line has the shape of the *answer* to the read
    command (3GPP TS 27.007 §7.2, §10.1.20, §10.1.22) rather than of the URC.

    Answer: ``<n>,<stat>[,[<lac|tac>],[<ci>][,<AcT>…]]`` with ``<n>`` 0–5 and ``<stat>`` 0–11;
    location fields only with ``<n>`` ≥ 2, so ``<n>`` 0/1 means exactly two fields, and with
    ``<n>`` ≥ 2 either two fields (not registered) or at least four. URC:
    ``<stat>[,[<lac>],[<ci>][,<AcT>]]`` — its second field is the area code, which some
    firmware sends unquoted and numeric (``+CEREG: 1,4660,"01C3D4E5",7``): by the field
    ranges and count that is not an answer.
    """
    fields = line.partition(":")[2].split(",")
    if len(fields) < 2 or not _small_int(fields[0], 5) or not _small_int(fields[1], 11):
        return False
    if int(fields[0]) <= 1:
        return len(fields) == 2
    return len(fields) == 2 or len(fields) >= 4


def redact(cmd: str) -> str:
    """A command or received line as it may appear in logs and error messages: whatever
    follows ``+CPIN=``/``+CPIN2=``/``+CPWD=``/``+CLCK=`` (3GPP TS 27.007 §8.3, §7.5, §7.4)
    replaced by ``***`` wherever it stands in the line, in any case, with or without blanks
    or the ``AT`` (``'x\\x00at+cpin= "1234"'`` → ``'x\\x00at+cpin=***'``)."""
    return _SECRET_RE.sub(r"\1***", cmd)


def carries_secret(line: str) -> bool:
    """True if ``line`` holds a secret-carrying command (see :func:`redact`). A modem never
    sends such a line of its own: it is an echo of ours, however mangled, and is dropped."""
    return _SECRET_RE.search(line) is not None


@dataclass(frozen=True)
class Signal:
    """Received signal from ``+CSQ``: ``rssi_dbm`` in dBm (−113…−51; None = 99, unknown) and
    ``ber`` the 27.007 bit-error-rate class 0–7 (None = 99, unknown)."""

    rssi_dbm: int | None
    ber: int | None


@dataclass(frozen=True)
class Registration:
    """Network registration: ``state`` one of ``home``, ``roaming``, ``searching``, ``denied``,
    ``not_registered``, ``emergency_only``, ``unknown``; ``technology`` the query it came from
    (``"CREG"`` circuit-switched, ``"CGREG"`` GPRS/UMTS, ``"CEREG"`` EPS/LTE); ``act`` the
    27.007 access technology (7 = E-UTRAN) when the modem reported one."""

    state: str
    technology: str
    act: int | None = None

    @property
    def registered(self) -> bool:
        return self.state in ("home", "roaming")


@dataclass(frozen=True)
class GnssFix:
    """A GNSS position: ``lat``/``lon`` in decimal degrees (WGS-84, south/west negative),
    ``accuracy_m`` estimated horizontal error in metres (HDOP × :data:`UERE_M`; None when the
    modem reports no HDOP, as SIM7600 ``+CGPSINFO`` does), ``fixed_at`` the fix time (UTC)."""

    lat: float
    lon: float
    accuracy_m: float | None
    fixed_at: datetime
    altitude_m: float | None = None
    hdop: float | None = None



def _one(cmd: str, lines: list[str], prefix: str) -> str:
    for line in lines:
        if _prefix(line) == prefix:
            return line
    raise ModemReplyError(cmd, " | ".join(lines) or "(nothing)", f"no {prefix}: line")


def _fields(cmd: str, line: str, minimum: int) -> list[str]:
    fields = [f.strip() for f in line.partition(":")[2].split(",")]
    if len(fields) < minimum:
        raise ModemReplyError(cmd, line, f"expected at least {minimum} fields")
    return fields


def _finite(cmd: str, line: str, text: str, what: str) -> float:
    """``float(text)`` that refuses ``nan``, ``inf`` and overflowing exponents: a modem reply
    carrying them is garbled, never a position (an infinite accuracy would make the alarm
    carrying it unencodable)."""
    try:
        value = float(text)
    except ValueError:
        raise ModemReplyError(cmd, line, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ModemReplyError(cmd, line, f"{what} {text!r} is not a finite number")
    return value


def _utc(cmd: str, line: str, ddmmyy: str, hhmmss: str) -> datetime:
    try:
        if len(ddmmyy) != 6 or len(hhmmss.split(".")[0]) != 6:
            raise ValueError
        day, month, year = int(ddmmyy[0:2]), int(ddmmyy[2:4]), 2000 + int(ddmmyy[4:6])
        seconds = _finite(cmd, line, hhmmss[4:], "seconds")
        whole = int(seconds)
        return datetime(year, month, day, int(hhmmss[0:2]), int(hhmmss[2:4]), whole,
                        int(round((seconds - whole) * 1e6)) % 1_000_000, tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise ModemReplyError(cmd, line, f"bad date/time {ddmmyy!r} {hhmmss!r}") from None


def _dm_to_degrees(cmd: str, line: str, value: str, hemi: str, max_deg: int) -> float:
    """NMEA ``ddmm.mmmm`` / ``dddmm.mmmm`` + N/S/E/W → signed decimal degrees."""
    v = _finite(cmd, line, value, "coordinate")
    degrees = int(v // 100)
    minutes = v - degrees * 100
    if minutes >= 60 or degrees > max_deg or v < 0:
        raise ModemReplyError(cmd, line, f"bad coordinate {value!r}")
    return _hemisphere(cmd, line, hemi, max_deg) * (degrees + minutes / 60)


def _hemisphere(cmd: str, line: str, hemi: str, max_deg: int) -> int:
    signs = {"N": 1, "E": 1, "S": -1, "W": -1}
    if hemi not in signs or (max_deg == 90) != (hemi in "NS"):
        raise ModemReplyError(cmd, line, f"bad hemisphere {hemi!r}")
    return signs[hemi]


def _coordinate(cmd: str, line: str, value: str, hemi: str, max_deg: int) -> float:
    """One coordinate with a separate hemisphere field, in either number format.

    NMEA ``ddmm.mmmm`` (SIM7600 AT manual ``+CGPSINFO``: ``<lat>`` ddmm.mmmmmm, ``<lon>``
    dddmm.mmmmmm, zero-padded) has at least 3 (latitude) / 4 (longitude) digits before the
    point; decimal degrees (what other SIM7600 firmware and ``AT+CGPSINFOCFG`` variants give)
    have at most 2 / 3. A value of the decimal form must lie within 0…90 / 0…180.
    """
    whole = value.strip().partition(".")[0]
    if whole.isdigit() and len(whole) <= (2 if max_deg == 90 else 3):
        v = _finite(cmd, line, value, "coordinate")
        if not 0 <= v <= max_deg:
            raise ModemReplyError(cmd, line, f"bad coordinate {value!r}")
        return _hemisphere(cmd, line, hemi, max_deg) * v
    return _dm_to_degrees(cmd, line, value, hemi, max_deg)


def _opt_float(text: str) -> float | None:
    """An optional number (altitude …): None when empty, unparsable or not finite."""
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def parse_cgpsinfo(cmd: str, line: str) -> GnssFix | None:
    """SIM7600 ``+CGPSINFO: <lat>,<N/S>,<lon>,<E/W>,<ddmmyy>,<hhmmss.s>,<alt>,<speed>,<course>``
    (SIMCom SIM7600 Series AT Command Manual, ``AT+CGPSINFO``); all fields empty = no fix.
    Coordinates in NMEA ``ddmm.mmmmmm`` or decimal degrees (:func:`_coordinate`). Raises
    ModemReplyError."""
    f = _fields(cmd, line, 6)
    if not any(f):
        return None
    lat = _coordinate(cmd, line, f[0], f[1], 90)
    lon = _coordinate(cmd, line, f[2], f[3], 180)
    return GnssFix(lat=lat, lon=lon, accuracy_m=None, fixed_at=_utc(cmd, line, f[4], f[5]),
                   altitude_m=_opt_float(f[6]) if len(f) > 6 else None)


def _qgps_coordinate(cmd: str, line: str, value: str, max_deg: int) -> float:
    """A ``+QGPSLOC`` coordinate: ``<mode>`` 2 signed decimal degrees (``-33.85678``) or
    ``<mode>`` 0/1 NMEA with the hemisphere glued on (``3150.7223N``, ``11711.929300E``)."""
    value = value.strip()
    if value[-1:].upper() in ("N", "S", "E", "W"):
        return _dm_to_degrees(cmd, line, value[:-1], value[-1].upper(), max_deg)
    v = _finite(cmd, line, value, "latitude" if max_deg == 90 else "longitude")
    if not -max_deg <= v <= max_deg:
        raise ModemReplyError(cmd, line, "coordinates or HDOP out of range")
    return v


def parse_qgpsloc(cmd: str, line: str) -> GnssFix:
    """Quectel ``+QGPSLOC: <hhmmss.sss>,<lat>,<lon>,<hdop>,<alt>,<fix>,<cog>,<spkm>,<spkn>,
    <ddmmyy>,<nsat>`` (Quectel EC25 GNSS AT Commands Manual, ``AT+QGPSLOC``). Coordinates as
    ``<mode>`` 2 gives them (signed decimal degrees) or as ``<mode>`` 0/1 does (NMEA
    ``ddmm.mmmmN``/``dddmm.mmmmE``, which some firmware answers even to ``=2``), also with the
    hemisphere as a field of its own (``3150.7223,N,11711.9293,E,…``). Raises
    ModemReplyError."""
    f = _fields(cmd, line, 11)
    if len(f) >= 13 and f[2].upper() in ("N", "S") and f[4].upper() in ("E", "W"):
        f = [f[0], f[1] + f[2], f[3] + f[4], *f[5:]]
    lat, lon = _qgps_coordinate(cmd, line, f[1], 90), _qgps_coordinate(cmd, line, f[2], 180)
    hdop = _finite(cmd, line, f[3], "HDOP")
    if not 0 <= hdop <= MAX_HDOP:
        raise ModemReplyError(cmd, line, "coordinates or HDOP out of range")
    return GnssFix(lat=lat, lon=lon, accuracy_m=round(hdop * UERE_M, 1),
                   fixed_at=_utc(cmd, line, f[9], f[0]), altitude_m=_opt_float(f[4]), hdop=hdop)

"""AT-command driver for the device's cellular modem (SIMCom SIM7600 / Quectel EC25 style).

Source: SPEC §2 "Modem driver"; framing, result codes, ``+CME ERROR``, ``+CREG``/``+CGREG``/
``+CEREG`` and ``+CSQ`` per 3GPP TS 27.007; ``+CMS ERROR`` per 3GPP TS 27.005; GNSS commands per
the SIM7600 AT manual (``AT+CGPSINFO``) and the Quectel EC25 GNSS manual (``AT+QGPSLOC=2``).

Threading model: one reader thread owns the read side of the port and turns bytes into lines.
Every line is classified against the command that is pending *right now* (:func:`classify_line`):
echo of that command (dropped), its final result code, one of its information lines, or an
unsolicited result code (URC) which goes to ``urc_handler`` and is never taken as an answer.
:meth:`Modem.command` writes a command, then waits on an event for the final result code.
Parsing of replies happens in the caller's thread, so a garbled reply raises
:class:`ModemReplyError` there and never hurts the reader thread.

The ``urc_handler`` runs in the reader thread: keep it short (hand the line to a queue or an
event loop) and never call :meth:`Modem.command` from it (that raises ``RuntimeError``). An
exception it raises is logged and counted in :attr:`Modem.urc_handler_errors`, never fatal.
Two-line URCs (``+CMT``/``+CDS``/``+CBM`` with the SMS on the next line) reach it as one string
joined by ``\n``.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal

import serial

from device.modem import sms
from protocol.errors import LonewatchError

__all__ = [
    "CmeError",
    "CmsError",
    "GnssFix",
    "Modem",
    "ModemError",
    "ModemGone",
    "ModemReplyError",
    "ModemTimeout",
    "Registration",
    "Signal",
    "SimLocked",
    "classify_line",
    "CME_MEANINGS",
    "CMS_MEANINGS",
    "parse_error_line",
]

log = logging.getLogger(__name__)

Flavour = Literal["sim7600", "quectel"]
FLAVOURS = ("auto", "sim7600", "quectel")

#: Metres of position error per unit of HDOP (a typical user-equivalent range error for a
#: consumer GNSS receiver). ``accuracy_m = HDOP × UERE_M`` when the modem gives nothing better.
UERE_M = 5.0

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

_NAME_RE = re.compile(r"^AT([+^$*#%][A-Z0-9]+)", re.IGNORECASE)
_SECRET_RE = re.compile(r"^(AT\+(?:CPIN2?|CPWD|CLCK)=).*$", re.IGNORECASE)
_PIN_RE = re.compile(r"\d{4,8}")
_TECH_PREFIX = {"CREG": "+CREG", "CGREG": "+CGREG", "CEREG": "+CEREG"}

# 27.007 §7.2 <stat> → our state names (6/7/9/10 are the LTE "SMS only"/"CSFB" variants).
_REG_STATES = {
    0: "not_registered", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming",
    6: "home", 7: "roaming", 8: "emergency_only", 9: "home", 10: "roaming",
}
# Which unregistered state says most when no technology is registered.
_UNREG_RANK = ("denied", "emergency_only", "searching", "not_registered", "unknown")


# -- errors ----------------------------------------------------------------------------------------

#: 3GPP TS 27.007 §9.2 ``+CME ERROR`` codes; 500+ are manufacturer-specific (Quectel GNSS here).
CME_MEANINGS: dict[int, str] = {
    0: "phone failure", 1: "no connection to phone", 2: "phone-adaptor link reserved",
    3: "operation not allowed", 4: "operation not supported", 5: "PH-SIM PIN required",
    6: "PH-FSIM PIN required", 7: "PH-FSIM PUK required", 10: "SIM not inserted",
    11: "SIM PIN required", 12: "SIM PUK required", 13: "SIM failure", 14: "SIM busy",
    15: "SIM wrong", 16: "incorrect password", 17: "SIM PIN2 required", 18: "SIM PUK2 required",
    20: "memory full", 21: "invalid index", 22: "not found", 23: "memory failure",
    24: "text string too long", 25: "invalid characters in text string",
    26: "dial string too long", 27: "invalid characters in dial string",
    30: "no network service", 31: "network timeout",
    32: "network not allowed - emergency calls only",
    40: "network personalization PIN required", 41: "network personalization PUK required",
    100: "unknown", 103: "illegal MS", 106: "illegal ME", 107: "GPRS services not allowed",
    111: "PLMN not allowed", 112: "location area not allowed",
    113: "roaming not allowed in this location area",
    501: "invalid parameter(s)", 502: "operation not supported", 503: "GNSS subsystem busy",
    504: "session is ongoing", 505: "session not active", 506: "operation timeout",
    507: "function not enabled", 508: "time information error", 516: "not fixed now",
    549: "unknown error",
}

#: 3GPP TS 27.005 §3.2.5 ``+CMS ERROR`` codes (0–127 are network causes of TS 24.011/23.040).
CMS_MEANINGS: dict[int, str] = {
    1: "unassigned (unallocated) number", 8: "operator determined barring", 10: "call barred",
    21: "short message transfer rejected", 27: "destination out of service",
    28: "unidentified subscriber", 29: "facility rejected", 30: "unknown subscriber",
    38: "network out of order", 41: "temporary failure", 42: "congestion",
    47: "resources unavailable, unspecified", 50: "requested facility not subscribed",
    69: "requested facility not implemented", 96: "invalid mandatory information",
    111: "protocol error, unspecified", 127: "interworking, unspecified",
    300: "ME failure", 301: "SMS service of ME reserved", 302: "operation not allowed",
    303: "operation not supported", 304: "invalid PDU mode parameter",
    305: "invalid text mode parameter", 310: "SIM not inserted", 311: "SIM PIN required",
    312: "PH-SIM PIN required", 313: "SIM failure", 314: "SIM busy", 315: "SIM wrong",
    316: "SIM PUK required", 317: "SIM PIN2 required", 318: "SIM PUK2 required",
    320: "memory failure", 321: "invalid memory index", 322: "memory full",
    330: "SMSC address unknown", 331: "no network service", 332: "network timeout",
    340: "no +CNMA acknowledgement expected", 500: "unknown error",
}


class ModemError(LonewatchError):
    """Root of modem errors; raised itself for a plain ``ERROR`` final result code."""


class ModemTimeout(ModemError, TimeoutError):
    """No final result code within the command's timeout."""


class ModemGone(ModemError, ConnectionError):
    """The serial port vanished (USB unplug/re-enumeration, EOF) or the modem is closed."""


class ModemReplyError(ModemError, ValueError):
    """A reply line the driver cannot parse. Attributes: ``command``, ``line``, ``reason``."""

    def __init__(self, command: str, line: str, reason: str) -> None:
        self.command = command
        self.line = line
        self.reason = reason
        super().__init__(f"{command}: cannot parse reply {line!r}: {reason}")


class SimLocked(ModemError):
    """The SIM is not READY after init: ``state`` is the ``+CPIN`` text (``"SIM PIN"``…)."""

    def __init__(self, state: str) -> None:
        self.state = state
        super().__init__(f"SIM not ready: {state}")


class _CodedError(ModemError):
    prefix = ""

    def __init__(self, code: int | None, meaning: str, command: str = "") -> None:
        self.code = code
        self.meaning = meaning
        self.command = command
        where = f"{command}: " if command else ""
        number = "" if code is None else f" {code}"
        super().__init__(f"{where}{self.prefix}{number} ({meaning})")


class CmeError(_CodedError):
    """``+CME ERROR: <n>`` (27.007): ``code`` (None if the verbose text is not in the table),
    ``meaning`` (table text or the modem's verbose text), ``command`` (redacted)."""

    prefix = "+CME ERROR"


class CmsError(_CodedError):
    """``+CMS ERROR: <n>`` (27.005): ``code``, ``meaning``, ``command`` as for CmeError."""

    prefix = "+CMS ERROR"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


_CME_BY_TEXT = {_norm(v): k for k, v in CME_MEANINGS.items()}
_CMS_BY_TEXT = {_norm(v): k for k, v in CMS_MEANINGS.items()}


def parse_error_line(line: str, command: str = "") -> CmeError | CmsError | None:
    """``+CME ERROR: 10`` or ``+CME ERROR: SIM not inserted`` → CmeError(10, "SIM not
    inserted"); same for ``+CMS ERROR``; None for any other line."""
    upper = line.upper()
    if upper.startswith("+CME ERROR:"):
        cls: type[CmeError] | type[CmsError] = CmeError
        table, by_text = CME_MEANINGS, _CME_BY_TEXT
    elif upper.startswith("+CMS ERROR:"):
        cls, table, by_text = CmsError, CMS_MEANINGS, _CMS_BY_TEXT
    else:
        return None
    text = line.partition(":")[2].strip()
    if text.isdigit():
        code = int(text)
        return cls(code, table.get(code, "unlisted error code"), command)
    return cls(by_text.get(_norm(text)), text or "no text", command)


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
                fields = line.partition(":")[2].split(",")
                solicited = len(fields) >= 2 and fields[1].strip().isdigit()
                return "info" if solicited else "urc"
            return "urc"
        if prefix in URC_PREFIXES and kind == "set":
            return "urc"  # e.g. +CPIN: READY after AT+CPIN="…"
        return "info"
    if upper in URC_WORDS or (prefix and prefix in URC_PREFIXES):
        return "urc"
    return "info"


def redact(cmd: str) -> str:
    """A command as it may appear in logs and error messages: PINs/passwords replaced."""
    return _SECRET_RE.sub(r"\1***", cmd)


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


@dataclass(eq=False)
class _Pending:
    cmd: str
    display: str
    expect_prompt: bool = False
    echo: frozenset[str] = frozenset()
    lines: list[str] = field(default_factory=list)
    final: str | None = None
    gone: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Modem:
    """An AT modem on a serial port (SPEC §2).

    Args:
        port: serial device, e.g. ``/dev/ttyUSB2`` or a simulator's pty.
        baudrate: line speed (USB modems ignore it).
        urc_handler: called in the reader thread with each unsolicited line (``"+CMTI: …"``).
        default_timeout_s: per-command timeout in seconds when ``command`` gets none.
        serial_factory: builds the port (``serial.Serial`` signature); swap for tests.
        flavour: ``"sim7600"``, ``"quectel"`` or ``"auto"`` (ask ``ATI``/``AT+CGMM`` once).
        sim_busy_retries: how often ``+CME ERROR: 14`` (SIM busy) is retried.
        sim_busy_backoff_s: first back-off in seconds; doubles each retry, at most 8 s.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        *,
        urc_handler: Callable[[str], None] | None = None,
        default_timeout_s: float = 5.0,
        serial_factory: Callable[..., Any] = serial.Serial,
        flavour: str = "auto",
        sim_busy_retries: int = 5,
        sim_busy_backoff_s: float = 1.0,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(
                f"unknown modem flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
        self.port = port
        self.baudrate = baudrate
        self.urc_handler = urc_handler
        self.default_timeout_s = default_timeout_s
        self.sim_busy_retries = sim_busy_retries
        self.sim_busy_backoff_s = sim_busy_backoff_s
        self._serial_factory = serial_factory
        self._flavour_setting = flavour
        self._flavour: Flavour | None = (
            None if flavour == "auto" else flavour)  # type: ignore[assignment]
        self._serial: Any = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._state_lock = threading.Lock()
        self._cmd_lock = threading.RLock()  # held across both halves of AT+CMGS
        self._pending: _Pending | None = None
        self._urc_head: str | None = None  # reader thread only
        self._gone: str | None = None
        #: 2 verbose ``+CME ERROR: <text>``, 1 numeric, 0 plain ``ERROR`` (set by :meth:`init`).
        self.error_mode = 0
        #: Exceptions raised by ``urc_handler`` (logged, never fatal).
        self.urc_handler_errors = 0
        self._sms_pdu_mode = False
        self._sms_reference = random.randrange(256)

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open the port and start the reader thread. Raises ModemGone if the port is absent."""
        if self._serial is not None:
            return
        try:
            ser = self._serial_factory(self.port, self.baudrate, timeout=0.05,
                                       write_timeout=self.default_timeout_s)
        except (serial.SerialException, OSError) as exc:
            raise ModemGone(f"cannot open {self.port}: {exc}") from exc
        self._serial = ser
        self._sms_pdu_mode = False
        self._urc_head = None
        self._stop.clear()
        self._gone = None
        self._reader = threading.Thread(target=self._read_loop, name=f"modem-reader {self.port}",
                                        daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Stop the reader thread and close the port; a waiting command raises ModemGone."""
        self._stop.set()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join()
        self._reader = None
        self._fail_pending("modem closed")
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                pass
            self._serial = None

    def reopen(self) -> None:
        """Close and open again (after USB re-enumeration). Raises ModemGone if still absent."""
        self.close()
        self.open()

    @property
    def gone(self) -> bool:
        """True once the port vanished (serial error or EOF) until :meth:`reopen`."""
        return self._gone is not None

    def __enter__(self) -> Modem:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reader thread -----------------------------------------------------------------------

    def _read_loop(self) -> None:
        ser = self._serial
        buf = bytearray()
        while not self._stop.is_set():
            try:
                chunk = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if not self._stop.is_set():
                    log.warning("modem port %s vanished: %s", self.port, exc)
                    self._gone = f"port {self.port} vanished: {exc}"
                    self._fail_pending(self._gone)
                return
            if not chunk:
                continue
            buf += chunk
            while True:
                cut = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
                if cut < 0 and len(buf) > _MAX_LINE:
                    cut = len(buf)
                if cut < 0:
                    break
                raw = bytes(buf[:cut])
                del buf[:cut + 1]
                line = raw.decode("utf-8", errors="replace").strip()
                if line:
                    self._on_line(line)
            if buf.strip() == b">":
                with self._state_lock:
                    p = self._pending
                    if p is not None and p.expect_prompt:
                        buf.clear()
                        self._finish(p, _PROMPT)

    def _on_line(self, line: str) -> None:
        if self._urc_head is not None:  # second line of +CMT/+CDS/+CBM
            head, self._urc_head = self._urc_head, None
            self._deliver_urc(f"{head}\n{line}")
            return
        with self._state_lock:
            p = self._pending
            if p is not None and (line == p.cmd or line in p.echo):
                log.debug("modem echo %s", p.display)
                return
            if line == _PROMPT:
                if p is not None and p.expect_prompt:
                    self._finish(p, _PROMPT)
                else:
                    log.info("modem: dropped a late '> ' prompt")
                return
            kind = classify_line(line, p.cmd if p is not None else None)
            if kind == "final" and p is not None:
                log.debug("modem < %s", line)
                self._finish(p, line)
                return
            if kind == "info" and p is not None:
                log.debug("modem < %s", line)
                p.lines.append(line)
                return
        if kind == "stray":
            log.info("modem: dropped stray result %r (no command pending)", line)
            return
        if _prefix(line) in TWO_LINE_URCS:
            self._urc_head = line
            return
        self._deliver_urc(line)

    def _deliver_urc(self, line: str) -> None:
        log.debug("modem URC %s", line.partition("\n")[0])
        if self.urc_handler is not None:
            try:
                self.urc_handler(line)
            except Exception:  # a failing callback is counted, never fatal
                self.urc_handler_errors += 1
                log.exception("modem URC handler failed on %r", line)

    def _finish(self, p: _Pending, final: str) -> None:
        """Complete ``p`` (state lock held)."""
        p.final = final
        if self._pending is p:
            self._pending = None
        p.done.set()

    def _fail_pending(self, reason: str) -> None:
        with self._state_lock:
            p = self._pending
            self._pending = None
        if p is not None:
            p.gone = reason
            p.done.set()

    # -- commands ----------------------------------------------------------------------------

    def command(self, cmd: str, timeout_s: float | None = None) -> list[str]:
        """Send one AT command and return its information lines (URCs and echo removed).

        Args:
            cmd: the command without line ending, e.g. ``"AT+CSQ"``.
            timeout_s: seconds to wait for the final result code (default ``default_timeout_s``).
        Raises:
            CmeError / CmsError: ``+CME ERROR: n`` / ``+CMS ERROR: n`` (numeric or verbose).
            ModemError: plain ``ERROR`` (or ``NO CARRIER`` … for dial commands).
            ModemTimeout: no final result code in time.
            ModemGone: the port vanished or the modem is closed.
        """
        return self._transact(cmd, timeout_s)

    def _transact(self, cmd: str, timeout_s: float | None, *, expect_prompt: bool = False,
                  payload: bytes | None = None, echo: frozenset[str] = frozenset()) -> list[str]:
        if threading.current_thread() is self._reader:
            raise RuntimeError("Modem.command() called from the URC handler (reader thread)")
        if payload is None and ("\r" in cmd or "\n" in cmd or not cmd[:2].upper() == "AT"):
            raise ValueError(f"not a single AT command: {redact(cmd)!r}")
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        display = redact(cmd)
        with self._cmd_lock:
            self._check_usable()
            with self._state_lock:
                zombie = self._pending
            if zombie is not None:
                # The previous command timed out but the modem may still answer it: let it
                # finish (or give up on it) before speaking, so its late OK is not ours.
                zombie.done.wait(timeout)
                with self._state_lock:
                    if self._pending is zombie:
                        self._pending = None
                self._check_usable()
            p = _Pending(cmd=cmd, display=display, expect_prompt=expect_prompt, echo=echo)
            with self._state_lock:
                self._pending = p
            data = payload if payload is not None else (cmd + "\r").encode("ascii")
            log.debug("modem > %s", display)
            try:
                self._serial.write(data)
            except (serial.SerialException, OSError) as exc:
                self._gone = f"port {self.port} vanished: {exc}"
                self._fail_pending(self._gone)
                raise ModemGone(f"{display}: {self._gone}") from exc
            if not p.done.wait(timeout):
                raise ModemTimeout(f"{display}: no final result code within {timeout:g} s")
        if p.gone is not None:
            raise ModemGone(f"{display}: {p.gone}")
        final = p.final or ""
        if final in (_FINAL_OK, _PROMPT):
            return p.lines
        err = parse_error_line(final, display)
        if err is not None:
            raise err
        raise ModemError(f"{display}: {final}")

    def _check_usable(self) -> None:
        if self._gone is not None:
            raise ModemGone(self._gone)
        if self._serial is None:
            raise ModemGone(f"modem on {self.port} is not open")

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise ModemGone(f"modem on {self.port} closed")

    # -- set-up and SIM ----------------------------------------------------------------------

    def init(self, pin: str | None = None) -> str:
        """Bring the modem into a known state and unlock the SIM.

        Sequence: ``AT`` (3 tries, the first may be eaten by auto-baud), ``ATE0``,
        ``AT+CMEE=2`` (falling back to ``=1``, then plain ``ERROR`` if unsupported),
        ``AT+CPIN?`` with SIM-busy back-off, ``AT+CPIN="…"`` if a PIN is needed and given.
        Registration URC settings are left as they are: they are routed to the URC handler and
        :meth:`registration` reads either form. Returns ``"READY"``.

        Raises:
            SimLocked: the SIM needs a PIN that was not given, or a PUK.
            CmeError: e.g. 10 SIM not inserted, 16 incorrect password.
            ModemTimeout / ModemGone.
        """
        for attempt in range(3):
            try:
                self.command("AT", timeout_s=min(self.default_timeout_s, 2.0))
                break
            except ModemTimeout:
                if attempt == 2:
                    raise
        self.command("ATE0")
        self.error_mode = 0
        for mode in (2, 1):
            try:
                self.command(f"AT+CMEE={mode}")
            except (ModemTimeout, ModemGone):
                raise
            except ModemError as exc:
                log.info("modem does not take AT+CMEE=%d: %s", mode, exc)
                continue
            self.error_mode = mode
            break
        state = self.sim_state()
        if state in ("SIM PIN",) and pin is not None:
            self.enter_pin(pin)
            state = self.sim_state()
        if state != "READY":
            raise SimLocked(state)
        return state

    def sim_state(self) -> str:
        """``AT+CPIN?`` → ``"READY"``, ``"SIM PIN"``, ``"SIM PUK"``, … (the text after
        ``+CPIN:``). ``+CME ERROR: 14`` (SIM busy) is retried with back-off."""
        lines = self._retry_sim_busy("AT+CPIN?")
        for line in lines:
            if _prefix(line) == "+CPIN":
                value = line.partition(":")[2].strip()
                if value:
                    return value
        raise ModemReplyError("AT+CPIN?", " | ".join(lines), "no +CPIN: line")

    def enter_pin(self, pin: str) -> None:
        """Unlock the SIM with ``pin`` (4–8 digits). The PIN never reaches logs or errors.

        Raises CmeError 16 (incorrect password), 12 (SIM PUK required) …; ValueError if the PIN
        is not 4–8 digits."""
        if not isinstance(pin, str) or not _PIN_RE.fullmatch(pin):
            raise ValueError("SIM PIN must be 4-8 digits")
        self._retry_sim_busy(f'AT+CPIN="{pin}"')

    def _retry_sim_busy(self, cmd: str) -> list[str]:
        for attempt in range(self.sim_busy_retries + 1):
            try:
                return self.command(cmd)
            except CmeError as exc:
                if exc.code != 14 or attempt == self.sim_busy_retries:
                    raise
                delay = min(self.sim_busy_backoff_s * 2 ** attempt, 8.0)
                log.info("SIM busy on %s; retrying in %.2f s", redact(cmd), delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- queries -----------------------------------------------------------------------------

    def signal(self) -> Signal:
        """``AT+CSQ`` → :class:`Signal`; dBm = −113 + 2·n for n 0–31, 99 → None. (SIM7600 also
        reports 100–191 for TD-SCDMA: dBm = n − 216; 199 → None.) Raises ModemReplyError."""
        cmd = "AT+CSQ"
        line = _one(cmd, self.command(cmd), "+CSQ")
        fields = _fields(cmd, line, 2)
        try:
            n, ber = int(fields[0]), int(fields[1])
        except ValueError:
            raise ModemReplyError(cmd, line, "fields are not integers") from None
        if 0 <= n <= 31:
            dbm: int | None = -113 + 2 * n
        elif 100 <= n <= 191:
            dbm = n - 216
        elif n in (99, 199):
            dbm = None
        else:
            raise ModemReplyError(cmd, line, f"rssi {n} out of range")
        if not (0 <= ber <= 7 or ber == 99):
            raise ModemReplyError(cmd, line, f"ber {ber} out of range")
        return Signal(rssi_dbm=dbm, ber=None if ber == 99 else ber)

    def registration(self) -> Registration:
        """Ask ``AT+CREG?``, ``AT+CGREG?`` and ``AT+CEREG?`` and combine them.

        Registered on any one counts (an LTE-only modem is often registered on CEREG alone);
        preference CEREG > CGREG > CREG. If none is registered the most telling state wins
        (denied > emergency_only > searching > not_registered > unknown). A query the modem
        rejects with ERROR is skipped; if all are rejected the last error is raised.
        """
        found: list[Registration] = []
        last_error: ModemError | None = None
        for tech in ("CEREG", "CGREG", "CREG"):
            cmd = f"AT+{tech}?"
            try:
                lines = self.command(cmd)
            except (ModemTimeout, ModemGone):
                raise
            except ModemError as exc:
                last_error = exc
                continue
            line = _one(cmd, lines, _TECH_PREFIX[tech])
            fields = _fields(cmd, line, 2)
            try:
                stat = int(fields[1])
            except ValueError:
                raise ModemReplyError(cmd, line, "<stat> is not an integer") from None
            if stat not in _REG_STATES:
                raise ModemReplyError(cmd, line, f"<stat> {stat} unknown")
            act = None
            if len(fields) >= 5 and fields[4].strip().isdigit():
                act = int(fields[4])
            found.append(Registration(_REG_STATES[stat], tech, act))
        for reg in found:
            if reg.registered:
                return reg
        if not found:
            raise last_error or ModemError("no registration query answered")
        return min(found, key=lambda r: _UNREG_RANK.index(r.state))

    # -- GNSS ----------------------------------------------------------------------------------

    @property
    def flavour(self) -> Flavour:
        """``"sim7600"`` or ``"quectel"``; with ``flavour="auto"`` asked once via ATI/AT+CGMM."""
        if self._flavour is None:
            self._flavour = self._detect_flavour()
        return self._flavour

    def _detect_flavour(self) -> Flavour:
        seen: list[str] = []
        for cmd in ("ATI", "AT+CGMM"):
            try:
                text = " ".join(self.command(cmd)).lower()
            except (ModemTimeout, ModemGone):
                raise
            except ModemError:
                continue
            seen.append(text)
            if "simcom" in text or "sim7" in text:
                return "sim7600"
            if "quectel" in text or re.search(r"\b(ec2|eg2|eg9|bg9|em0|ep0)", text):
                return "quectel"
        raise ModemError(f"cannot tell the modem's flavour from ATI/AT+CGMM: {seen!r}; "
                         "set flavour='sim7600' or 'quectel'")

    def start_gnss(self) -> None:
        """Switch the GNSS engine on (``AT+CGPS=1`` / ``AT+QGPS=1``); already on is fine."""
        try:
            if self.flavour == "sim7600":
                self.command("AT+CGPS=1")
            else:
                self.command("AT+QGPS=1")
        except CmeError as exc:
            if exc.code != 504:  # Quectel: session is ongoing
                raise
        except (ModemTimeout, ModemGone):
            raise
        except ModemError:
            if self.flavour != "sim7600":
                raise
            # SIM7600 answers plain ERROR when GNSS is already on: check.
            line = _one("AT+CGPS?", self.command("AT+CGPS?"), "+CGPS")
            if not _fields("AT+CGPS?", line, 1)[0].strip() == "1":
                raise

    def gnss(self) -> GnssFix | None:
        """Current GNSS fix, or None when there is none yet.

        SIM7600: ``AT+CGPSINFO`` (``,,,,,,,,`` = no fix; no HDOP, so ``accuracy_m`` is None).
        Quectel: ``AT+QGPSLOC=2`` (``+CME ERROR: 516`` = no fix; accuracy = HDOP × 5 m).
        Raises ModemReplyError on a garbled reply; CmeError e.g. 505 when GNSS is off.
        """
        if self.flavour == "sim7600":
            cmd = "AT+CGPSINFO"
            return parse_cgpsinfo(cmd, _one(cmd, self.command(cmd), "+CGPSINFO"))
        cmd = "AT+QGPSLOC=2"
        try:
            lines = self.command(cmd)
        except CmeError as exc:
            if exc.code == 516:  # "Not fixed now"
                return None
            raise
        return parse_qgpsloc(cmd, _one(cmd, lines, "+QGPSLOC"))

    # -- SMS -----------------------------------------------------------------------------------

    def send_sms(self, number: str, text: str, timeout_s: float = 60.0) -> list[int]:
        """Send ``text`` to ``number`` (``"+45…"``) in PDU mode, GSM 7-bit or UCS2 chosen by
        :mod:`device.modem.sms`, split into concatenated parts when long.

        Per part: ``AT+CMGS=<length>`` → ``> `` prompt → PDU hex + Ctrl-Z → ``+CMGS: <mr>``
        ``OK``, each step within ``timeout_s`` seconds (the network can take tens of seconds).
        Returns the message references, one per part. The text is never logged.

        Raises:
            sms.SmsError: bad number / empty text (nothing sent).
            CmsError: e.g. 330 SMSC address unknown, 331 no network service.
            ModemTimeout (text entry is cancelled with ESC), ModemGone, ModemReplyError.
        """
        self._sms_reference = (self._sms_reference + 1) % 256
        pdus = sms.encode_submit(number, text, reference=self._sms_reference)
        refs = []
        with self._cmd_lock:
            if not self._sms_pdu_mode:
                self.command("AT+CMGF=0")
                self._sms_pdu_mode = True
            for pdu in pdus:
                cmd = f"AT+CMGS={pdu.tpdu_length}"
                try:
                    self._transact(cmd, timeout_s, expect_prompt=True)
                except ModemTimeout:
                    self._cancel_text_entry()
                    raise
                lines = self._transact(cmd, timeout_s, payload=pdu.hex.encode() + b"\x1a",
                                       echo=frozenset({pdu.hex}))
                line = _one(cmd, lines, "+CMGS")
                try:
                    refs.append(int(_fields(cmd, line, 1)[0]))
                except ValueError:
                    raise ModemReplyError(cmd, line, "message reference is not a number") from None
        return refs

    def _cancel_text_entry(self) -> None:
        """After the ``> `` prompt did not come in time: abandon that wait and send ESC, which
        ends text entry without sending (the modem answers ``OK``), so a late prompt cannot
        swallow the next command."""
        with self._state_lock:
            self._pending = None
        try:
            self._transact("<ESC>", self.default_timeout_s, payload=b"\x1b")
        except ModemError as exc:
            log.info("modem: no answer to ESC after a missing SMS prompt: %s", exc)


# -- reply parsing (pure) ------------------------------------------------------------------------


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


def _utc(cmd: str, line: str, ddmmyy: str, hhmmss: str) -> datetime:
    try:
        if len(ddmmyy) != 6 or len(hhmmss.split(".")[0]) != 6:
            raise ValueError
        day, month, year = int(ddmmyy[0:2]), int(ddmmyy[2:4]), 2000 + int(ddmmyy[4:6])
        seconds = float(hhmmss[4:])
        whole = int(seconds)
        return datetime(year, month, day, int(hhmmss[0:2]), int(hhmmss[2:4]), whole,
                        int(round((seconds - whole) * 1e6)) % 1_000_000, tzinfo=timezone.utc)
    except ValueError:
        raise ModemReplyError(cmd, line, f"bad date/time {ddmmyy!r} {hhmmss!r}") from None


def _dm_to_degrees(cmd: str, line: str, value: str, hemi: str, max_deg: int) -> float:
    """NMEA ``ddmm.mmmm`` / ``dddmm.mmmm`` + N/S/E/W → signed decimal degrees."""
    try:
        v = float(value)
    except ValueError:
        raise ModemReplyError(cmd, line, f"bad coordinate {value!r}") from None
    degrees = int(v // 100)
    minutes = v - degrees * 100
    if minutes >= 60 or degrees > max_deg or v < 0:
        raise ModemReplyError(cmd, line, f"bad coordinate {value!r}")
    signs = {"N": 1, "E": 1, "S": -1, "W": -1}
    if hemi not in signs or (max_deg == 90) != (hemi in "NS"):
        raise ModemReplyError(cmd, line, f"bad hemisphere {hemi!r}")
    return signs[hemi] * (degrees + minutes / 60)


def _opt_float(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def parse_cgpsinfo(cmd: str, line: str) -> GnssFix | None:
    """SIM7600 ``+CGPSINFO: <lat>,<N/S>,<lon>,<E/W>,<ddmmyy>,<hhmmss.s>,<alt>,<speed>,<course>``;
    all fields empty = no fix. Raises ModemReplyError."""
    f = _fields(cmd, line, 6)
    if not any(f):
        return None
    lat = _dm_to_degrees(cmd, line, f[0], f[1], 90)
    lon = _dm_to_degrees(cmd, line, f[2], f[3], 180)
    return GnssFix(lat=lat, lon=lon, accuracy_m=None, fixed_at=_utc(cmd, line, f[4], f[5]),
                   altitude_m=_opt_float(f[6]) if len(f) > 6 else None)


def parse_qgpsloc(cmd: str, line: str) -> GnssFix:
    """Quectel ``+QGPSLOC: <hhmmss.sss>,<lat>,<lon>,<hdop>,<alt>,<fix>,<cog>,<spkm>,<spkn>,
    <ddmmyy>,<nsat>`` (mode 2: signed decimal degrees). Raises ModemReplyError."""
    f = _fields(cmd, line, 11)
    try:
        lat, lon, hdop = float(f[1]), float(f[2]), float(f[3])
    except ValueError:
        raise ModemReplyError(cmd, line, "latitude/longitude/HDOP not numbers") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and hdop >= 0):
        raise ModemReplyError(cmd, line, "coordinates or HDOP out of range")
    return GnssFix(lat=lat, lon=lon, accuracy_m=round(hdop * UERE_M, 1),
                   fixed_at=_utc(cmd, line, f[9], f[0]), altitude_m=_opt_float(f[4]), hdop=hdop)

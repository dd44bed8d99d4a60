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

Parsing lives in :mod:`modem.replies`, errors in :mod:`modem.errors`; both are
re-exported here so ``from modem.at import Modem, ModemError, ModemGone, …`` keeps working.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import serial

from modem import sms

from .errors import (
    CME_MEANINGS,
    CMS_MEANINGS,
    CmeError,
    CmsError,
    ModemError,
    ModemGone,
    ModemReplyError,
    ModemTimeout,
    SimLocked,
    parse_error_line,
)
from .port import PortLocator
from .replies import (
    _MAX_LINE,
    _PIN_RE,
    _PROMPT,
    _FINAL_OK,
    _REG_STATES,
    _TECH_PREFIX,
    _UNREG_RANK,
    TWO_LINE_URCS,
    UERE_M,
    GnssFix,
    Registration,
    Signal,
    _fields,
    _one,
    _prefix,
    classify_line,
    command_shape,
    parse_cgpsinfo,
    parse_qgpsloc,
    redact,
)

__all__ = [
    "CME_MEANINGS",
    "CMS_MEANINGS",
    "COMMAND_TIMEOUTS_S",
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
    "UERE_M",
    "classify_line",
    "command_shape",
    "parse_cgpsinfo",
    "parse_error_line",
    "parse_qgpsloc",
    "redact",
]

log = logging.getLogger(__name__)

#: Longest wait for the final result code per command name, seconds (the "maximum response
#: time" of the SIM7600 and Quectel EC25 AT manuals, rounded up; SPEC §2 "timeouts"). Commands
#: not listed use ``Modem.default_timeout_s``. ``+CMGS`` is the SMS send: the network decides
#: how long it takes (the manuals say up to 120 s; the driver waits ``sms_timeout_s``, 60 s by
#: default, per step).
COMMAND_TIMEOUTS_S: dict[str, float] = {
    "+CPIN": 5.0, "+CLCK": 5.0, "+CPWD": 5.0, "+CFUN": 15.0, "+COPS": 180.0,
    "+CGATT": 140.0, "+CGACT": 150.0, "+CMGS": 60.0, "+CMSS": 60.0, "+CMGD": 30.0,
    "+CGPS": 10.0, "+QGPS": 10.0, "+QGPSEND": 10.0,
}

Flavour = Literal["sim7600", "quectel"]
FLAVOURS = ("auto", "sim7600", "quectel")

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
        sms_timeout_s: wait per step of an SMS send (prompt, then ``+CMGS``), seconds.
        comports: ``serial.tools.list_ports.comports``-like callable used to find the port
            again by USB identity after re-enumeration (:mod:`modem.port`).

    ``port`` may be a path (a stable udev name is best) or ``usb:VID:PID[:IF]``; every
    :meth:`open` looks the node up again, so a port that came back under another name after
    a USB reset is found (:attr:`device_path` says which node is open).
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
        sms_timeout_s: float = COMMAND_TIMEOUTS_S["+CMGS"],
        comports: Callable[[], Any] | None = None,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(
                f"unknown modem flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
        self.port = port
        self.locator = PortLocator(port, comports)
        #: The device node currently open (differs from ``port`` for ``usb:`` specs).
        self.device_path: str | None = None
        self.sms_timeout_s = sms_timeout_s
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
        #: More URC listeners, called like ``urc_handler`` after it (issue 11: :mod:`modem.voice`).
        self.urc_listeners: list[Callable[[str], None]] = []
        self._sms_pdu_mode = False
        self._sms_reference = random.randrange(256)

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open the port and start the reader thread. Raises ModemGone if the port is absent."""
        if self._serial is not None:
            return
        path = self.locator.locate()
        try:
            ser = self._serial_factory(path, self.baudrate, timeout=0.05,
                                       write_timeout=self.default_timeout_s)
        except (serial.SerialException, OSError) as exc:
            raise ModemGone(f"cannot open {self.port} ({path}): {exc}") from exc
        if path != self.device_path:
            self.locator.learn(path)
        self.device_path = path
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
        for listener in list(self.urc_listeners):
            try:
                listener(line)
            except Exception:  # same rule as urc_handler
                self.urc_handler_errors += 1
                log.exception("modem URC listener failed on %r", line)

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

    def timeout_for(self, cmd: str) -> float:
        """Seconds to wait for ``cmd``'s final result code: :data:`COMMAND_TIMEOUTS_S` for its
        name (``+CMGS`` uses ``sms_timeout_s``), else ``default_timeout_s``."""
        name, _ = command_shape(cmd)
        if name in ("+CMGS", "+CMSS"):
            return self.sms_timeout_s
        return max(COMMAND_TIMEOUTS_S.get(name, 0.0), self.default_timeout_s)

    def _transact(self, cmd: str, timeout_s: float | None, *, expect_prompt: bool = False,
                  payload: bytes | None = None, echo: frozenset[str] = frozenset()) -> list[str]:
        if threading.current_thread() is self._reader:
            raise RuntimeError("Modem.command() called from the URC handler (reader thread)")
        if payload is None and ("\r" in cmd or "\n" in cmd or not cmd[:2].upper() == "AT"):
            raise ValueError(f"not a single AT command: {redact(cmd)!r}")
        timeout = self.timeout_for(cmd) if timeout_s is None else timeout_s
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

    def send_sms(self, number: str, text: str, timeout_s: float | None = None) -> list[int]:
        """Send ``text`` to ``number`` (``"+45…"``) in PDU mode, GSM 7-bit or UCS2 chosen by
        :mod:`modem.sms`, split into concatenated parts when long.

        Per part: ``AT+CMGS=<length>`` → ``> `` prompt → PDU hex + Ctrl-Z → ``+CMGS: <mr>``
        ``OK``, each step within ``timeout_s`` seconds (default ``sms_timeout_s``, 60 s: the
        network can take tens of seconds). Returns the message references, one per part. The
        text is never logged. For a per-part record (resume after a failure) use
        :func:`modem.sms.encode_submit` and :meth:`send_pdu` per part instead.

        Raises:
            sms.SmsError: bad number / empty text (nothing sent).
            CmsError: e.g. 330 SMSC address unknown, 331 no network service.
            ModemTimeout (text entry is cancelled with ESC), ModemGone, ModemReplyError.
        """
        pdus = sms.encode_submit(number, text, reference=self.next_sms_reference())
        return [self.send_pdu(pdu, timeout_s) for pdu in pdus]

    def send_sms_text(self, number: str, text: str, timeout_s: float | None = None) -> list[int]:
        """Send ``text`` to ``number`` in **text mode** (27.005 §3.5.1, ``AT+CMGF=1``), for
        modems or gateways where PDU mode is unavailable. ASCII goes with character set
        ``IRA`` (DCS 0); anything else — Danish æøå included, to avoid the modem's own GSM
        mapping — as ``UCS2`` hex (``AT+CSCS="UCS2"``, ``AT+CSMP=17,167,0,8``; the number is
        UCS2 hex too). Text mode cannot carry a concatenation header, so a long text goes as
        separate messages of at most 160 (IRA) / 70 (UCS2) characters; prefer
        :meth:`send_sms` (PDU mode) where it works. Returns one message reference per message.

        Raises:
            sms.SmsError: bad number / empty text (nothing sent).
            CmsError, ModemTimeout (text entry cancelled with ESC), ModemGone, ModemReplyError.
        """
        if not text:
            raise sms.SmsError("empty SMS text")
        if not re.fullmatch(r"\+?[0-9]{3,20}", number):
            raise sms.SmsError(f"not a phone number: {number!r}")
        ira = all(32 <= ord(ch) < 127 or ch in "\r\n" for ch in text)
        limit = 160 if ira else 70
        chunks, cur, units = [], "", 0
        for ch in text:
            cost = 1 if ira else len(ch.encode("utf-16-be")) // 2
            if units + cost > limit:
                chunks.append(cur)
                cur, units = "", 0
            cur, units = cur + ch, units + cost
        chunks.append(cur)

        def hex16(s: str) -> str:
            return s.encode("utf-16-be").hex().upper()

        timeout = self.sms_timeout_s if timeout_s is None else timeout_s
        refs: list[int] = []
        with self._cmd_lock:
            self.command("AT+CMGF=1")
            self._sms_pdu_mode = False
            self.command('AT+CSCS="IRA"' if ira else 'AT+CSCS="UCS2"')
            self.command("AT+CSMP=17,167,0,0" if ira else "AT+CSMP=17,167,0,8")
            cmd = f'AT+CMGS="{number if ira else hex16(number)}"'
            for chunk in chunks:
                body = chunk if ira else hex16(chunk)
                try:
                    self._transact(cmd, timeout, expect_prompt=True)
                except ModemTimeout:
                    self._cancel_text_entry()
                    raise
                lines = self._transact(cmd, timeout, payload=body.encode() + b"\x1a", echo=frozenset({body}))
                line = _one(cmd, lines, "+CMGS")
                try:
                    refs.append(int(_fields(cmd, line, 1)[0]))
                except ValueError:
                    raise ModemReplyError(cmd, line, "message reference is not a number") from None
        return refs

    def next_sms_reference(self) -> int:
        """A fresh 8-bit concatenation reference (TS 23.040 §9.2.3.24.1) for a new message."""
        self._sms_reference = (self._sms_reference + 1) % 256
        return self._sms_reference

    def send_pdu(self, pdu: sms.Pdu, timeout_s: float | None = None) -> int:
        """Send one SMS-SUBMIT part (27.005 §3.5.1 PDU mode); returns its message reference
        ``<mr>``. Each step waits ``timeout_s`` (default ``sms_timeout_s``) seconds.

        Raises:
            CmsError, ModemTimeout (a missing prompt cancels text entry with ESC; a missing
            ``+CMGS`` after the PDU leaves it unknown whether the part went out), ModemGone,
            ModemReplyError.
        """
        timeout = self.sms_timeout_s if timeout_s is None else timeout_s
        with self._cmd_lock:
            if not self._sms_pdu_mode:
                self.command("AT+CMGF=0")
                self._sms_pdu_mode = True
            cmd = f"AT+CMGS={pdu.tpdu_length}"
            try:
                self._transact(cmd, timeout, expect_prompt=True)
            except ModemTimeout:
                self._cancel_text_entry()
                raise
            lines = self._transact(cmd, timeout, payload=pdu.hex.encode() + b"\x1a",
                                   echo=frozenset({pdu.hex}))
            line = _one(cmd, lines, "+CMGS")
            try:
                return int(_fields(cmd, line, 1)[0])
            except ValueError:
                raise ModemReplyError(cmd, line, "message reference is not a number") from None

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

"""The AT command channel: one serial port, one reader thread, one command at a time.

Source: SPEC §2 "Modem driver"; ITU-T V.250 framing and result codes (§5.7, §6.2), 3GPP TS
27.007 §9.2 (``+CME ERROR``) and TS 27.005 §3.2.5 (``+CMS ERROR``); maximum response times per
the SIM7600 AT manual (SIMCom, "AT Command Manual" V2.00) and the Quectel EC25 AT manual.

:class:`AtLink` is the part of :class:`modem.at.Modem` that knows nothing of SIMs, networks,
GNSS or SMS. Its primitives are stable for every feature module built on it (SMS in
:mod:`modem.sms_send`, voice calls …):

* :meth:`AtLink.command` — send one command, wait for its final result code, return its
  information lines; errors typed (:mod:`modem.errors`).
* ``urc_handler`` — a callable given to the constructor (or set as the attribute later) that
  receives every unsolicited line in the reader thread; :meth:`AtLink.add_urc_listener` adds
  more of them (each gets every URC; one that raises is counted, never fatal).
* :meth:`AtLink.timeout_for` and :data:`COMMAND_TIMEOUTS_S` — per-command timeouts.

Threading model: the reader thread owns the read side of the port and turns bytes into lines
(:class:`modem.framing.LineFramer`). Every line is classified against the command that is
pending *right now* (:func:`modem.replies.classify_line`): echo of that command (dropped), its
final result code, one of its information lines, or a URC which goes to the listeners and is
never taken as an answer. Parsing of replies happens in the caller's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import serial

from .errors import ModemError, ModemGone, ModemTimeout, parse_error_line
from .framing import LineFramer
from .port import PortLocator
from .replies import _FINAL_OK, _PROMPT, TWO_LINE_URCS, _prefix, classify_line, command_shape, redact

__all__ = ["COMMAND_TIMEOUTS_S", "AtLink"]

log = logging.getLogger("modem.at")

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


class AtLink:
    """The AT channel on one serial port (SPEC §2): open/close, reader thread, commands, URCs.

    Args:
        port: serial device, e.g. ``/dev/ttyUSB2``, a simulator's pty, or ``usb:VID:PID[:IF]``.
        baudrate: line speed (USB modems ignore it).
        urc_handler: called in the reader thread with each unsolicited line (``"+CMTI: …"``).
        default_timeout_s: per-command timeout in seconds when ``command`` gets none.
        serial_factory: builds the port (``serial.Serial`` signature); swap for tests.
        sms_timeout_s: wait per step of an SMS send (prompt, then ``+CMGS``), seconds.
        comports: ``serial.tools.list_ports.comports``-like callable used to find the port
            again by USB identity after re-enumeration (:mod:`modem.port`).

    The ``urc_handler`` runs in the reader thread: keep it short (hand the line to a queue or
    an event loop) and never call :meth:`command` from it (that raises ``RuntimeError``). An
    exception it raises is logged and counted in :attr:`urc_handler_errors`, never fatal.
    Two-line URCs (``+CMT``/``+CDS``/``+CBM`` with the SMS on the next line) reach it as one
    string joined by ``\\n``.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        *,
        urc_handler: Callable[[str], None] | None = None,
        default_timeout_s: float = 5.0,
        serial_factory: Callable[..., Any] = serial.Serial,
        sms_timeout_s: float = COMMAND_TIMEOUTS_S["+CMGS"],
        comports: Callable[[], Any] | None = None,
    ) -> None:
        self.port = port
        self.locator = PortLocator(port, comports)
        #: The device node currently open (differs from ``port`` for ``usb:`` specs).
        self.device_path: str | None = None
        self.sms_timeout_s = sms_timeout_s
        self.baudrate = baudrate
        self.urc_handler = urc_handler
        self._urc_listeners: list[Callable[[str], None]] = []
        self.default_timeout_s = default_timeout_s
        self._serial_factory = serial_factory
        self._serial: Any = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._state_lock = threading.Lock()
        self._cmd_lock = threading.RLock()  # held across both halves of AT+CMGS
        self._pending: _Pending | None = None
        self._urc_head: str | None = None  # reader thread only
        self._gone: str | None = None
        #: Exceptions raised by ``urc_handler`` or a listener (logged, never fatal).
        self.urc_handler_errors = 0

    @property
    def urc_listeners(self) -> list[Callable[[str], None]]:
        """The listeners added by :meth:`add_urc_listener` (a live list: append/remove work)."""
        return self._urc_listeners

    def add_urc_listener(self, listener: Callable[[str], None]) -> None:
        """Also hand every URC to ``listener`` (reader thread; same rules as ``urc_handler``).
        Feature modules (voice calls, SMS reception …) use this so that they do not replace
        the owner's ``urc_handler``."""
        self._urc_listeners.append(listener)

    def _on_open(self) -> None:
        """Hook for subclasses: reset per-connection state (the port was just opened)."""

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
        self._on_open()
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

    def __enter__(self) -> AtLink:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reader thread -----------------------------------------------------------------------

    def _read_loop(self) -> None:
        ser = self._serial
        framer = LineFramer()
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
            for line in framer.feed(chunk):
                self._on_line(line)
            if framer.tail.strip() == b">":
                with self._state_lock:
                    p = self._pending
                    if p is not None and p.expect_prompt:
                        framer.clear()
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
        handlers = ([self.urc_handler] if self.urc_handler is not None else []) + self._urc_listeners
        for handler in handlers:
            try:
                handler(line)
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

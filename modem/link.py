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

Threading model: the reader thread (:class:`modem.routing.LineRouter`) owns the read side of
the port and routes every line; :meth:`AtLink.command` writes a command in the caller's
thread and waits on an event for the final result code. Parsing of replies happens in the
caller's thread, so a garbled reply raises there and never hurts the reader thread.

A command that timed out may still be answered. Its final result code is *owed*: a late
answer that comes while nothing is pending is drained; if it is still owed when the next
command starts, that command first re-synchronises (``AT`` probe, :meth:`AtLink._resync`), so
the late ``OK`` is never taken as its answer and a lost one costs a round trip, not a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import serial

from .errors import ModemError, ModemGone, ModemTimeout, SerialConsoleError, parse_error_line
from .port import PortLocator
from .replies import _FINAL_OK, _PROMPT, command_shape, redact
from .routing import LineRouter, _Pending

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


class AtLink(LineRouter):
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
        #: Final result codes still owed by commands that timed out (drained before the next).
        self._owed = 0
        self._stale_cmd: str | None = None
        #: Quiet time after a late answer before the line counts as in step again, seconds.
        self.sync_settle_s = 0.25
        #: The last line that showed a Linux login console on the port, or None.
        self.console_seen: str | None = None
        self._console_count = 0
        #: Strings never to be logged (the SIM PIN, set by :meth:`modem.at.Modem.init`).
        self._secrets: tuple[str, ...] = ()

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
        self._owed = 0  # opening flushes the input: nothing late can come any more
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
            SerialConsoleError: a Linux login console answered instead of a modem.
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
            if payload is None and self._owed > 0:
                # A command before timed out and its answer is still owed: get in step again
                # before speaking, so its late OK is not taken as ours. That costs one "AT"
                # round trip (plus the quiet time if the late answer was lost), never this
                # command's own timeout, which starts only when it is sent.
                self._resync(time.monotonic() + timeout, display)
            p = _Pending(cmd=cmd, display=display, expect_prompt=expect_prompt, echo=echo)
            with self._state_lock:
                self._pending = p
                consoles = self._console_count
            self._write(p, payload if payload is not None else (cmd + "\r").encode("ascii"))
            if not p.done.wait(timeout):
                with self._state_lock:
                    timed_out = not p.done.is_set()
                    if timed_out:
                        if self._pending is p:
                            self._pending = None
                        if not expect_prompt:  # its final result code may still come
                            self._owed += 1
                            self._stale_cmd = cmd
                    console = self.console_seen if self._console_count != consoles else None
                if timed_out:
                    if console is not None:
                        raise SerialConsoleError(self.port, console)
                    raise ModemTimeout(f"{display}: no final result code within {timeout:g} s")
        if p.console is not None:
            raise SerialConsoleError(self.port, p.console)
        if p.gone is not None:
            raise ModemGone(f"{display}: {p.gone}")
        final = p.final or ""
        if final in (_FINAL_OK, _PROMPT):
            return p.lines
        err = parse_error_line(final, display)
        if err is not None:
            raise err
        raise ModemError(f"{display}: {final}")

    def _write(self, p: _Pending, data: bytes) -> None:
        log.debug("modem > %s", p.display)
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            self._gone = f"port {self.port} vanished: {exc}"
            self._fail_pending(self._gone)
            raise ModemGone(f"{p.display}: {self._gone}") from exc

    def _resync(self, deadline: float, display: str) -> None:
        """Drain the answers still owed by commands that timed out (``_cmd_lock`` held).

        Sends ``AT`` and counts final result codes: the owed ones, then the probe's own. Done
        when all have come, or when at least one came and then nothing for ``sync_settle_s``
        (the rest were lost to line noise: ``AT`` is answered in milliseconds once the modem
        is free). Raises ModemTimeout if nothing at all comes before ``deadline`` (the modem
        is still busy or hung), SerialConsoleError / ModemGone as :meth:`command`.
        """
        p = _Pending(cmd="AT", display="AT (re-synchronise)", sync=True)
        with self._state_lock:
            self._owed += 1
            self._pending = p
        self._write(p, b"AT\r")
        heard, seen = False, 0
        try:
            while True:
                with self._state_lock:
                    if self._owed <= 0:
                        return
                    new, seen = p.heard > seen, p.heard
                    if not new:
                        p.done.clear()
                if p.console is not None:
                    raise SerialConsoleError(self.port, p.console)
                if p.gone is not None:
                    raise ModemGone(f"{display}: {p.gone}")
                if new:
                    heard = True
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or not p.done.wait(min(left, self.sync_settle_s) if heard else left):
                    if heard:
                        log.info("modem: %d late answer(s) lost; in step again", self._owed)
                        return
                    raise ModemTimeout(f"{display}: modem busy with a command that timed out "
                                       "(no answer to AT)")
        finally:
            with self._state_lock:
                if heard or self._owed <= 0:
                    self._owed = 0
                if self._pending is p:
                    self._pending = None

    def _check_usable(self) -> None:
        if self._gone is not None:
            raise ModemGone(self._gone)
        if self._serial is None:
            raise ModemGone(f"modem on {self.port} is not open")

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise ModemGone(f"modem on {self.port} closed")

"""AT-command driver for the device's cellular modem (SIMCom SIM7600 / Quectel EC25 style).

Source: SPEC §2 "Modem driver"; framing, result codes, ``+CME ERROR``, ``+CREG``/``+CGREG``/
``+CEREG`` and ``+CSQ`` per 3GPP TS 27.007; ``+CMS ERROR`` per 3GPP TS 27.005; GNSS commands per
the SIM7600 AT manual (``AT+CGPSINFO``) and the Quectel EC25 GNSS manual (``AT+QGPSLOC=2``).

The driver is built in layers, one module each:

* :mod:`modem.framing` — bytes → lines (V.250 framing);
* :mod:`modem.link` — :class:`~modem.link.AtLink`, the AT channel: port, reader thread, line
  classification, :meth:`~modem.link.AtLink.command`, URC routing (``urc_handler``, listeners);
* :mod:`modem.replies` / :mod:`modem.errors` — pure reply parsing and typed errors;
* :mod:`modem.routing` — the reader thread's side of the channel (line routing);
* :mod:`modem.symptoms` — recognising noise, a restart, a login console (pure);
* :mod:`modem.sms_send` — SMS submit (PDU and text mode);
* :mod:`modem.gnss_cmds` — flavour detection, GNSS on, fixes;
* this module — :class:`Modem`: set-up, SIM, signal, registration, and re-initialising a
  modem that restarted.

Everything is re-exported here so ``from modem.at import Modem, ModemError, ModemGone, …``
keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import serial

from .errors import (
    CME_MEANINGS,
    CMS_MEANINGS,
    CmeError,
    CmsError,
    ModemError,
    ModemGone,
    ModemReplyError,
    ModemTimeout,
    SerialConsoleError,
    SimLocked,
    parse_error_line,
)
from .link import COMMAND_TIMEOUTS_S, AtLink
from .replies import (
    _PIN_RE,
    _REG_STATES,
    _TECH_PREFIX,
    _UNREG_RANK,
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
from .gnss_cmds import FLAVOURS, Flavour, GnssCommands
from .sms_send import SmsSending
from .symptoms import sim_pin_required

__all__ = [
    "CME_MEANINGS",
    "CMS_MEANINGS",
    "COMMAND_TIMEOUTS_S",
    "AtLink",
    "CmeError",
    "CmsError",
    "GnssFix",
    "Modem",
    "ModemError",
    "ModemGone",
    "ModemReplyError",
    "ModemTimeout",
    "Registration",
    "SerialConsoleError",
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

_T = TypeVar("_T")


class Modem(SmsSending, GnssCommands, AtLink):
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
    a USB reset is found (:attr:`device_path` says which node is open). The channel
    primitives (:meth:`command`, ``urc_handler``, :meth:`add_urc_listener`) are documented on
    :class:`modem.link.AtLink`.
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
        super().__init__(port, baudrate, urc_handler=urc_handler,
                         default_timeout_s=default_timeout_s, serial_factory=serial_factory,
                         sms_timeout_s=sms_timeout_s, comports=comports)
        self.sim_busy_retries = sim_busy_retries
        self.sim_busy_backoff_s = sim_busy_backoff_s
        self._flavour_setting = flavour
        self._flavour: Flavour | None = (
            None if flavour == "auto" else flavour)  # type: ignore[assignment]
        #: 2 verbose ``+CME ERROR: <text>``, 1 numeric, 0 plain ``ERROR`` (set by :meth:`init`).
        self.error_mode = 0
        self._init_sms_state()
        self._pin: str | None = None  # for re-initialising after a restart; never logged
        self._initialised = False
        self._in_init = False
        self._pin_entered = False
        self._gnss_wanted = False
        self._reset_reason: str | None = None
        self._recovery_depth = 0
        #: How often the driver found the modem restarted and initialised it again.
        self.reinits = 0
        #: What showed the last restart (a URC such as ``RDY`` or an error text), or None.
        self.last_reset: str | None = None
        #: How often GNSS was found off and switched on again by :meth:`gnss`.
        self.gnss_restarts = 0
        self._reinit_listeners: list[Callable[[Modem], None]] = []

    def add_reinit_listener(self, listener: Callable[[Modem], None]) -> None:
        """Call ``listener(modem)`` after every re-initialisation the driver does itself
        (:meth:`recover_if_restarted`), in the thread that triggered it with the command lock
        held: restore the owner's own modem settings there (``AT+CNMI`` …) with
        :meth:`command`. An exception it raises is logged, never fatal."""
        self._reinit_listeners.append(listener)

    @property
    def initialised(self) -> bool:
        """True after a successful :meth:`init` until a re-initialisation fails."""
        return self._initialised

    # -- restarts of the modem (port stays) ----------------------------------------------------

    def _on_reset_sign(self, line: str, strength: str) -> None:
        """Reader thread: ``line`` says the modem restarted (power-on sequence of the SIM7600 /
        EC25 manuals). Weak signs (``SMS DONE`` …) are ignored after our own PIN entry, which
        produces them too. The next command re-initialises first."""
        if strength == "weak" and self._pin_entered:
            return
        if self._initialised and self._reset_reason is None:
            log.warning("modem sent %r: it restarted; initialising it again before the next "
                        "command", line)
        self._reset_reason = self._reset_reason or line

    def command(self, cmd: str, timeout_s: float | None = None) -> list[str]:
        """As :meth:`modem.link.AtLink.command`, and: a modem that restarted since :meth:`init`
        (boot URCs, or this command failing with "SIM PIN required" — ``+CME ERROR: 11`` /
        ``+CMS ERROR: 311``) is initialised again (echo off, verbose errors, PIN, GNSS on)
        before the command, which is then sent (again) once. Raises what ``command`` and
        :meth:`init` raise."""
        return self._with_recovery(lambda: AtLink.command(self, cmd, timeout_s))

    def _with_recovery(self, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` after any pending re-initialisation; after "SIM PIN required" once
        more after one. Only the outermost call retries (an SMS part is retried whole, not
        each of its commands)."""
        self.recover_if_restarted()
        with self._cmd_lock:
            self._recovery_depth += 1
            try:
                try:
                    return attempt()
                except (CmeError, CmsError) as exc:
                    if (not sim_pin_required(exc) or self._in_init or not self._initialised
                            or self._recovery_depth > 1):
                        raise
                    log.warning("modem says %s: it restarted; initialising it again", exc)
                    self._reset_reason = self._reset_reason or str(exc)
                self.recover_if_restarted()
                return attempt()
            finally:
                self._recovery_depth -= 1

    def recover_if_restarted(self) -> bool:
        """If a restart was seen since the last :meth:`init`, run it again with the same PIN
        and switch GNSS on again if :meth:`start_gnss` had. Returns whether it did.

        Raises what :meth:`init` raises (SimLocked, CmeError, ModemTimeout …); GNSS errors
        other than timeouts and a vanished port are logged, not raised.
        """
        with self._cmd_lock:
            reason = self._reset_reason
            if reason is None or self._in_init or not self._initialised:
                return False
            self.reinits += 1
            self.last_reset = self._scrub(reason)
            self.init(self._pin)
            if self._gnss_wanted:
                try:
                    self.start_gnss()
                except (ModemTimeout, ModemGone):
                    raise
                except ModemError as exc:
                    log.warning("could not switch GNSS on again after the restart: %s", exc)
            for listener in self._reinit_listeners:
                try:
                    listener(self)
                except Exception:  # an owner's hook never breaks the command that follows
                    log.exception("modem re-initialisation listener failed")
            log.info("modem initialised again after a restart (%s)", self.last_reset)
            return True

    def __enter__(self) -> Modem:
        self.open()
        return self

    # -- set-up and SIM ----------------------------------------------------------------------

    def init(self, pin: str | None = None) -> str:
        """Bring the modem into a known state and unlock the SIM.

        Sequence: ``AT`` (3 tries, the first may be eaten by auto-baud), ``ATE0``,
        ``AT+CMEE=2`` (falling back to ``=1``, then plain ``ERROR`` if unsupported),
        ``AT+CPIN?`` with SIM-busy back-off, ``AT+CPIN="…"`` if a PIN is needed and given.
        Registration URC settings are left as they are: they are routed to the URC handler and
        :meth:`registration` reads either form. Returns ``"READY"``. The PIN is kept (in
        memory, never logged: every logged line is scrubbed of it) so that a modem that
        restarts later is initialised again by the next command (:meth:`command`).

        Raises:
            SimLocked: the SIM needs a PIN that was not given, or a PUK.
            CmeError: e.g. 10 SIM not inserted, 16 incorrect password.
            SerialConsoleError: a Linux login console answers on the port, not a modem.
            ModemTimeout / ModemGone.
        """
        with self._cmd_lock:
            self._in_init, self._initialised, self._pin_entered = True, False, False
            try:
                state = self._init(pin)
            finally:
                self._in_init = False
            self._pin, self._initialised = pin, True
            return state

    def _init(self, pin: str | None) -> str:
        self._sms_pdu_mode = False
        if pin:
            self._secrets = (pin,)
        for attempt in range(3):
            try:
                self.command("AT", timeout_s=min(self.default_timeout_s, 2.0))
                break
            except ModemTimeout:
                if attempt == 2:
                    raise
        # Boot URCs that came before this OK belong to the start-up being handled now.
        self._reset_reason = None
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
        self._secrets = (pin,)
        self._pin_entered = True  # "+CPIN: READY", "SMS DONE", "PB DONE" follow: not a restart
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

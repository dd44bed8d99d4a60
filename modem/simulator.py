"""A modem that speaks AT like a SIMCom SIM7600 (or a Quectel EC25) over a pseudo-terminal.

Like gpiozero's ``MockPin`` this is a working backend, not a patch: the driver opens
``serial.Serial(sim.port)`` exactly as it opens ``/dev/ttyUSB2``, and every byte crosses a real
pty. One thread reads commands (terminated by CR), echoes them until ``ATE0`` and answers with
V.250 framing ``\\r\\n<info>\\r\\n\\r\\nOK\\r\\n``. Error replies follow ``AT+CMEE`` (0 ``ERROR``,
1 ``+CME ERROR: 14``, 2 ``+CME ERROR: SIM busy``) as 3GPP TS 27.007 §9.1 describes.

State has thread-safe setters (``signal_csq``, ``set_registration``, ``gnss_fix``, ``sim_state``,
``sim_busy_queries``, ``pin``, ``flavour``); one-shot faults are programmed per command prefix
(``delay_next``, ``error_next``, ``garble_next``, ``urc_during_next``, ``submit_error_next``) or
fired now (``inject_urc``, ``vanish``). ``reappear()`` brings a vanished modem back on a *new* pty
(another name, as USB re-enumeration does) in its power-on state: echo on, no ``+CMEE``, GNSS off,
boot URCs ``RDY`` / ``+CPIN: READY`` / ``SMS DONE`` / ``PB DONE`` (SIM7600 manual, "power on"
sequence) sent just before the answer to the host's first command. ``reset()`` restarts it on
the *same* port (a UART-wired HAT after a brown-out or watchdog reset): power-on state, the SIM
locked again if its PIN lock is on (``pin_lock``), boot URCs sent at once; until the PIN is
entered again, SMS commands answer ``+CMS ERROR: 311`` and registration is 0.
``hung = True`` makes it read commands and never answer (a firmware hang);
``serial_console = True`` puts a Linux login console on the port instead (:mod:`modem.sim_console`).
Line faults: ``noise_next`` (NUL/0xFF glued to the final result code), ``drop_final_next`` (the
final result code lost). ``gnss_format`` selects the other number format of the GNSS replies.
``transcript`` keeps ``(direction, line)`` pairs: ``"host"`` for what the modem received,
``"modem"`` for what it sent (secrets included: it is a test tool).

Received SMS: ``deliver_sms(number, text)`` stores SMS-DELIVER PDUs in the SIM store and announces
each with ``+CMTI``; ``AT+CMGR``/``AT+CMGL`` (PDU mode) read them and ``AT+CMGD`` deletes them.

Test-only: never used on the device.
"""

from __future__ import annotations

import os

from .sim_console import SimConsole
from .sim_faults import SimFaults, Where
from .sim_gnss import SimGnss
from .sim_pty import PtySimBase
from .sim_calls import SimCalls
from .sim_sms import SimSms

__all__ = ["ModemSimulator", "Where"]

_REG_NAMES = {"not_registered": 0, "home": 1, "searching": 2, "denied": 3, "unknown": 4,
              "roaming": 5}
_FAMILIES = ("CREG", "CGREG", "CEREG")
_SIM_STATES = ("READY", "SIM PIN", "SIM PUK", "not inserted")
# The simulator's own copy of the verbose texts (independent of the driver's table on purpose).
_CME_TEXT = {3: "operation not allowed", 4: "operation not supported", 10: "SIM not inserted",
             11: "SIM PIN required", 12: "SIM PUK required", 14: "SIM busy",
             16: "incorrect password", 501: "Invalid parameter(s)", 504: "Session is ongoing",
             505: "Session not active", 516: "Not fixed now"}
_IDENT = {
    "sim7600": (["Manufacturer: SIMCOM INCORPORATED", "Model: SIMCOM_SIM7600E-H",
                 "Revision: SIM7600M22_V2.0", "IMEI: 861234567890123", "+GCAP: +CGSM"],
                "SIMCOM_SIM7600E-H"),
    "quectel": (["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"], "EC25"),
}

# SMS commands that need an unlocked SIM (27.005 §3.2.5: +CMS ERROR 310/311/316 otherwise).
_SMS_COMMANDS = ("AT+CMGS", "AT+CMGF", "AT+CMGR", "AT+CMGL", "AT+CMGD", "AT+CNMI", "AT+CSMP")
_CMS_SIM = {"SIM PIN": "+CMS ERROR: 311", "SIM PUK": "+CMS ERROR: 316",
            "not inserted": "+CMS ERROR: 310"}


class ModemSimulator(SimConsole, SimFaults, SimSms, SimGnss, PtySimBase):
    """AT modem on a pty. Use as a context manager or call ``start()``/``stop()``.

    Args:
        flavour: ``"sim7600"`` or ``"quectel"`` (ATI/CGMM replies and GNSS commands).
        pin: the SIM's PIN (used when ``sim_state`` is ``"SIM PIN"``).
        sim_state: ``"READY"``, ``"SIM PIN"``, ``"SIM PUK"`` or ``"not inserted"``.
        verbose_errors: whether ``AT+CMEE=2`` is supported (else it answers ``ERROR``).
        pin_lock: whether the SIM asks for its PIN at every power-on (default: when
            ``sim_state`` is ``"SIM PIN"``); used by :meth:`reset`.
    """

    def __init__(self, flavour: str = "sim7600", *, pin: str = "1234", sim_state: str = "READY",
                 verbose_errors: bool = True, pin_lock: bool | None = None) -> None:
        self._check_flavour(flavour)
        self._check_sim_state(sim_state)
        self._init_pty()
        self._init_console()
        #: The SIM's PIN lock is on: after :meth:`reset` it is in "SIM PIN" state again.
        self.pin_lock = sim_state == "SIM PIN" if pin_lock is None else pin_lock
        self._init_faults()
        self._init_sms()
        self._init_gnss()
        #: The voice-call model (issue 11, :mod:`modem.sim_calls`).
        self.calls = SimCalls(self)
        self._flavour = flavour
        self._pin = pin
        self._sim_state = sim_state
        self._sim_busy = 0
        self._pin_tries = 3
        self.verbose_errors = verbose_errors
        self._echo = True
        self._cscs = "IRA"  # AT+CSCS: the character set of text-mode SMS
        self._cmee = 0
        self._csq = 20
        self._ber = 99
        self._reg = {"CREG": 1, "CGREG": 1, "CEREG": 1}
        self._reg_n = {"CREG": 0, "CGREG": 0, "CEREG": 0}
        self._cmgf = 0
        self._boot_urcs: list[str] = []
        #: While True the modem reads commands and answers nothing (firmware hang).
        self.hung = False
        #: How often the modem came back after :meth:`vanish` (power-cycles, USB resets).
        self.boots = 0

    def __enter__(self) -> ModemSimulator:
        self.start()
        return self

    # -- state -------------------------------------------------------------------------------

    @staticmethod
    def _check_flavour(flavour: str) -> None:
        if flavour not in _IDENT:
            raise ValueError(f"unknown flavour {flavour!r}; choose sim7600 or quectel")

    @staticmethod
    def _check_sim_state(state: str) -> None:
        if state not in _SIM_STATES:
            raise ValueError(f"unknown sim_state {state!r}; choose one of {_SIM_STATES}")

    @property
    def flavour(self) -> str:
        return self._flavour

    @flavour.setter
    def flavour(self, value: str) -> None:
        self._check_flavour(value)
        with self._lock:
            self._flavour = value

    @property
    def signal_csq(self) -> int:
        """``+CSQ`` rssi index: 0–31 (−113…−51 dBm) or 99 (unknown)."""
        return self._csq

    @signal_csq.setter
    def signal_csq(self, value: int) -> None:
        if not (0 <= value <= 31 or value == 99):
            raise ValueError("signal_csq must be 0-31 or 99")
        with self._lock:
            self._csq = value

    @property
    def sim_state(self) -> str:
        return self._sim_state

    @sim_state.setter
    def sim_state(self, value: str) -> None:
        self._check_sim_state(value)
        with self._lock:
            self._sim_state = value

    @property
    def sim_busy_queries(self) -> int:
        """The next N ``AT+CPIN`` commands answer ``+CME ERROR: 14`` (SIM busy)."""
        return self._sim_busy

    @sim_busy_queries.setter
    def sim_busy_queries(self, value: int) -> None:
        with self._lock:
            self._sim_busy = value

    @property
    def pin(self) -> str:
        return self._pin

    @pin.setter
    def pin(self, value: str) -> None:
        with self._lock:
            self._pin = value

    def set_registration(self, **states: int | str) -> None:
        """``set_registration(creg="not_registered", cereg="home")``: names or 27.007 ``<stat>``
        numbers per family. Sends ``+CREG: <stat>`` URCs where ``AT+CREG=1`` enabled them."""
        urcs = []
        with self._lock:
            for family, value in states.items():
                fam = family.upper()
                if fam not in self._reg:
                    raise ValueError(f"unknown registration family {family!r}")
                if isinstance(value, str) and value not in _REG_NAMES:
                    raise ValueError(
                        f"unknown registration state {value!r}; one of {list(_REG_NAMES)}")
                stat = _REG_NAMES[value] if isinstance(value, str) else int(value)
                changed = self._reg[fam] != stat
                self._reg[fam] = stat
                if changed and self._reg_n[fam] >= 1:
                    urcs.append(f"+{fam}: {stat}" + (',"1A2B","01C3D4E5",7'
                                                      if self._reg_n[fam] >= 2 else ""))
        for line in urcs:
            self.inject_urc(line)

    # -- power ---------------------------------------------------------------------------

    def reappear(self) -> str:
        """Come back after :meth:`vanish` (or a power cut) on a new pty, like a USB modem that
        re-enumerated under another ``/dev/ttyUSB*`` name, in the power-on state (echo on,
        ``+CMEE`` 0, GNSS off, not hung) with the SIM7600 boot URCs queued. Recorded SMS and
        the transcript are kept. Returns the new port name."""
        # The new pty is made while the old one is still held, so it gets another name.
        master, slave = os.openpty()
        self.stop()
        with self._lock:
            self._echo, self._cmee, self._gnss_on, self._cmgf = True, 0, False, 0
            self._reg_n = {"CREG": 0, "CGREG": 0, "CEREG": 0}
            self._faults.clear()
            self.hung = False
            self.boots += 1
        self._vanish.clear()
        self._master, self._slave = master, slave
        # A host that opens the port flushes its input, so the boot URCs come just before the
        # answer to its first command — where they must be routed aside, not taken as answers.
        with self._lock:
            self._boot_urcs = ["RDY", "+CPIN: READY", "SMS DONE", "PB DONE"]
        self._start_on_pty()
        return self.port

    def reset(self, *, boot_urcs: bool = True) -> None:
        """Restart in place, as a UART-wired modem does after a brown-out, a watchdog or a
        firmware crash: the port stays open, the modem is in its power-on state (echo on,
        ``+CMEE`` 0, GNSS off, text-mode settings gone), the SIM is locked again when
        :attr:`pin_lock` is on, and the power-on URCs of the SIM7600 manual are sent at once:
        ``RDY`` ``+CPIN: SIM PIN`` (locked) or ``RDY`` ``+CPIN: READY`` ``SMS DONE``
        ``PB DONE``. ``boot_urcs=False``: a silent restart (auto-baud modems send no ``RDY``),
        seen only by the errors that follow (``+CMS ERROR: 311``)."""
        with self._lock:
            self._echo, self._cmee, self._gnss_on, self._cmgf = True, 0, False, 0
            self._cscs = "IRA"
            self._reg_n = {"CREG": 0, "CGREG": 0, "CEREG": 0}
            self.hung = False
            self.boots += 1
            if self._sim_state in ("READY", "SIM PIN"):
                self._sim_state = "SIM PIN" if self.pin_lock else "READY"
            urcs = (["RDY", f"+CPIN: {self._sim_state.upper()}"]
                    + (["SMS DONE", "PB DONE"] if self._sim_state == "READY" else []))
        if boot_urcs:
            self._send_lines(list(urcs))

    def power(self, on: bool) -> None:
        """Model the modem's supply switched by a GPIO: off = the port vanishes, on = it
        reappears on a new pty (:meth:`reappear`)."""
        if on:
            if self._vanish.is_set() or self._thread is None:
                self.reappear()
        else:
            self.vanish()

    # -- command handling --------------------------------------------------------------------

    def _handle(self, cmd: str) -> tuple[str, str] | None:
        """Answer one command; returns the SMS entry mode after a ``> `` prompt was sent."""
        self._record("host", cmd)
        if self.hung:
            return None
        with self._lock:
            boot, self._boot_urcs = self._boot_urcs, []
        if boot:
            self._send_lines(list(boot))
        if self.serial_console:
            self._console_input(cmd)
            return None
        if self._echo:
            self._write(cmd.encode("utf-8") + b"\r")
        faults = {f.kind: f for f in self._take(cmd)}
        if "delay" in faults and self._abort.wait(faults["delay"].seconds):
            return None
        if "error" in faults:
            info, final, after = [], str(faults["error"].line), []
        else:
            info, final, after = self._answer(cmd)
        urc = faults.get("urc")
        if final == ">":
            if urc is not None:
                self._send_lines(list(urc.lines))
            self._record("modem", "> ")
            self._write(b"\r\n> ")
            arg = cmd.partition("=")[2].strip()
            return ("text", arg.strip('"')) if self._cmgf == 1 else ("pdu", arg)
        out: list[str | bytes] = list(info)
        if "garble" in faults:
            out = [faults["garble"].line]
        if urc is not None and urc.where == "before":
            out = list(urc.lines) + out
        if urc is not None and urc.where == "between":
            out = out + list(urc.lines)
        if "noise" in faults:
            noise = faults["noise"]
            out.append(noise.before + final.encode() + noise.after)
        elif "drop" not in faults:
            out.append(final)
        if urc is not None and urc.where == "after":
            out += list(urc.lines)
        self._send_lines(out + after)
        return None

    def _cme(self, code: int) -> str:
        if self._cmee == 0:
            return "ERROR"
        if self._cmee == 1:
            return f"+CME ERROR: {code}"
        return f"+CME ERROR: {_CME_TEXT[code]}"

    def _answer(self, cmd: str) -> tuple[list[str], str, list[str]]:
        """(info lines, final result code, URCs to send after it) for one command."""
        up = cmd.upper()
        with self._lock:
            if up == "AT":
                return [], "OK", []
            if up in ("ATE0", "ATE1"):
                self._echo = up == "ATE1"
                return [], "OK", []
            if up == "ATI":
                return list(_IDENT[self._flavour][0]), "OK", []
            if up == "AT+CGMM":
                return [_IDENT[self._flavour][1]], "OK", []
            if up.startswith("AT+CMEE="):
                mode = up[8:]
                if mode not in ("0", "1", "2") or (mode == "2" and not self.verbose_errors):
                    return [], "ERROR", []
                self._cmee = int(mode)
                return [], "OK", []
            if up.startswith("AT+CPIN"):
                return self._cpin(cmd)
            if up == "AT+CSQ":
                return [f"+CSQ: {self._csq},{self._ber}"], "OK", []
            if up.startswith(_SMS_COMMANDS) and self._sim_state in _CMS_SIM:
                return [], _CMS_SIM[self._sim_state], []
            for fam in _FAMILIES:
                if up == f"AT+{fam}?":
                    stat = self._reg[fam] if self._sim_state == "READY" else 0
                    return [f"+{fam}: {self._reg_n[fam]},{stat}"], "OK", []
                if up.startswith(f"AT+{fam}=") and up[len(fam) + 4:] in ("0", "1", "2"):
                    self._reg_n[fam] = int(up[len(fam) + 4:])
                    return [], "OK", []
            if up in ("AT+CMGF=1", "AT+CMGF=0"):
                self._cmgf = int(up[-1])
                return [], "OK", []
            if up.startswith("AT+CSCS="):
                self._cscs = up[8:].strip('"')
                return [], "OK", []
            if up.startswith("AT+CSMP="):
                return [], "OK", []
            if up.startswith(("AT+CNMI=", "AT+CMGR=", "AT+CMGL=", "AT+CMGD=")):
                return self._read_sms(up)
            if up.startswith("AT+CMGS="):
                arg = up[8:]
                valid = arg.isdigit() if self._cmgf == 0 else arg.startswith('"')
                return [], ">" if valid else "+CMS ERROR: 304", []
            call_reply = self.calls.handle(cmd, up)
            if call_reply is not None:
                return call_reply
            if self._flavour == "sim7600":
                return self._sim7600_gnss(up)
            return self._quectel_gnss(up)

    def _cpin(self, cmd: str) -> tuple[list[str], str, list[str]]:
        if self._sim_busy > 0:
            self._sim_busy -= 1
            return [], self._cme(14), []
        if self._sim_state == "not inserted":
            return [], self._cme(10), []
        if cmd.upper() == "AT+CPIN?":
            return [f"+CPIN: {self._sim_state}"], "OK", []
        if not cmd.upper().startswith("AT+CPIN="):
            return [], "ERROR", []
        if self._sim_state != "SIM PIN":
            return [], self._cme(3), []
        if cmd[8:].strip().strip('"') != self._pin:
            self._pin_tries -= 1
            if self._pin_tries == 0:
                self._sim_state = "SIM PUK"
            return [], self._cme(16), []
        self._sim_state = "READY"
        return [], "OK", ["+CPIN: READY", "SMS DONE", "PB DONE"]

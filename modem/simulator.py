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
sequence) sent just before the answer to the host's first command. ``hung = True`` makes it read commands and never answer (a firmware hang). ``transcript`` keeps ``(direction, line)`` pairs: ``"host"`` for
what the modem received, ``"modem"`` for what it sent (secrets included: it is a test tool).

Received SMS: ``deliver_sms(number, text)`` stores SMS-DELIVER PDUs in the SIM store and announces
each with ``+CMTI``; ``AT+CMGR``/``AT+CMGL`` (PDU mode) read them and ``AT+CMGD`` deletes them.

Test-only: never used on the device.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Literal

from modem import sms
from modem.sim_calls import SimCalls

Where = Literal["before", "between", "after"]

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
_CTRL_Z, _ESC = 0x1A, 0x1B


@dataclass
class _Fault:
    prefix: str
    kind: str  # "delay" | "error" | "garble" | "urc"
    seconds: float = 0.0
    line: str | bytes = ""
    lines: tuple[str, ...] = ()
    where: Where = "between"


class ModemSimulator:
    """AT modem on a pty. Use as a context manager or call ``start()``/``stop()``.

    Args:
        flavour: ``"sim7600"`` or ``"quectel"`` (ATI/CGMM replies and GNSS commands).
        pin: the SIM's PIN (used when ``sim_state`` is ``"SIM PIN"``).
        sim_state: ``"READY"``, ``"SIM PIN"``, ``"SIM PUK"`` or ``"not inserted"``.
        verbose_errors: whether ``AT+CMEE=2`` is supported (else it answers ``ERROR``).
    """

    def __init__(self, flavour: str = "sim7600", *, pin: str = "1234", sim_state: str = "READY",
                 verbose_errors: bool = True) -> None:
        self._check_flavour(flavour)
        self._check_sim_state(sim_state)
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
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
        self._gnss_on = False
        self._fix: tuple[float, float, float] | None = None
        self.gnss_time = datetime(2026, 11, 30, 23, 5, 28, tzinfo=timezone.utc)
        self._faults: list[_Fault] = []
        self._transcript: list[tuple[str, str]] = []
        self._cmgf = 0
        self._submit_errors: list[str] = []
        self._boot_urcs: list[str] = []
        #: While True the modem reads commands and answers nothing (firmware hang).
        self.hung = False
        #: How often the modem came back after :meth:`vanish` (power-cycles, USB resets).
        self.boots = 0
        #: ``(number, text)`` per SMS part received (PDU parts decoded, text mode as typed).
        self.sent_sms: list[tuple[str, str]] = []
        #: Raw PDU hex per part received in PDU mode.
        self.sent_pdus: list[str] = []
        #: Received SMS in the SIM's message store: index → [stat (0 unread, 1 read), PDU hex].
        self._stored_sms: dict[int, list] = {}
        self._cnmi_mt = 1  # AT+CNMI <mt>: 1 = store and announce with +CMTI
        self._sms_ref = 0
        #: Storage slots of the SIM (``deliver_sms`` raises OverflowError beyond this).
        self.sms_capacity = 30
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._vanish = threading.Event()
        self._abort = threading.Event()  # set by stop() and vanish(): cuts delays short
        self.port = ""
        #: The voice-call model (issue 11, :mod:`modem.sim_calls`).
        self.calls = SimCalls(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ModemSimulator:
        """Create the pty (raw mode) and start answering. ``port`` is the slave's path."""
        if self._thread is not None:
            return self
        self._master, self._slave = os.openpty()
        return self._start_on_pty()

    def _start_on_pty(self) -> ModemSimulator:
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping.clear()
        self._abort.clear()
        self._thread = threading.Thread(target=self._run, name="modem-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close every fd (idempotent)."""
        self._stopping.set()
        self._abort.set()
        self._wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for name in ("_master", "_slave", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> ModemSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wake(self) -> None:
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

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

    @property
    def gnss_fix(self) -> tuple[float, float, float] | None:
        """``(lat, lon, hdop)`` in decimal degrees, or None for no fix."""
        return self._fix

    @gnss_fix.setter
    def gnss_fix(self, value: tuple[float, float, float] | None) -> None:
        with self._lock:
            self._fix = value

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

    @property
    def transcript(self) -> list[tuple[str, str]]:
        """Copy of ``(direction, line)`` pairs; direction ``"host"`` or ``"modem"``."""
        with self._lock:
            return list(self._transcript)

    def commands(self) -> list[str]:
        """The commands received so far, in order."""
        return [line for d, line in self.transcript if d == "host"]

    # -- received SMS ------------------------------------------------------------------------

    def deliver_sms(self, number: str, text: str, *, timestamp: datetime | None = None) -> list[int]:
        """An SMS from ``number`` arrives: stored as SMS-DELIVER PDUs (concatenated parts when
        long) in the SIM store and announced with ``+CMTI: "SM",<index>`` per part (when
        ``AT+CNMI`` mode 1 is on, the default). Read back with ``AT+CMGR``/``AT+CMGL`` in PDU
        mode, removed with ``AT+CMGD``. Returns the storage indexes.

        Raises sms.SmsError for a bad number/empty text, OverflowError when the store is full."""
        ts = timestamp or datetime.now(timezone.utc)
        with self._lock:
            self._sms_ref = (self._sms_ref + 1) % 256
            pdus = sms.encode_deliver(number, text, timestamp=ts, reference=self._sms_ref)
            free = [i for i in range(1, self.sms_capacity + 1) if i not in self._stored_sms]
            if len(free) < len(pdus):
                raise OverflowError("the simulated SIM message store is full")
            indexes = free[:len(pdus)]
            for index, pdu in zip(indexes, pdus):
                self._stored_sms[index] = [0, pdu]
            announce = self._cnmi_mt == 1
        if announce:
            for index in indexes:
                self.inject_urc(f'+CMTI: "SM",{index}')
        return indexes

    @property
    def stored_sms(self) -> dict[int, str]:
        """Copy of the SIM message store: index → PDU hex."""
        with self._lock:
            return {i: pdu for i, (_stat, pdu) in self._stored_sms.items()}

    def _read_sms(self, up: str) -> tuple[list[str], str, list[str]]:
        """``AT+CNMI``, ``AT+CMGR=<i>``, ``AT+CMGL=<stat>``, ``AT+CMGD=<i>[,<flag>]`` (PDU mode
        only; text mode answers ``+CMS ERROR: 302``). Lock held."""
        if up.startswith("AT+CNMI="):
            fields = up[8:].split(",")
            if len(fields) < 2 or not all(f.strip().isdigit() for f in fields):
                return [], "+CMS ERROR: 304", []
            self._cnmi_mt = int(fields[1])
            return [], "OK", []
        if self._cmgf != 0:
            return [], "+CMS ERROR: 302", []
        arg = up.partition("=")[2].strip()
        if up.startswith("AT+CMGR="):
            if not arg.isdigit() or int(arg) not in self._stored_sms:
                return [], "+CMS ERROR: 321", []
            entry = self._stored_sms[int(arg)]
            stat, pdu = entry
            entry[0] = 1
            return [f"+CMGR: {stat},,{_tpdu_length(pdu)}", pdu], "OK", []
        if up.startswith("AT+CMGL="):
            if arg not in ("0", "1", "4"):
                return [], "+CMS ERROR: 304", []
            lines = []
            for index in sorted(self._stored_sms):
                entry = self._stored_sms[index]
                if arg == "4" or int(arg) == entry[0]:
                    lines += [f"+CMGL: {index},{entry[0]},,{_tpdu_length(entry[1])}", entry[1]]
                    entry[0] = 1
            return lines, "OK", []
        # AT+CMGD=<index>[,<delflag>]: flag 1 deletes all read messages, 4 all messages
        index, _, flag = arg.partition(",")
        if flag.strip() in ("1", "4"):
            for i in [i for i, e in self._stored_sms.items() if flag.strip() == "4" or e[0] == 1]:
                del self._stored_sms[i]
            return [], "OK", []
        if not index.isdigit() or int(index) not in self._stored_sms:
            return [], "+CMS ERROR: 321", []
        del self._stored_sms[int(index)]
        return [], "OK", []

    # -- faults ------------------------------------------------------------------------------

    def inject_urc(self, line: str) -> None:
        """Send ``\\r\\n<line>\\r\\n`` now, whatever the modem is doing."""
        self._send_lines([line])

    def urc_during_next(self, command_prefix: str, lines: list[str],
                        where: Where = "between") -> None:
        """Put URC ``lines`` into the next reply to a command starting with ``command_prefix``:
        ``"before"`` the info lines, ``"between"`` info and final code, or ``"after"`` it."""
        self._add(_Fault(command_prefix, "urc", lines=tuple(lines), where=where))

    def delay_next(self, command_prefix: str, seconds: float) -> None:
        """Answer the next matching command only after ``seconds``."""
        self._add(_Fault(command_prefix, "delay", seconds=seconds))

    def error_next(self, command_prefix: str, line: str) -> None:
        """Answer the next matching command with ``line`` (e.g. ``"+CME ERROR: 14"``) only."""
        self._add(_Fault(command_prefix, "error", line=line))

    def garble_next(self, command_prefix: str, line: str | bytes) -> None:
        """Replace the info lines of the next matching reply with ``line`` (str or raw bytes)."""
        self._add(_Fault(command_prefix, "garble", line=line))

    def vanish(self) -> None:
        """Close the master side as a USB unplug would: the host's port read/write fail."""
        self._vanish.set()
        self._abort.set()
        self._wake()

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

    def power(self, on: bool) -> None:
        """Model the modem's supply switched by a GPIO: off = the port vanishes, on = it
        reappears on a new pty (:meth:`reappear`)."""
        if on:
            if self._vanish.is_set() or self._thread is None:
                self.reappear()
        else:
            self.vanish()

    def submit_error_next(self, line: str) -> None:
        """Answer the next SMS body (after the ``> `` prompt) with ``line`` instead of
        ``+CMGS: <mr>``, e.g. ``"+CMS ERROR: 331"`` (no network service)."""
        with self._lock:
            self._submit_errors.append(line)

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, cmd: str) -> list[_Fault]:
        with self._lock:
            taken, kinds = [], set()
            for fault in list(self._faults):
                if cmd.upper().startswith(fault.prefix.upper()) and fault.kind not in kinds:
                    kinds.add(fault.kind)
                    taken.append(fault)
                    self._faults.remove(fault)
            return taken

    # -- I/O ---------------------------------------------------------------------------------

    def _record(self, direction: str, line: str) -> None:
        with self._lock:
            self._transcript.append((direction, line))

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            fd = self._master
            if fd is None or self._vanish.is_set():
                return
            try:
                os.write(fd, data)
            except OSError:
                pass

    def _send_lines(self, lines: list[str | bytes]) -> None:
        data = b""
        for line in lines:
            raw = line if isinstance(line, bytes) else line.encode("utf-8")
            self._record("modem", raw.decode("utf-8", errors="replace"))
            data += b"\r\n" + raw + b"\r\n"
        self._write(data)

    def _run(self) -> None:
        buf = bytearray()
        entry: tuple[str, str] | None = None  # SMS text entry: ("pdu", length) / ("text", number)
        while not self._stopping.is_set():
            if self._vanish.is_set():
                with self._write_lock:
                    if self._master is not None:
                        os.close(self._master)
                        self._master = None
                return
            master, wake = self._master, self._wake_r
            if master is None or wake is None:
                return
            ready, _, _ = select.select([master, wake], [], [], 0.5)
            if wake in ready:
                os.read(wake, 64)
            if master not in ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # no slave open (host closed the port): wait for the next one
                self._stopping.wait(0.02)
                continue
            buf += chunk
            while buf:
                if entry is not None:  # SMS text entry after the "> " prompt
                    end = next((i for i, b in enumerate(buf) if b in (_CTRL_Z, _ESC)), -1)
                    if end < 0:
                        break
                    text, cancel = bytes(buf[:end]).decode("utf-8", "replace"), buf[end] == _ESC
                    del buf[:end + 1]
                    self._record("host", text + ("<ESC>" if cancel else "<Ctrl-Z>"))
                    if self._echo:
                        self._write(text.encode())
                    self._send_lines(["OK"] if cancel else self._submit(entry, text))
                    entry = None
                    continue
                cut = buf.find(b"\r")
                if cut < 0:
                    break
                cmd = bytes(buf[:cut]).decode("utf-8", "replace").strip()
                del buf[:cut + 1]
                if cmd:
                    entry = self._handle(cmd)

    # -- command handling --------------------------------------------------------------------

    def _submit(self, entry: tuple[str, str], body: str) -> list[str | bytes]:
        """Reply to an SMS body: ``+CMGS: <mr>`` ``OK``, or ``+CMS ERROR: 304`` for a PDU that
        does not decode or whose length differs from the one given to ``AT+CMGS``."""
        mode, arg = entry
        with self._lock:
            if self._submit_errors:
                return [self._submit_errors.pop(0)]
        if mode == "text":
            number, text = arg.strip('"'), body
            if self._cscs == "UCS2":  # 27.005 text mode with UCS2: both as UTF-16BE hex
                try:
                    number, text = (bytes.fromhex(x).decode("utf-16-be") for x in (number, text))
                except ValueError:
                    return ["+CMS ERROR: 304"]
        else:
            body = body.strip()
            try:
                submit = sms.decode_submit(body)
                sca = int(body[:2], 16)
                if len(body) // 2 - 1 - sca != int(arg):
                    raise ValueError("length mismatch")
            except ValueError:
                return ["+CMS ERROR: 304"]
            number, text = submit.number, submit.text
        with self._lock:
            if mode == "pdu":
                self.sent_pdus.append(body)
            self.sent_sms.append((number, text))
            ref = len(self.sent_sms) % 256
        return [f"+CMGS: {ref}", "OK"]

    def _handle(self, cmd: str) -> tuple[str, str] | None:
        """Answer one command; returns the SMS entry mode after a ``> `` prompt was sent."""
        self._record("host", cmd)
        if self.hung:
            return None
        with self._lock:
            boot, self._boot_urcs = self._boot_urcs, []
        if boot:
            self._send_lines(list(boot))
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
            for fam in _FAMILIES:
                if up == f"AT+{fam}?":
                    return [f"+{fam}: {self._reg_n[fam]},{self._reg[fam]}"], "OK", []
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
            return [f"+CGPSINFO: {_dm(lat, 2)},{'N' if lat >= 0 else 'S'},"
                    f"{_dm(lon, 3)},{'E' if lon >= 0 else 'W'},{t:%d%m%y},{t:%H%M%S}.0,"
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
            return [f"+QGPSLOC: {t:%H%M%S}.000,{lat:.5f},{lon:.5f},{hdop:.1f},12.3,3,0.0,0.0,0.0,"
                    f"{t:%d%m%y},08"], "OK", []
        return [], "ERROR", []


def _tpdu_length(pdu_hex: str) -> int:
    """Octets of a PDU without its SMSC part (the ``<length>`` of ``+CMGR``/``+CMGL``)."""
    return len(pdu_hex) // 2 - 1 - int(pdu_hex[:2], 16)


def _dm(value: float, width: int) -> str:
    """Decimal degrees → NMEA ``ddmm.mmmmmm`` (width = digits of degrees)."""
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60
    return f"{degrees:0{width}d}{minutes:09.6f}"

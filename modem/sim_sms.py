"""The simulator's SMS model: the SIM message store (received SMS, 3GPP TS 27.005 §3.4–3.5
``+CMTI``/``AT+CMGR``/``AT+CMGL``/``AT+CMGD``, ``AT+CNMI``) and the SMS submit (``AT+CMGS``
bodies in PDU and text mode). :class:`SimSms` is a mixin of
:class:`modem.simulator.ModemSimulator`.

Test-only: never used on the device.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from modem import sms

__all__ = ["SimSms"]


class SimSms:
    """SIM message store and SMS submit; uses the simulator's ``_lock``, ``_cmgf``, ``_cscs``
    and ``inject_urc``."""

    _lock: threading.RLock
    _cmgf: int
    _cscs: str

    def _init_sms(self) -> None:
        self._submit_errors: list[str] = []
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


    def submit_error_next(self, line: str) -> None:
        """Answer the next SMS body (after the ``> `` prompt) with ``line`` instead of
        ``+CMGS: <mr>``, e.g. ``"+CMS ERROR: 331"`` (no network service)."""
        with self._lock:
            self._submit_errors.append(line)


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



def _tpdu_length(pdu_hex: str) -> int:
    """Octets of a PDU without its SMSC part (the ``<length>`` of ``+CMGR``/``+CMGL``)."""
    return len(pdu_hex) // 2 - 1 - int(pdu_hex[:2], 16)

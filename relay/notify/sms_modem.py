"""SMS to and from contacts through a modem attached to the relay (SPEC §3, issue 4).

Reuses the device's AT driver (:class:`modem.at.Modem`: PDU-mode sending with GSM 7-bit
or UCS2 and concatenation) and PDU module (:func:`modem.sms.decode_deliver`) — the same
code that runs on the Pi, tested against the simulator and SIM7600/Quectel replies.

Inbound SMS (contacts' replies) are read in PDU mode: the modem stores each one and says
``+CMTI: "SM",<index>`` (``AT+CNMI=2,1,0,0,0``); the reader thread then lists every stored
message (``AT+CMGL=4``), joins concatenated parts, hands each complete message to
``on_reply(number, text, received_at)`` and deletes it (``AT+CMGD``) only after the handler
returned — a reply that could not be recorded (Redis down) stays on the SIM and is offered
again. The store is also polled every ``poll_s`` seconds, so a missed URC only delays a reply.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from modem import sms
from modem.at import Modem, ModemError, ModemGone

from . import Delivery

__all__ = ["ModemSmsChannel", "parse_cmgl"]

log = logging.getLogger(__name__)

#: Parts of a concatenated SMS still incomplete after this long are taken as they are, s.
PARTIAL_MAX_AGE_S = 600.0

ReplyHandler = Callable[[str, str, float], None]


def parse_cmgl(lines: list[str]) -> list[tuple[int, str]]:
    """``AT+CMGL`` information lines in PDU mode → ``[(index, pdu_hex), …]``. A header whose
    PDU line is missing is skipped (logged)."""
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.upper().startswith("+CMGL:"):
            try:
                index = int(line.partition(":")[2].split(",")[0])
            except ValueError:
                log.warning("modem: unreadable +CMGL header %r", line[:60])
                i += 1
                continue
            if i + 1 < len(lines) and not lines[i + 1].upper().startswith("+CMGL:"):
                out.append((index, lines[i + 1].strip()))
                i += 2
                continue
            log.warning("modem: +CMGL entry %d has no PDU line", index)
        i += 1
    return out


class ModemSmsChannel:
    """SMS channel ``sms-modem`` over an AT modem, plus the inbound reader.

    Args:
        port: serial device of the modem's AT port (``/dev/ttyUSB2``, a simulator pty).
        flavour: ``sim7600``, ``quectel`` or ``auto``.
        sim_pin: the SIM's PIN or ``""`` (a secret; never logged).
        on_reply: ``(number, text, received_at) -> None`` for each inbound SMS; ``number`` as
            the network gave it (``+45…``), ``received_at`` Unix seconds (the SMSC stamp).
            May raise: the message then stays on the SIM and is offered again.
        poll_s: interval of the safety-net poll of the SIM store, seconds.
        send_timeout_s: per-step timeout for each SMS part, seconds.
        modem_factory: ``(port, urc_handler=…, flavour=…) -> Modem`` (tests).
    """

    name = "sms-modem"

    def __init__(self, port: str, *, flavour: str = "auto", sim_pin: str = "",
                 on_reply: ReplyHandler | None = None, poll_s: float = 10.0,
                 send_timeout_s: float = 60.0, modem_factory: Callable[..., Any] = Modem) -> None:
        self.port = port
        self.on_reply = on_reply
        self.poll_s = poll_s
        self.send_timeout_s = send_timeout_s
        self._pin = sim_pin
        self._modem = modem_factory(port, urc_handler=self._on_urc, flavour=flavour)
        if hasattr(self._modem, "add_reinit_listener"):  # a restarted modem: our settings again
            self._modem.add_reinit_listener(lambda m: self._sms_settings())
        self._ready = False
        self._lock = threading.Lock()  # open/init and whole messages (parts stay together)
        self._wake: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._partial_seen: dict[tuple[str, int], float] = {}
        #: Inbound messages handed to ``on_reply`` / PDUs that could not be decoded.
        self.received = 0
        self.undecodable = 0

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the inbound reader (it opens the modem; failures are retried, not raised)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="relay-sms-inbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader and close the modem."""
        self._stop.set()
        self._wake.put("stop")
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            self._modem.close()
            self._ready = False

    def _ensure_ready(self) -> None:
        """Open and initialise the modem if needed (lock held). Raises ModemError."""
        if self._ready and not self._modem.gone:
            return
        self._modem.close()
        self._modem.open()
        self._modem.init(pin=self._pin or None)
        self._sms_settings()
        self._ready = True

    def _sms_settings(self) -> None:
        """PDU mode and new-SMS indications (after init, and after the driver re-initialised
        a modem that restarted). Raises ModemError for PDU mode."""
        self._modem.command("AT+CMGF=0")
        try:
            self._modem.command("AT+CNMI=2,1,0,0,0")
        except ModemError as exc:  # polling still finds replies
            log.warning("modem does not take AT+CNMI (%s); replies are found by polling", exc)

    # --- sending ------------------------------------------------------------------------

    def send(self, to: str, subject: str, body: str) -> Delivery:
        """Send ``body`` to ``to`` (E.164); ``subject`` is not used (SMS has none).
        Never raises for a modem failure: the Delivery says what went wrong."""
        with self._lock:
            try:
                self._ensure_ready()
                refs = self._modem.send_sms(to, body, timeout_s=self.send_timeout_s)
            except sms.SmsError as exc:
                return Delivery(self.name, False, f"cannot encode: {exc}")
            except ModemGone as exc:
                self._ready = False
                return Delivery(self.name, False, f"modem gone: {exc}")
            except ModemError as exc:
                return Delivery(self.name, False, str(exc)[:300])
        return Delivery(self.name, True, f"{len(refs)} part(s), message reference(s) {', '.join(map(str, refs))}")

    # --- inbound ------------------------------------------------------------------------

    def _on_urc(self, line: str) -> None:
        # Reader thread of the driver: only hand it over (no modem commands here).
        if line.upper().startswith(("+CMTI", "RDY", "SMS DONE")):
            self._wake.put(line)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_inbox()
            except ModemError as exc:
                log.warning("modem inbox: %s; retrying in %.0f s", exc, self.poll_s)
                with self._lock:
                    self._ready = False
            except Exception:
                log.exception("modem inbox: unexpected error")
            try:
                self._wake.get(timeout=self.poll_s)
                time.sleep(0.05)  # let the other parts of a long message arrive
                while not self._wake.empty():
                    self._wake.get_nowait()
            except queue.Empty:
                pass

    def poll_inbox(self) -> int:
        """Read the SIM store once, hand complete messages to ``on_reply`` and delete them.
        Returns how many messages were handed over. Raises ModemError (modem trouble)."""
        with self._lock:
            self._ensure_ready()
            self._modem.command("AT+CMGF=0")
            entries = parse_cmgl(self._modem.command("AT+CMGL=4", timeout_s=30))
        groups: dict[tuple[str, int], list[tuple[int, sms.Deliver]]] = {}
        handled = 0
        now = time.monotonic()
        for index, pdu in entries:
            try:
                msg = sms.decode_deliver(pdu)
            except sms.SmsError as exc:
                self.undecodable += 1
                log.warning("modem inbox: SMS %d cannot be decoded (%s); deleted", index, exc)
                self._delete([index])
                continue
            if msg.concat is None:
                handled += self._hand_over([index], msg.number, msg.text, msg.timestamp)
            else:
                groups.setdefault((msg.number, msg.concat[0]), []).append((index, msg))
        for key, parts in groups.items():
            total = parts[0][1].concat[1]  # type: ignore[index]
            first_seen = self._partial_seen.setdefault(key, now)
            if len({p.concat[2] for _, p in parts}) < total and now - first_seen < PARTIAL_MAX_AGE_S:  # type: ignore[index]
                continue  # wait for the missing parts
            self._partial_seen.pop(key, None)
            parts.sort(key=lambda item: item[1].concat[2])  # type: ignore[index]
            text = "".join(p.text for _, p in parts)
            handled += self._hand_over([i for i, _ in parts], key[0], text, parts[0][1].timestamp)
        return handled

    def _hand_over(self, indexes: list[int], number: str, text: str, stamp: Any) -> int:
        received_at = stamp.timestamp() if stamp is not None else time.time()
        if self.on_reply is not None:
            try:
                self.on_reply(number, text, received_at)
            except Exception:
                log.exception("modem inbox: reply from %s not recorded; kept on the SIM for retry", number[:6] + "…")
                return 0
        self.received += 1
        self._delete(indexes)
        return 1

    def _delete(self, indexes: list[int]) -> None:
        with self._lock:
            for index in indexes:
                try:
                    self._modem.command(f"AT+CMGD={index}")
                except ModemError as exc:
                    log.warning("modem inbox: cannot delete SMS %d: %s", index, exc)

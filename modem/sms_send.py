"""Sending SMS through the AT channel: PDU mode (3GPP TS 27.005 §3.5.1 ``AT+CMGS=<length>``,
PDUs from :mod:`modem.sms`) and text mode (``AT+CMGF=1``, ``AT+CSCS``/``AT+CSMP``).

:class:`SmsSending` is a mixin of :class:`modem.at.Modem`; it uses only the channel primitives
of :class:`modem.link.AtLink` (``command``/``_transact`` under ``_cmd_lock``).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from typing import TypeVar

from . import sms
from .errors import ModemError, ModemReplyError, ModemTimeout
from .link import AtLink
from .replies import _fields, _one

__all__ = ["SmsSending"]

_T = TypeVar("_T")

log = logging.getLogger("modem.at")


class SmsSending(AtLink):
    """SMS submit on top of :class:`modem.link.AtLink` (see :class:`modem.at.Modem`)."""

    _sms_pdu_mode = False
    _sms_reference = 0

    def _on_open(self) -> None:
        super()._on_open()
        self._sms_pdu_mode = False

    def _with_recovery(self, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` (one whole SMS step); :class:`modem.at.Modem` re-initialises a
        restarted modem first and retries once after "SIM PIN required"."""
        return attempt()

    def _init_sms_state(self) -> None:
        self._sms_pdu_mode = False
        self._sms_reference = random.randrange(256)

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
        cmd = f'AT+CMGS="{number if ira else hex16(number)}"'
        set_up_at: list[int | None] = [None]  # re-initialisations when the modes were last set

        def send_chunk(chunk: str) -> int:
            if set_up_at[0] != getattr(self, "reinits", 0):
                self.command("AT+CMGF=1")
                self._sms_pdu_mode = False
                self.command('AT+CSCS="IRA"' if ira else 'AT+CSCS="UCS2"')
                self.command("AT+CSMP=17,167,0,0" if ira else "AT+CSMP=17,167,0,8")
                set_up_at[0] = getattr(self, "reinits", 0)
            body = chunk if ira else hex16(chunk)
            try:
                self._transact(cmd, timeout, expect_prompt=True)
            except ModemTimeout:
                self._cancel_text_entry()
                raise
            lines = self._transact(cmd, timeout, payload=body.encode() + b"\x1a", echo=frozenset({body}))
            line = _one(cmd, lines, "+CMGS")
            try:
                return int(_fields(cmd, line, 1)[0])
            except ValueError:
                raise ModemReplyError(cmd, line, "message reference is not a number") from None

        with self._cmd_lock:
            return [self._with_recovery(lambda c=chunk: send_chunk(c)) for chunk in chunks]

    def next_sms_reference(self) -> int:
        """A fresh 8-bit concatenation reference (TS 23.040 §9.2.3.24.1) for a new message."""
        self._sms_reference = (self._sms_reference + 1) % 256
        return self._sms_reference

    def send_pdu(self, pdu: sms.Pdu, timeout_s: float | None = None) -> int:
        """Send one SMS-SUBMIT part (27.005 §3.5.1 PDU mode); returns its message reference
        ``<mr>``. Each step waits ``timeout_s`` (default ``sms_timeout_s``) seconds.

        A modem that restarted (boot URCs seen, or ``+CMS ERROR: 311`` SIM PIN required) is
        initialised again and the part sent once more (:meth:`modem.at.Modem.command`).

        Raises:
            CmsError, ModemTimeout (a missing prompt cancels text entry with ESC; a missing
            ``+CMGS`` after the PDU leaves it unknown whether the part went out), ModemGone,
            ModemReplyError.
        """
        timeout = self.sms_timeout_s if timeout_s is None else timeout_s
        with self._cmd_lock:
            return self._with_recovery(lambda: self._send_pdu_once(pdu, timeout))

    def _send_pdu_once(self, pdu: sms.Pdu, timeout: float) -> int:
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

"""Pure parsing of voice-call replies and unsolicited result codes (issue 11). No serial here.

Sources: 3GPP TS 27.007 §7.18 ``+CLCC`` (list current calls), §7.6 ``+CLIP`` (calling line
identification), §6.10 ``+CEER`` (extended error report), V.250 result codes ``RING``,
``NO CARRIER``, ``BUSY``, ``NO ANSWER``; 3GPP TS 24.008 table 10.5.123 (call clearing causes:
16 normal call clearing, 17 user busy, 18 no user responding, 19 user alerting no answer,
31 normal unspecified); the SIM7600 AT manual (``VOICE CALL: BEGIN``, ``VOICE CALL: END:
<hhmmss>``, ``MISSED_CALL: <time> <number>``, DTMF detection ``AT+DDET=1`` → ``+RXDTMF: <key>``);
the Quectel EC25 AT manual (``AT+QTONEDET=1`` → ``+QTONEDET: <ASCII code of the key>``).

:func:`call_signal` turns one URC line into a :class:`CallSignal` (or None if the line is not
about calls). A garbled call line gives a ``"garbled"`` signal, never an exception: the call
controller then asks ``AT+CLCC`` for the truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ModemReplyError

__all__ = [
    "CLCC_STATES",
    "DTMF_KEYS",
    "CallInfo",
    "CallSignal",
    "call_signal",
    "ceer_reason",
    "parse_clcc",
    "parse_clip",
]

#: ``+CLCC`` ``<stat>`` (27.007 §7.18; 6 = "disconnect", reported by SIM7600 with AT+CLCC=1).
CLCC_STATES = {0: "active", 1: "held", 2: "dialing", 3: "alerting", 4: "incoming",
               5: "waiting", 6: "disconnect"}
#: Keys a DTMF tone can carry (ITU-T Q.23).
DTMF_KEYS = frozenset("0123456789*#ABCD")

_QUOTED = re.compile(r'"([^"]*)"')


@dataclass(frozen=True)
class CallInfo:
    """One ``+CLCC`` line: ``index`` (1–7), ``outgoing`` (``<dir>`` 0 = mobile originated),
    ``state`` (a :data:`CLCC_STATES` value), ``voice`` (``<mode>`` 0), ``number`` ("" when
    withheld/absent) and its ``number_type`` (145 international, 129 national/unknown)."""

    index: int
    outgoing: bool
    state: str
    voice: bool
    number: str = ""
    number_type: int | None = None


def parse_clcc(line: str) -> CallInfo:
    """``+CLCC: 1,0,0,0,0,"+4512345678",145`` → CallInfo. Raises ModemReplyError."""
    head, _, rest = line.partition(":")
    if head.strip().upper() != "+CLCC":
        raise ModemReplyError("AT+CLCC", line, "not a +CLCC line")
    fields = [f.strip() for f in rest.split(",")]
    if len(fields) < 5 or not all(f.isdigit() for f in fields[:5]):
        raise ModemReplyError("AT+CLCC", line, "expected <id>,<dir>,<stat>,<mode>,<mpty>")
    index, direction, stat, mode = (int(f) for f in fields[:4])
    if stat not in CLCC_STATES or direction not in (0, 1):
        raise ModemReplyError("AT+CLCC", line, f"<stat> {stat} / <dir> {direction} out of range")
    number = fields[5].strip('"') if len(fields) > 5 else ""
    ntype = int(fields[6]) if len(fields) > 6 and fields[6].isdigit() else None
    return CallInfo(index, direction == 0, CLCC_STATES[stat], mode == 0, number, ntype)


def parse_clip(line: str) -> tuple[str, int | None]:
    """``+CLIP: "+4512345678",145,"",0,"",0`` → (number, type). The number is "" when the
    caller withheld it (``<CLI validity>`` 1/2, or an empty number). Raises ModemReplyError."""
    head, _, rest = line.partition(":")
    if head.strip().upper() != "+CLIP":
        raise ModemReplyError("+CLIP", line, "not a +CLIP line")
    m = _QUOTED.match(rest.strip())
    if m is None:
        raise ModemReplyError("+CLIP", line, "the number is not quoted")
    number = m.group(1).strip()
    tail = [f.strip() for f in rest.strip()[m.end():].split(",")[1:]]
    ntype = int(tail[0]) if tail and tail[0].isdigit() else None
    if len(tail) >= 5 and tail[4] in ("1", "2"):  # <CLI validity>: withheld / not available
        number = ""
    if number and not re.fullmatch(r"\+?[0-9*#]{1,32}", number):
        raise ModemReplyError("+CLIP", line, f"number {number!r} is not a phone number")
    return number, ntype


@dataclass(frozen=True)
class CallSignal:
    """What one URC says about calls. ``kind``:

    ``ring`` (RING/+CRING), ``clip`` (caller id: ``number``), ``begin`` (the far end answered:
    SIM7600 ``VOICE CALL: BEGIN``), ``end`` (the call is over: ``VOICE CALL: END``, ``NO
    CARRIER``, ``MISSED_CALL``; ``reason`` ``"no_carrier"``/``"ended"``/``"missed"``), ``busy``,
    ``no_answer``, ``clcc`` (an unsolicited ``+CLCC``: ``info``), ``dtmf`` (``key`` from the far
    end), ``garbled`` (a call line that does not parse: ``line``)."""

    kind: str
    line: str = ""
    number: str = ""
    key: str = ""
    reason: str = ""
    info: CallInfo | None = None


def call_signal(line: str) -> CallSignal | None:
    """Classify one URC line (see :class:`CallSignal`); None when it is not about calls."""
    text = line.strip()
    upper = text.upper()
    if upper == "RING" or upper.startswith("+CRING:"):
        return CallSignal("ring", text)
    if upper == "NO CARRIER":
        return CallSignal("end", text, reason="no_carrier")
    if upper == "BUSY":
        return CallSignal("busy", text)
    if upper == "NO ANSWER":
        return CallSignal("no_answer", text)
    head = upper.partition(":")[0].strip()
    try:
        if head == "+CLIP":
            number, _ = parse_clip(text)
            return CallSignal("clip", text, number=number)
        if head == "+CLCC":
            return CallSignal("clcc", text, info=parse_clcc(text))
        if head == "VOICE CALL":
            word = upper.partition(":")[2].strip()
            if word.startswith("BEGIN"):
                return CallSignal("begin", text)
            if word.startswith("END"):
                return CallSignal("end", text, reason="ended")
            return CallSignal("garbled", text)
        if head == "MISSED_CALL":
            number = text.rsplit(" ", 1)[-1] if " " in text.partition(":")[2].strip() else ""
            return CallSignal("end", text, number=number, reason="missed")
        if head in ("+RXDTMF", "+DTMF"):
            key = text.partition(":")[2].strip().split(",")[0].strip().upper()
            if key in DTMF_KEYS:
                return CallSignal("dtmf", text, key=key)
            return CallSignal("garbled", text)
        if head == "+QTONEDET":
            code = text.partition(":")[2].strip()
            key = chr(int(code)).upper() if code.isdigit() and int(code) < 128 else ""
            if key in DTMF_KEYS and key:
                return CallSignal("dtmf", text, key=key)
            return CallSignal("garbled", text)
    except ModemReplyError:
        return CallSignal("garbled", text)
    return None


#: Phrases of a +CEER report (24.008 cause texts as SIM7600/Quectel print them) → end reason.
_CEER_TEXT = (
    ("normal call clearing", "remote_hangup"), ("normal, unspecified", "remote_hangup"),
    ("normal unspecified", "remote_hangup"), ("user busy", "busy"),
    ("no user responding", "no_answer"), ("no answer", "no_answer"),
)
_CEER_CODES = {16: "remote_hangup", 31: "remote_hangup", 17: "busy", 18: "no_answer",
               19: "no_answer"}


def ceer_reason(lines: list[str]) -> str:
    """Why the last call ended, from the ``AT+CEER`` answer: ``"remote_hangup"`` (normal
    clearing: the far end hung up), ``"busy"``, ``"no_answer"``, else ``"dropped"`` (any other
    cause — radio link lost, network failure — and also an unreadable report: a call that
    may have dropped is treated as dropped, so it is dialled again)."""
    text = " ".join(lines).lower()
    for phrase, reason in _CEER_TEXT:
        if phrase in text:
            return reason
    for number in re.findall(r"\b(\d{1,3})\b", text):
        if int(number) in _CEER_CODES:
            return _CEER_CODES[int(number)]
    return "dropped"


def parse_ims_registration(line: str) -> bool | None:
    """IMS (VoLTE) registration from ``+CIREG: <n>,<reg_info>[,…]`` (27.007 §8.71; reg_info 1 =
    registered) or Quectel ``+QCFG: "ims",<enabled>,<volte_ready>`` (EC25 manual: 1 = VoLTE
    ready). None when the line says nothing readable."""
    head, _, rest = line.partition(":")
    fields = [f.strip().strip('"').lower() for f in rest.split(",")]
    head = head.strip().upper()
    if head == "+CIREG" and len(fields) >= 2 and fields[1] in ("0", "1"):
        return fields[1] == "1"
    if head == "+QCFG" and len(fields) >= 3 and fields[0] == "ims" and fields[2] in ("0", "1"):
        return fields[2] == "1"
    return None

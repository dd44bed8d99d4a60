"""SMS-SUBMIT PDUs: GSM 03.38 7-bit vs UCS2 choice, concatenation, encode and decode. Pure.

Source: SPEC §2 (SMS with automatic GSM 7-bit / UCS2 and concatenated parts: 160/153 GSM-7,
70/67 UCS2 characters); 3GPP TS 23.038 (GSM 7-bit default alphabet and extension table, UCS2),
TS 23.040 §9.2.2.2 (SMS-SUBMIT), §9.2.3.24.1 (concatenation IE, 8-bit reference), TS 27.005
(PDU mode ``AT+CMGS=<length>``).

Why PDU mode: text mode cannot send concatenated messages portably and its character set
(``AT+CSCS``) differs per modem; a PDU is the same on SIM7600 and Quectel.

Lengths: GSM 7-bit counts septets (extension characters such as ``€`` ``{`` ``[`` count 2 and a
pair is never split); UCS2 counts UTF-16 code units (an emoji counts 2, a surrogate pair is never
split).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from protocol.errors import LonewatchError

Encoding = Literal["gsm7", "ucs2"]

#: TS 23.038 §6.2.1 default alphabet, index = septet value (0x1B is the escape to the extension).
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: TS 23.038 §6.2.1.1 extension table: character → septet after the 0x1B escape.
GSM7_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D,
                  "]": 0x3E, "|": 0x40, "€": 0x65}
_BASIC_INDEX = {ch: i for i, ch in enumerate(GSM7_BASIC) if ch != "\x1b"}
_EXT_REVERSE = {v: k for k, v in GSM7_EXTENSION.items()}

SINGLE_LIMIT = {"gsm7": 160, "ucs2": 70}
PART_LIMIT = {"gsm7": 153, "ucs2": 67}
_DCS = {"gsm7": 0x00, "ucs2": 0x08}


class SmsError(LonewatchError, ValueError):
    """A number or text that cannot be sent, or a PDU that cannot be decoded."""


@dataclass(frozen=True)
class Pdu:
    """One SMS-SUBMIT ready for ``AT+CMGS=<tpdu_length>``: ``hex`` includes the leading ``00``
    (use the SIM's SMSC); ``tpdu_length`` counts octets without that SMSC part."""

    hex: str
    tpdu_length: int


@dataclass(frozen=True)
class Submit:
    """A decoded SMS-SUBMIT: ``number`` (``+`` for international), ``text``, ``encoding`` and the
    concatenation ``(reference, total, sequence)`` or None for a single message."""

    number: str
    text: str
    encoding: Encoding
    concat: tuple[int, int, int] | None = None


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM 7-bit default alphabet or its extension."""
    return all(ch in _BASIC_INDEX or ch in GSM7_EXTENSION for ch in text)


def choose_encoding(text: str) -> Encoding:
    """``"gsm7"`` when the text fits the GSM alphabet (Danish æøå do), else ``"ucs2"``."""
    return "gsm7" if is_gsm7(text) else "ucs2"


def _cost(ch: str, encoding: Encoding) -> int:
    if encoding == "gsm7":
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def length(text: str, encoding: Encoding | None = None) -> int:
    """Septets (gsm7) or UTF-16 code units (ucs2) the text occupies."""
    enc = encoding or choose_encoding(text)
    return sum(_cost(ch, enc) for ch in text)


def split(text: str, encoding: Encoding | None = None) -> list[str]:
    """The parts the text is sent in: one part up to 160 septets / 70 units, else parts of at
    most 153 / 67 (the rest of 140 octets carries the concatenation header)."""
    enc = encoding or choose_encoding(text)
    if length(text, enc) <= SINGLE_LIMIT[enc]:
        return [text]
    parts, current, used = [], "", 0
    for ch in text:
        cost = _cost(ch, enc)
        if used + cost > PART_LIMIT[enc]:
            parts.append(current)
            current, used = "", 0
        current += ch
        used += cost
    parts.append(current)
    return parts


def _septets(text: str) -> list[int]:
    out: list[int] = []
    for ch in text:
        if ch in _BASIC_INDEX:
            out.append(_BASIC_INDEX[ch])
        elif ch in GSM7_EXTENSION:
            out += [0x1B, GSM7_EXTENSION[ch]]
        else:
            raise SmsError(f"character {ch!r} is not in the GSM 7-bit alphabet")
    return out


def pack_septets(septets: list[int], fill_bits: int = 0) -> bytes:
    """Pack 7-bit values LSB first (TS 23.038 §6.1.2.1.1) after ``fill_bits`` zero bits."""
    out = bytearray()
    acc, nbits = 0, fill_bits
    for s in septets:
        acc |= (s & 0x7F) << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits > 0:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    """Inverse of :func:`pack_septets`: ``count`` septets after ``fill_bits``."""
    value = int.from_bytes(data, "little")
    return [(value >> (fill_bits + 7 * i)) & 0x7F for i in range(count)]


def _decode_gsm7(septets: list[int]) -> str:
    out, escape = [], False
    for s in septets:
        if escape:
            out.append(_EXT_REVERSE.get(s, " "))
            escape = False
        elif s == 0x1B:
            escape = True
        else:
            out.append(GSM7_BASIC[s])
    return "".join(out)


def _address(number: str) -> bytes:
    digits = number[1:] if number.startswith("+") else number
    if not digits.isdigit() or not 1 <= len(digits) <= 20 or not digits.isascii():
        raise SmsError(f"phone number {number!r} must be digits with an optional leading +")
    toa = 0x91 if number.startswith("+") else 0x81
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), toa]) + bytes.fromhex(swapped)


def encode_submit(number: str, text: str, *, reference: int = 0,
                  encoding: Encoding | None = None) -> list[Pdu]:
    """Encode ``text`` to ``number`` as one or more SMS-SUBMIT PDUs (no validity period,
    TP-MR 0 so the modem assigns it, concatenation IE with 8-bit ``reference`` if split).

    Raises SmsError for a bad number, an empty text, or more than 255 parts."""
    if not text:
        raise SmsError("empty SMS text")
    enc = encoding or choose_encoding(text)
    parts = split(text, enc)
    if len(parts) > 255:
        raise SmsError(f"text needs {len(parts)} parts; at most 255")
    address = _address(number)
    pdus = []
    for seq, part in enumerate(parts, start=1):
        udh = b"" if len(parts) == 1 else bytes([5, 0x00, 3, reference & 0xFF, len(parts), seq])
        if enc == "gsm7":
            septets = _septets(part)
            fill = (7 - len(udh) * 8 % 7) % 7 if udh else 0
            ud = udh + pack_septets(septets, fill)
            udl = (len(udh) * 8 + fill) // 7 + len(septets)
        else:
            ud = udh + part.encode("utf-16-be")
            udl = len(ud)
        first = 0x01 | (0x40 if udh else 0)  # SMS-SUBMIT, UDHI
        tpdu = bytes([first, 0x00]) + address + bytes([0x00, _DCS[enc], udl]) + ud
        pdus.append(Pdu(hex="00" + tpdu.hex().upper(), tpdu_length=len(tpdu)))
    return pdus


def decode_submit(pdu_hex: str) -> Submit:
    """Decode an SMS-SUBMIT PDU (with its SMSC prefix) as :func:`encode_submit` makes it and as
    TS 23.040 allows (any validity-period format). Raises SmsError."""
    try:
        data = bytes.fromhex(pdu_hex)
        pos = 1 + data[0]  # skip SMSC
        first = data[pos]
        if first & 0x03 != 0x01:
            raise SmsError(f"not an SMS-SUBMIT (first octet {first:02X})")
        pos += 2  # first octet, TP-MR
        ndigits, toa = data[pos], data[pos + 1]
        raw = data[pos + 2:pos + 2 + (ndigits + 1) // 2].hex().upper()
        digits = "".join(raw[i + 1] + raw[i] for i in range(0, len(raw), 2))[:ndigits]
        number = ("+" if toa & 0x70 == 0x10 else "") + digits
        pos += 2 + (ndigits + 1) // 2
        dcs = data[pos + 1]
        pos += 2
        pos += {0: 0, 2: 1, 1: 7, 3: 7}[(first >> 3) & 0x03]  # validity period
        udl = data[pos]
        ud = data[pos + 1:]
        concat, hdr = None, 0
        if first & 0x40:
            hdr = 1 + ud[0]
            i = 1
            while i < hdr:
                iei, iel = ud[i], ud[i + 1]
                if iei == 0x00 and iel == 3:
                    concat = (ud[i + 2], ud[i + 3], ud[i + 4])
                i += 2 + iel
        if dcs & 0x0C == 0x08:
            return Submit(number, ud[hdr:udl].decode("utf-16-be"), "ucs2", concat)
        if dcs & 0x0C != 0x00:
            raise SmsError(f"unsupported data coding scheme {dcs:02X}")
        fill = (7 - hdr * 8 % 7) % 7 if hdr else 0
        hdr_septets = (hdr * 8 + fill) // 7
        septets = unpack_septets(ud[hdr:], udl - hdr_septets, fill)
        if len(ud) * 8 < (udl * 7):
            raise SmsError("user data shorter than its length says")
        return Submit(number, _decode_gsm7(septets), "gsm7", concat)
    except (IndexError, ValueError, KeyError, UnicodeDecodeError) as exc:
        if isinstance(exc, SmsError):
            raise
        raise SmsError(f"cannot decode PDU {pdu_hex[:40]!r}…: {exc}") from exc


# -- SMS-DELIVER (received messages; TS 23.040 §9.2.2.1) -------------------------------------------


@dataclass(frozen=True)
class Deliver:
    """A decoded SMS-DELIVER (a received SMS): originator ``number`` (``+`` for international,
    the name for an alphanumeric sender), ``text``, ``encoding``, ``timestamp`` (the service
    centre time stamp, aware datetime) and the concatenation ``(reference, total, sequence)``
    or None for a single message."""

    number: str
    text: str
    encoding: Encoding
    timestamp: datetime | None = None
    concat: tuple[int, int, int] | None = None


def _semi_octets(value: int) -> int:
    return (value % 10) << 4 | (value // 10)


def _scts(ts: datetime) -> bytes:
    """TS 23.040 §9.2.3.11 service centre time stamp: swapped BCD, zone in quarter hours."""
    offset = ts.utcoffset() or timedelta(0)
    quarters = int(offset.total_seconds() // 900)
    zone = _semi_octets(abs(quarters)) | (0x08 if quarters < 0 else 0)
    return bytes(_semi_octets(v) for v in (ts.year % 100, ts.month, ts.day, ts.hour, ts.minute,
                                           ts.second)) + bytes([zone])


def _parse_scts(raw: bytes) -> datetime:
    def bcd(b: int) -> int:
        return (b & 0x0F) * 10 + (b >> 4)

    year, month, day, hour, minute, second = (bcd(b) for b in raw[:6])
    quarters = bcd(raw[6] & 0xF7) * (-1 if raw[6] & 0x08 else 1)
    return datetime(2000 + year, month, day, hour, minute, second,
                    tzinfo=timezone(timedelta(minutes=15 * quarters)))


def encode_deliver(number: str, text: str, *, timestamp: datetime, reference: int = 0,
                   encoding: Encoding | None = None, smsc: str = "+4540000000") -> list[str]:
    """Encode ``text`` from ``number`` as the SMS-DELIVER PDUs a modem lists with ``AT+CMGL``
    in PDU mode (hex with the SMSC address in front), split and concatenated like
    :func:`encode_submit`. ``timestamp`` must be an aware datetime. Used by the modem simulator.

    Raises SmsError for a bad number or SMSC, an empty text, or more than 255 parts."""
    if not text:
        raise SmsError("empty SMS text")
    if timestamp.tzinfo is None:
        raise SmsError("timestamp must carry a time zone")
    enc = encoding or choose_encoding(text)
    parts = split(text, enc)
    if len(parts) > 255:
        raise SmsError(f"text needs {len(parts)} parts; at most 255")
    sca = _address(smsc)
    sca_field = bytes([len(sca) - 1]) + sca[1:]  # SMSC length counts octets, not digits
    originator = _address(number)
    out = []
    for seq, part in enumerate(parts, start=1):
        udh = b"" if len(parts) == 1 else bytes([5, 0x00, 3, reference & 0xFF, len(parts), seq])
        if enc == "gsm7":
            septets = _septets(part)
            fill = (7 - len(udh) * 8 % 7) % 7 if udh else 0
            ud = udh + pack_septets(septets, fill)
            udl = (len(udh) * 8 + fill) // 7 + len(septets)
        else:
            ud = udh + part.encode("utf-16-be")
            udl = len(ud)
        first = 0x04 | (0x40 if udh else 0)  # SMS-DELIVER, no more messages, UDHI
        tpdu = (bytes([first]) + originator + bytes([0x00, _DCS[enc]]) + _scts(timestamp)
                + bytes([udl]) + ud)
        out.append((sca_field + tpdu).hex().upper())
    return out


def decode_deliver(pdu_hex: str) -> Deliver:
    """Decode an SMS-DELIVER PDU as ``AT+CMGR``/``AT+CMGL`` give it in PDU mode (with the
    SMSC prefix): numeric and alphanumeric originators, GSM 7-bit and UCS2, concatenation.

    Raises SmsError for anything else (8-bit data, SMS-STATUS-REPORT, truncated PDUs)."""
    try:
        data = bytes.fromhex(pdu_hex.strip())
        pos = 1 + data[0]  # skip SMSC
        first = data[pos]
        if first & 0x03 != 0x00:
            raise SmsError(f"not an SMS-DELIVER (first octet {first:02X})")
        ndigits, toa = data[pos + 1], data[pos + 2]
        raw = data[pos + 3:pos + 3 + (ndigits + 1) // 2]
        if toa & 0x70 == 0x50:  # alphanumeric originator: GSM 7-bit packed
            number = _decode_gsm7(unpack_septets(raw, ndigits * 4 // 7))
        else:
            hexed = raw.hex().upper()
            digits = "".join(hexed[i + 1] + hexed[i] for i in range(0, len(hexed), 2))[:ndigits]
            number = ("+" if toa & 0x70 == 0x10 else "") + digits
        pos += 3 + (ndigits + 1) // 2
        dcs = data[pos + 1]
        timestamp = _parse_scts(data[pos + 2:pos + 9])
        udl = data[pos + 9]
        ud = data[pos + 10:]
        concat, hdr = None, 0
        if first & 0x40:
            hdr = 1 + ud[0]
            i = 1
            while i < hdr:
                iei, iel = ud[i], ud[i + 1]
                if iei == 0x00 and iel == 3:
                    concat = (ud[i + 2], ud[i + 3], ud[i + 4])
                elif iei == 0x08 and iel == 4:  # 16-bit reference
                    concat = ((ud[i + 2] << 8) | ud[i + 3], ud[i + 4], ud[i + 5])
                i += 2 + iel
        if dcs & 0x0C == 0x08:
            if len(ud) < udl:
                raise SmsError("user data shorter than its length says")
            return Deliver(number, ud[hdr:udl].decode("utf-16-be"), "ucs2", timestamp, concat)
        if dcs & 0x0C != 0x00:
            raise SmsError(f"unsupported data coding scheme {dcs:02X}")
        if len(ud) * 8 < udl * 7:
            raise SmsError("user data shorter than its length says")
        fill = (7 - hdr * 8 % 7) % 7 if hdr else 0
        hdr_septets = (hdr * 8 + fill) // 7
        septets = unpack_septets(ud[hdr:], udl - hdr_septets, fill)
        return Deliver(number, _decode_gsm7(septets), "gsm7", timestamp, concat)
    except (IndexError, ValueError, KeyError, UnicodeDecodeError) as exc:
        if isinstance(exc, SmsError):
            raise
        raise SmsError(f"cannot decode PDU {pdu_hex[:40]!r}…: {exc}") from exc

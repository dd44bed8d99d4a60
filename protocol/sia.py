"""SIA DC-09 frames and replies for the sending side: build, encode, decode, parse.

Pure code (SPEC §4, STYLE "protocol/ is pure"): no sockets. ``cryptography`` is imported only
inside the AES helpers, so modules that never encrypt (the device) import this file without it.

Wire shape of a frame (SIA DC-09, SPEC §4)::

    LF  CRC(4 hex)  LEN("0"+3 hex)  "ID"  SEQ(4 digits)  [Rrcv]  Lline  [#acct]  [data]
        [Xext]...  [_HH:MM:SS,MM-DD-YYYY]  CR

CRC-16/ARC and the length both cover the span from the opening quote of the ID to the last
character before CR. Encrypted frames (``"*ADM-CID"`` …) replace everything after ``[`` with
the upper-case hex of AES-CBC(zero IV) over ``pad|data]<xdata>_timestamp``.

AES keys (what interoperates): a ``bytes`` key is used as is (16/24/32 bytes = AES-128/192/256);
a ``str`` key must be the hex spelling of the key (32/48/64 hex digits, the DC-09 convention).
pysiaalarm 3.2.2 instead uses the *ASCII bytes* of its 16/24/32-character key string, so
``SIAAccount(key="0123456789ABCDEF")`` talks to ``key=b"0123456789ABCDEF"`` here (or to the hex
string ``"0123456789ABCDEF".encode().hex()``).

All regular expressions of the wire formats live in the "Wire formats" block below.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from protocol.contact_id import (
    CONTACT_ID_EVENTS,
    ContactId,
    check_account,
    contact_id_for,
    sia_code,
)
from protocol.errors import ValidationError
from protocol.sia_codec import (
    _HEX_RE,
    SiaFrameError,
    _aes,
    aes_key,
    ascii_text,
    crc16_arc,
    format_timestamp,
    parse_timestamp,
    wrap_frame,
)
from protocol.sia_position import (
    PositionText,
    format_latitude,
    format_longitude,
    format_position_text,
    parse_position,
    parse_position_text,
)

__all__ = [
    "CONTACT_ID_EVENTS",
    "EVENT_IDS",
    "REPLY_IDS",
    "ContactId",
    "DecodedFrame",
    "PositionText",
    "SiaFrame",
    "SiaFrameError",
    "SiaReply",
    "aes_key",
    "ascii_text",
    "check_account",
    "contact_id_for",
    "crc16_arc",
    "decode_frame",
    "encode_frame",
    "format_latitude",
    "format_longitude",
    "format_position_text",
    "format_timestamp",
    "parse_position",
    "parse_position_text",
    "parse_reply",
    "parse_timestamp",
    "reply_complete",
    "sia_code",
    "wrap_frame",
]

# --------------------------------------------------------------------------- wire formats
_ACCOUNT_VALUE_RE = re.compile(r"[0-9A-Fa-f]{3,16}")
EVENT_IDS: Final = frozenset({"ADM-CID", "SIA-DCS", "NULL"})
REPLY_IDS: Final = frozenset({"ACK", "NAK", "DUH", "RSP"})
_TS = r"[0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{2}-[0-9]{2}-[0-9]{4}"

_ROUTE_VALUE_RE = re.compile(r"[0-9A-Fa-f]{1,6}")
# strict parts of a frame body, matched one after another by decode_frame()
_ENVELOPE_RE = re.compile(r"(?P<crc>[0-9A-F]{4})(?P<length>0[0-9A-F]{3})(?P<body>.*)", re.S)
_ID_RE = re.compile(r'"(?P<encrypted>\*)?(?P<id>[^"]*)"')
_SEQUENCE_RE = re.compile(r"(?P<sequence>[0-9]{4})")
_RECEIVER_RE = re.compile(r"R(?P<receiver>[0-9A-Fa-f]{1,6})")
_LINE_RE = re.compile(r"L(?P<line>[0-9A-Fa-f]{1,6})")
_ACCOUNT_RE = re.compile(r"#(?P<account>[0-9A-Fa-f]{3,16})")
_PLAIN_REST_RE = re.compile(
    rf"(?P<data>[^\[\]]*)\](?P<xdata>(?:\[[^\[\]]*\])*)(?:_(?P<timestamp>{_TS}))?"
)
_DECRYPTED_RE = re.compile(r"(?P<pad>[^|\[\]]*)\|" + _PLAIN_REST_RE.pattern)
_XDATA_BLOCK_RE = re.compile(r"\[(?P<value>[^\[\]]*)\]")
_CID_DATA_RE = re.compile(
    r"#(?P<account>[0-9A-Fa-f]{3,16})\|(?P<qualifier>[0-9])(?P<code>[0-9]{3})"
    r" (?P<partition>[0-9]{2}) (?P<zone>[0-9]{3})"
)
# lenient reply shape: R and L in either order (pysiaalarm's "L0R0"), "A0" account (DC-09 NAK)
_BARE_REPLY_RE = re.compile(r'"(?P<encrypted>\*)?(?P<kind>ACK|NAK|DUH|RSP)"')
_REPLY_RE = re.compile(
    r'"(?P<encrypted>\*)?(?P<kind>ACK|NAK|DUH|RSP)"(?P<sequence>[0-9]{4})?'
    r"(?P<route>(?:[RL][0-9A-Fa-f]{1,6}?)*)"
    r"(?:#(?P<account>[0-9A-Fa-f]{3,16})|A(?P<prefix>[0-9A-Fa-f]*))?"
    r"(?:\[(?P<rest>.*))?",
    re.S,
)
_ROUTE_PART_RE = re.compile(r"(?P<tag>[RL])(?P<value>[0-9A-Fa-f]{1,6})")
_ANY_TS_RE = re.compile(rf"_(?P<timestamp>{_TS})")


# --------------------------------------------------------------------------- frames
@dataclass(frozen=True, slots=True)
class SiaFrame:
    """The fields of one DC-09 frame before encryption and framing.

    ``message_id`` one of :data:`EVENT_IDS` or :data:`REPLY_IDS`; ``sequence`` 1..9999 (0 only
    for ``NULL`` and replies); ``receiver``/``line`` 1-6 hex digits (receiver may be None);
    ``account`` 3-16 hex digits (upper-cased; required for events other than NULL);
    ``data`` the text inside the first ``[]``; ``xdata`` extended-data blocks as
    identifier+value (``"X012E34.5678"``); ``timestamp`` aware datetime or None.
    Raises ValidationError on construction.
    """

    message_id: str
    sequence: int
    account: str | None
    data: str = ""
    xdata: tuple[str, ...] = ()
    timestamp: datetime | None = None
    receiver: str | None = "1"
    line: str = "1"

    def __post_init__(self) -> None:
        if self.message_id not in EVENT_IDS | REPLY_IDS:
            raise ValidationError("message_id", f"unknown SIA DC-09 ID {self.message_id!r}")
        low = 0 if self.message_id == "NULL" or self.message_id in REPLY_IDS else 1
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int) or not low <= self.sequence <= 9999:
            raise ValidationError("sequence", f"must be {low:04d}..9999, got {self.sequence!r}")
        if self.account is None:
            if self.message_id in ("ADM-CID", "SIA-DCS"):
                raise ValidationError("account", f"{self.message_id} needs an account")
        else:
            object.__setattr__(self, "account", check_account(self.account))
        if self.receiver is not None and not _ROUTE_VALUE_RE.fullmatch(self.receiver):
            raise ValidationError("receiver", f"must be 1-6 hex digits, got {self.receiver!r}")
        if not isinstance(self.line, str) or not _ROUTE_VALUE_RE.fullmatch(self.line):
            raise ValidationError("line", f"must be 1-6 hex digits, got {self.line!r}")
        for name, value in [("data", self.data), *(("xdata", x) for x in self.xdata)]:
            if not value.isascii() or not value.isprintable() or "[" in value or "]" in value:
                raise ValidationError(name, f"must be printable ASCII without []: {value!r}")
        if any(not x or not x[0].isalpha() for x in self.xdata):
            raise ValidationError("xdata", "each block starts with its identifier letter")
        if self.timestamp is not None:
            format_timestamp(self.timestamp)  # validates awareness


def _random_pad(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def encode_frame(frame: SiaFrame, key: str | bytes | None = None, *, pad: str | None = None) -> bytes:
    """Complete DC-09 frame bytes (LF … CR) for ``frame``; encrypted when ``key`` is given.

    Encryption (SIA DC-09 encrypted format, SPEC §4): the ID gets ``*``; after ``[`` comes the
    upper-case hex of AES-CBC (zero IV) over ``pad|data]<xdata>_timestamp``, where ``pad`` is
    1-16 random letters/digits (never ``|[]``) making the plaintext a multiple of 16 bytes.
    ``pad`` may be given for reproducible tests. Raises ValidationError (no timestamp when encrypted, bad key, bad
    pad, frame too long).
    """
    head = (
        f'"{"*" if key is not None else ""}{frame.message_id}"{frame.sequence:04d}'
        f'{"R" + frame.receiver if frame.receiver is not None else ""}L{frame.line}'
        f'{"#" + frame.account if frame.account is not None else ""}['
    )
    tail = frame.data + "]" + "".join(f"[{x}]" for x in frame.xdata)
    if frame.timestamp is not None:
        tail += "_" + format_timestamp(frame.timestamp)
    if key is None:
        return wrap_frame(head + tail)
    if frame.timestamp is None:
        raise ValidationError("timestamp", "an encrypted frame must carry a timestamp")
    rest = "|" + tail
    if pad is None:
        pad = _random_pad(16 - len(rest) % 16)
    elif any(c in pad for c in "|[]") or not pad.isascii() or (len(pad) + len(rest)) % 16:
        raise ValidationError("pad", "must be ASCII without |[] and fill the plaintext to 16-byte blocks")
    cipher = _aes(aes_key(key), (pad + rest).encode("ascii"), encrypt=True)
    return wrap_frame(head + cipher.hex().upper())


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A frame read by :func:`decode_frame`. ``data``/``xdata``/``timestamp`` are None/empty
    when the frame is encrypted and no key was given for its account (``decrypted`` False)."""

    message_id: str
    encrypted: bool
    decrypted: bool
    sequence: int
    receiver: str | None
    line: str
    account: str | None
    data: str | None
    xdata: tuple[str, ...]
    timestamp: datetime | None
    crc: int
    length: int

    def xdata_value(self, identifier: str) -> str | None:
        """Value (without the identifier letter) of the first block with ``identifier``."""
        return next((x[1:] for x in self.xdata if x.startswith(identifier)), None)

    def contact_id(self) -> ContactId | None:
        """The Contact ID of ``ADM-CID`` data, else None."""
        m = _CID_DATA_RE.fullmatch(self.data or "") if self.message_id == "ADM-CID" else None
        if not m:
            return None
        return ContactId(int(m["qualifier"]), int(m["code"]), int(m["partition"]), int(m["zone"]))

    def position(self) -> tuple[float, float] | None:
        """``(lat, lon)`` from ``X``/``Y`` blocks, else from a position ``I`` text, else None."""
        x, y = self.xdata_value("X"), self.xdata_value("Y")
        if x is not None and y is not None:
            return parse_position(x, y)
        text = self.xdata_value("I")
        if text is not None:
            try:
                found = parse_position_text(text)
            except ValidationError:
                return None
            return found.lat, found.lon
        return None


def decode_frame(frame: bytes, keys: Mapping[str, str | bytes] | None = None) -> DecodedFrame:
    """Parse and check one complete DC-09 frame (LF … CR): envelope, length, CRC, header, data.

    ``keys`` maps account → AES key (see :func:`aes_key`) for encrypted frames. Raises
    SiaFrameError with the reason (not ASCII, partial, length mismatch, bad CRC, unknown ID,
    bad sequence, missing L, missing account, malformed data, undecryptable content).
    """
    if not frame:
        raise SiaFrameError("empty input")
    try:
        text = frame.decode("ascii")
    except UnicodeDecodeError:
        raise SiaFrameError("not ASCII") from None
    if not text.startswith("\n"):
        raise SiaFrameError("frame does not start with LF")
    if not text.endswith("\r"):
        raise SiaFrameError("partial frame: no CR at the end")
    envelope = _ENVELOPE_RE.fullmatch(text[1:-1])
    if not envelope:
        raise SiaFrameError("missing CRC (4 hex) and length ('0' + 3 hex) after LF")
    body = envelope["body"]
    if "\r" in body or "\n" in body:
        raise SiaFrameError("stray CR or LF inside the frame")
    length, crc = int(envelope["length"], 16), int(envelope["crc"], 16)
    if length != len(body):
        raise SiaFrameError(f"length mismatch: field says {length}, body has {len(body)}")
    if crc != crc16_arc(body.encode("ascii")):
        raise SiaFrameError(f"bad CRC: frame says {crc:04X}, computed {crc16_arc(body.encode('ascii')):04X}")

    m = _ID_RE.match(body)
    if not m:
        raise SiaFrameError('missing "ID" after the length field')
    message_id, encrypted, pos = m["id"], bool(m["encrypted"]), m.end()
    if message_id not in EVENT_IDS | REPLY_IDS:
        raise SiaFrameError(f"unknown message ID {message_id!r}")
    m = _SEQUENCE_RE.match(body, pos)
    if not m:
        raise SiaFrameError("bad sequence: 4 digits expected after the ID")
    sequence, pos = int(m["sequence"]), m.end()
    if sequence == 0 and message_id in ("ADM-CID", "SIA-DCS"):
        raise SiaFrameError("bad sequence 0000: events use 0001-9999")
    receiver = None
    if m := _RECEIVER_RE.match(body, pos):
        receiver, pos = m["receiver"], m.end()
    m = _LINE_RE.match(body, pos)
    if not m:
        raise SiaFrameError("missing L (line / account prefix) field")
    line, pos = m["line"], m.end()
    account = None
    if m := _ACCOUNT_RE.match(body, pos):
        account, pos = m["account"].upper(), m.end()
    elif message_id in ("ADM-CID", "SIA-DCS"):
        raise SiaFrameError("missing #account")
    if body[pos : pos + 1] != "[":
        raise SiaFrameError("missing '[' before the data")
    rest = body[pos + 1 :]

    decrypted = not encrypted
    if encrypted:
        if not rest or len(rest) % 32 or not _HEX_RE.fullmatch(rest):
            raise SiaFrameError("encrypted content is not whole 16-byte blocks of hex")
        key = (keys or {}).get(account or "")
        if key is None:
            return DecodedFrame(message_id, True, False, sequence, receiver, line, account,
                                None, (), None, crc, length)
        try:
            rest = _aes(aes_key(key), bytes.fromhex(rest), encrypt=False).decode("ascii")
        except UnicodeDecodeError:
            raise SiaFrameError("decrypted content is not ASCII (wrong key?)") from None
        content = _DECRYPTED_RE.fullmatch(rest)
        if not content:
            raise SiaFrameError("decrypted content malformed (wrong key?)")
        if content["timestamp"] is None and message_id in EVENT_IDS:
            raise SiaFrameError("encrypted frame without timestamp")
        decrypted = True
    else:
        content = _PLAIN_REST_RE.fullmatch(rest)
        if not content:
            raise SiaFrameError("malformed data, extended data or timestamp after '['")
    try:
        timestamp = parse_timestamp(content["timestamp"]) if content["timestamp"] else None
    except ValidationError as exc:
        raise SiaFrameError(f"bad timestamp: {exc.reason}") from None
    xdata = tuple(x["value"] for x in _XDATA_BLOCK_RE.finditer(content["xdata"]))
    return DecodedFrame(message_id, encrypted, decrypted, sequence, receiver, line, account,
                        content["data"], xdata, timestamp, crc, length)


# --------------------------------------------------------------------------- replies
@dataclass(frozen=True, slots=True)
class SiaReply:
    """A receiver's answer (SIA DC-09 acknowledgement messages): ``kind`` ACK / NAK / DUH / RSP.

    ``sequence`` is None for a bare ``"NAK"``; NAKs carry 0000 (they echo nothing).
    ``timestamp`` is the receiver's clock (aware UTC) when present and readable — NAKs carry
    it; an encrypted ACK's needs the key. ``raw`` is the bytes as received.
    """

    kind: str
    encrypted: bool
    sequence: int | None
    receiver: str | None
    line: str | None
    account: str | None
    timestamp: datetime | None
    raw: bytes


def reply_complete(buffer: bytes) -> bool:
    """True when ``buffer`` (bytes read so far) holds a whole reply: up to a CR, or a bare
    quoted reply such as pysiaalarm's ``"NAK"`` for an unknown account (no LF/CR)."""
    if b"\r" in buffer:
        return True
    try:
        return bool(_BARE_REPLY_RE.fullmatch(buffer.decode("ascii").strip()))
    except UnicodeDecodeError:
        return False


def parse_reply(frame: bytes, key: str | bytes | None = None) -> SiaReply:
    """Read a receiver reply leniently (R/L in any order, ``A0`` account, bare ``"NAK"``).

    Shapes seen from pysiaalarm 3.2.2: ``"ACK"0001R1L1#1234[]``,
    ``"NAK"0000R1L1A0[]_13:05:28,11-30-2026``, ``"NAK"0000L0R0A0[]_…`` (unparsable input),
    ``"DUH"<seq>R1L1#1234[]``, ``"*ACK"<seq>R1L1#1234[<hex>`` and bare ``"NAK"``. CRC and length
    are checked when present. ``key`` decrypts an encrypted reply's timestamp. Raises
    SiaFrameError for empty, non-ASCII, bad CRC/length or unrecognisable replies.
    """
    try:
        text = frame.decode("ascii")
    except UnicodeDecodeError:
        raise SiaFrameError("reply is not ASCII") from None
    text = text.strip("\r\n\x00 ")
    if not text:
        raise SiaFrameError("empty reply (pysiaalarm answers LF CR to a frame whose CRC fails)")
    if m := _BARE_REPLY_RE.fullmatch(text):
        return SiaReply(m["kind"], bool(m["encrypted"]), None, None, None, None, None, frame)
    envelope = _ENVELOPE_RE.fullmatch(text)
    if not envelope:
        raise SiaFrameError(f"unrecognised reply {text[:40]!r}")
    body = envelope["body"]
    if int(envelope["length"], 16) != len(body):
        raise SiaFrameError(f"reply length mismatch: field says {int(envelope['length'], 16)}, body has {len(body)}")
    if int(envelope["crc"], 16) != crc16_arc(body.encode("ascii")):
        raise SiaFrameError("reply has a bad CRC")
    m = _REPLY_RE.fullmatch(body)
    if not m:
        raise SiaFrameError(f"not an ACK/NAK/DUH/RSP reply: {body[:40]!r}")
    route = {p["tag"]: p["value"] for p in _ROUTE_PART_RE.finditer(m["route"])}
    rest = m["rest"] or ""
    if m["encrypted"] and key is not None:
        hexpart = rest.rstrip("]")
        hexpart = hexpart[len(hexpart) % 32 :]  # a response qualifier may precede the blocks
        try:
            rest = _aes(aes_key(key), bytes.fromhex(hexpart), encrypt=False).decode("ascii", "replace")
        except ValueError:
            rest = ""
    timestamp = None
    if ts := _ANY_TS_RE.search(rest):
        try:
            timestamp = parse_timestamp(ts["timestamp"])
        except ValidationError:
            timestamp = None
    return SiaReply(
        kind=m["kind"],
        encrypted=bool(m["encrypted"]),
        sequence=int(m["sequence"]) if m["sequence"] else None,
        receiver=route.get("R"),
        line=route.get("L"),
        account=m["account"].upper() if m["account"] else None,
        timestamp=timestamp,
        raw=frame,
    )

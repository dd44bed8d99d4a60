"""SIA DC-09 byte-level primitives for the sending side: CRC-16/ARC, the envelope (CRC +
length), timestamps, AES-CBC with a zero IV, and the ASCII text of extended data.

Pure code (SPEC §4): no sockets. ``cryptography`` is imported only inside the AES helpers, so
modules that never encrypt (the device) import this file without it. Frames built from these
primitives: :mod:`protocol.sia`.

AES keys (what interoperates): a ``bytes`` key is used as is (16/24/32 bytes = AES-128/192/256);
a ``str`` key must be the hex spelling of the key (32/48/64 hex digits, the DC-09 convention).
pysiaalarm 3.2.2 instead uses the *ASCII bytes* of its 16/24/32-character key string, so
``SIAAccount(key="0123456789ABCDEF")`` talks to ``key=b"0123456789ABCDEF"`` here (or to the hex
string ``"0123456789ABCDEF".encode().hex()``).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from typing import Final

from protocol.errors import LonewatchError, ValidationError

__all__ = ["SiaFrameError", "aes_key", "ascii_text", "crc16_arc", "format_timestamp", "parse_timestamp", "wrap_frame"]

MAX_BODY: Final = 0xFFF  # the length field is "0" + 3 hex digits
_TS_FORMAT: Final = "%H:%M:%S,%m-%d-%Y"
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")


class SiaFrameError(LonewatchError, ValueError):
    """Bytes that are not a well-formed SIA DC-09 frame; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------- CRC, envelope
def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected = 0xA001, init 0, no final xor) of ``data``.

    SIA DC-09 frame CRC (SPEC §4). ``crc16_arc(b"123456789") == 0xBB3D``.
    """
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def wrap_frame(body: str) -> bytes:
    """Put LF, CRC, length and CR around a frame body that starts at the ID's opening quote.

    Raises ValidationError if ``body`` is not printable ASCII or longer than 0xFFF characters.
    """
    if not body.isascii() or not body.isprintable():
        raise ValidationError("frame", "body must be printable ASCII")
    if len(body) > MAX_BODY:
        raise ValidationError("frame", f"body is {len(body)} chars; the length field allows {MAX_BODY}")
    raw = body.encode("ascii")
    return b"\n" + f"{crc16_arc(raw):04X}0{len(raw):03X}".encode("ascii") + raw + b"\r"


# --------------------------------------------------------------------------- time, AES, text
def format_timestamp(moment: datetime) -> str:
    """``HH:MM:SS,MM-DD-YYYY`` in UTC (no leading ``_``) of an aware datetime (SPEC §4)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationError("timestamp", "must be timezone-aware (SIA timestamps are UTC)")
    return moment.astimezone(timezone.utc).strftime(_TS_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp`: an aware UTC datetime. Raises ValidationError."""
    try:
        return datetime.strptime(text.lstrip("_"), _TS_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValidationError("timestamp", f"not HH:MM:SS,MM-DD-YYYY: {text!r}") from exc


def aes_key(key: str | bytes) -> bytes:
    """Raw AES key bytes from ``bytes`` (16/24/32 long) or a hex ``str`` (32/48/64 digits).

    See the module docstring for pysiaalarm's convention. Raises ValidationError.
    """
    if isinstance(key, str):
        if len(key) not in (32, 48, 64) or not _HEX_RE.fullmatch(key):
            raise ValidationError(
                "key",
                "a str key must be 32/48/64 hex digits (AES-128/192/256); for a pysiaalarm-style "
                "16/24/32-character key pass its ASCII bytes, e.g. key.encode()",
            )
        return bytes.fromhex(key)
    if len(key) not in (16, 24, 32):
        raise ValidationError("key", f"AES key must be 16, 24 or 32 bytes, got {len(key)}")
    return bytes(key)


def _aes(key: bytes, data: bytes, *, encrypt: bool) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


_TRANSLITERATE: Final = str.maketrans(
    {
        "æ": "ae", "Æ": "AE", "ø": "oe", "Ø": "OE", "å": "aa", "Å": "AA",
        "ä": "ae", "Ä": "AE", "ö": "oe", "Ö": "OE", "ü": "ue", "Ü": "UE", "ß": "ss",
        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ı": "i",
        "[": "(", "]": ")", "|": "/",
    }
)


def ascii_text(text: str, max_len: int = 120) -> str:
    """Text safe inside an extended-data block: printable ASCII, no ``[]|``, ≤ ``max_len``.

    Danish letters are transliterated (æ→ae, ø→oe, å→aa), accents dropped (é→e), brackets
    and bars replaced by ``()`` and ``/``; anything else non-ASCII is removed and whitespace
    collapsed.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    kept = "".join(c if c.isprintable() else " " for c in decomposed if c.isascii())
    return " ".join(kept.split())[:max_len].rstrip()

"""Pure SIA DC-09 tests: CRC, the shared known-good vectors, positions, Contact ID, bad frames,
AES, and the reply shapes pysiaalarm 3.2.2 really sends (made by its own parser, no sockets)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pysiaalarm import SIAAccount
from pysiaalarm.errors import EventFormatError
from pysiaalarm.event import NAKEvent, SIAEvent

from protocol.errors import LonewatchError, ValidationError
from protocol.sia import (
    CONTACT_ID_EVENTS,
    ContactId,
    SiaFrame,
    SiaFrameError,
    aes_key,
    ascii_text,
    contact_id_for,
    crc16_arc,
    decode_frame,
    encode_frame,
    format_latitude,
    format_longitude,
    format_position_text,
    parse_position,
    parse_position_text,
    parse_reply,
    reply_complete,
    wrap_frame,
)

VECTORS = Path(__file__).with_name("vectors") / "sia-dc09.txt"  # copy of ../shared/vectors (SPEC §4)
TS = datetime(2026, 11, 30, 23, 5, 28, tzinfo=timezone.utc)


def _vectors() -> list[tuple[str, bytes]]:
    out, comment = [], ""
    for line in VECTORS.read_text(encoding="ascii").splitlines():
        if line.startswith("#"):
            comment = line.lstrip("# ")
        elif line.strip():
            out.append((comment, b"\n" + line.encode("ascii") + b"\r"))
    return out


VECTOR_FRAMES = _vectors()

# The same frames built from their meaning, not copied: the encoder must reproduce each one.
BUILT = {
    "ADM-CID panic, new": SiaFrame("ADM-CID", 1, "1234", ContactId(1, 120, 1, 5).body("1234")),
    "ADM-CID panic restore": SiaFrame("ADM-CID", 2, "1234", ContactId(3, 120, 1, 5).body("1234")),
    "ADM-CID silent panic": SiaFrame(
        "ADM-CID", 3, "ABC123", ContactId(1, 122, 1, 17).body("ABC123"), timestamp=TS
    ),
    "ADM-CID fail to report": SiaFrame(
        "ADM-CID", 4, "ABC123", ContactId(1, 102, 1, 17).body("ABC123"), timestamp=TS
    ),
    "SIA-DCS panic": SiaFrame(
        "SIA-DCS", 5, "ABC123", ContactId(1, 120, 1, 17).sia_dcs_body("ABC123"),
        xdata=(format_longitude(12 + 34.5678 / 60), format_latitude(55 + 40.1234 / 60)), timestamp=TS,
    ),
    "NULL link poll": SiaFrame("NULL", 0, "ABC123", timestamp=TS),
    "ACK for sequence": SiaFrame("ACK", 1, "1234"),
}


def test_crc_check_value() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D
    assert crc16_arc(b"") == 0


def test_vectors_file_is_fully_covered() -> None:
    assert len(VECTOR_FRAMES) == len(BUILT) == 7
    for comment, _frame in VECTOR_FRAMES:
        assert any(comment.startswith(prefix) for prefix in BUILT), comment


@pytest.mark.parametrize(("comment", "frame"), VECTOR_FRAMES, ids=[c for c, _ in VECTOR_FRAMES])
def test_vector_built_byte_for_byte(comment: str, frame: bytes) -> None:
    built = next(f for prefix, f in BUILT.items() if comment.startswith(prefix))
    assert encode_frame(built) == frame


@pytest.mark.parametrize(("comment", "frame"), VECTOR_FRAMES, ids=[c for c, _ in VECTOR_FRAMES])
def test_vector_decodes_and_reencodes(comment: str, frame: bytes) -> None:
    d = decode_frame(frame)
    again = SiaFrame(d.message_id, d.sequence, d.account, d.data or "", d.xdata, d.timestamp, d.receiver, d.line)
    assert encode_frame(again) == frame
    assert d.length == len(frame) - 10 and d.crc == int(frame[1:5], 16)


def test_vector_contents() -> None:
    by_comment = {c: decode_frame(f) for c, f in VECTOR_FRAMES}
    first = next(d for c, d in by_comment.items() if c.startswith("ADM-CID panic, new"))
    assert first.contact_id() == ContactId(1, 120, 1, 5)
    dcs = next(d for c, d in by_comment.items() if c.startswith("SIA-DCS"))
    lat, lon = dcs.position()  # type: ignore[misc]
    assert lat == pytest.approx(55 + 40.1234 / 60) and lon == pytest.approx(12 + 34.5678 / 60)
    assert dcs.timestamp == TS


# ----------------------------------------------------------------------------- positions
def test_position_spec_examples() -> None:
    assert format_longitude(12 + 34.5678 / 60) == "X012E34.5678"
    assert format_latitude(55 + 40.1234 / 60) == "Y55N40.1234"
    assert format_longitude(-(122 + 25.0 / 60)) == "X122W25.0000"
    assert format_latitude(-33.5) == "Y33S30.0000"
    assert format_longitude(180) == "X180E00.0000" and format_latitude(-90) == "Y90S00.0000"
    assert format_longitude(0.0) == "X000E00.0000" and format_longitude(-0.0) == "X000E00.0000"
    assert format_latitude(10 + 59.999999 / 60) == "Y11N00.0000"  # rounding carries to degrees


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(55.66857, 12.57613), (-33.8688, 151.2093), (64.1466, -21.9426), (-0.00001, -0.00001),
     (89.99999, 179.99999), (-90.0, -180.0), (0.0, 0.0), (51.5007, -0.1246)],
)
def test_position_round_trip(lat: float, lon: float) -> None:
    back = parse_position(format_longitude(lon), format_latitude(lat))
    assert back[0] == pytest.approx(lat, abs=1e-4 / 60 + 1e-12)
    assert back[1] == pytest.approx(lon, abs=1e-4 / 60 + 1e-12)


@pytest.mark.parametrize(
    ("lat", "lon"), [(90.0001, 0), (-91, 0), (0, 180.5), (0, -181), (math.nan, 0), (0, math.inf), (True, 0)]
)
def test_position_out_of_range(lat: float, lon: float) -> None:
    with pytest.raises(ValidationError):
        format_latitude(lat)
        format_longitude(lon)


@pytest.mark.parametrize(
    ("x", "y"),
    [("X012E60.0000", "Y55N40.1234"), ("X181E00.0000", "Y55N40.1234"), ("X012E34.5678", "Y91N00.0000"),
     ("X12E34.5678", "Y55N40.1234"), ("X012N34.5678", "Y55N40.1234"), ("garbage", "Y55N40.1234"),
     ("X012E34.5678", "Y55E40.1234")],
)
def test_parse_position_rejects(x: str, y: str) -> None:
    with pytest.raises(ValidationError):
        parse_position(x, y)


def test_position_text_round_trip() -> None:
    text = format_position_text(55.668571, 12.576128, 8.4, "Anna Hansen, Kødbyen")
    assert text == "55.66857N 12.57613E +-8m Anna Hansen, Koedbyen"
    back = parse_position_text("I" + text)
    assert (back.lat, back.lon, back.accuracy_m, back.text) == (55.66857, 12.57613, 8.0, "Anna Hansen, Koedbyen")
    south = parse_position_text(format_position_text(-33.9, -70.1))
    assert (south.lat, south.lon, south.accuracy_m, south.text) == (-33.9, -70.1, None, "")
    assert parse_position_text("55.66857N 12.57613E ±8m Anna").accuracy_m == 8.0
    with pytest.raises(ValidationError):
        parse_position_text("Anna Hansen")


def test_ascii_text() -> None:
    assert ascii_text("Søren Ærø på Åbo") == "Soeren AEroe paa AAbo"
    assert ascii_text("Zażółć [gęślą] | jaźń\t\n ok") == "Zazolc (gesla) / jazn ok"
    assert ascii_text("Київ") == ""
    assert len(ascii_text("x" * 500)) == 120


# ----------------------------------------------------------------------------- Contact ID
SPEC_TABLE = {
    "panic": (120, 1), "silent_panic": (122, 1), "man_down": (101, 1), "missed_checkin": (102, 1),
    "lost_contact": (356, 1), "low_battery": (302, 1), "cancel": (406, 1), "test": (601, 1),
    "periodic_test": (602, 1), "shift_start": (401, 3), "shift_end": (401, 1),
}


@pytest.mark.parametrize(("kind", "expected"), SPEC_TABLE.items())
def test_contact_id_table(kind: str, expected: tuple[int, int]) -> None:
    assert contact_id_for(kind) == expected
    assert CONTACT_ID_EVENTS[kind] == expected


def test_contact_id_restores() -> None:
    assert contact_id_for("lost_contact", restore=True) == (356, 3)
    assert contact_id_for("low_battery", restore=True) == (302, 3)
    assert contact_id_for("battery_restore") == (302, 3)
    assert contact_id_for("panic", restore=True) == (120, 3)
    for kind in ("checkin_start", "nope", ""):
        with pytest.raises(ValidationError):
            contact_id_for(kind)
    with pytest.raises(ValidationError):
        contact_id_for("shift_start", restore=True)


def test_contact_id_body() -> None:
    assert ContactId(1, 120, 1, 5).body("abc123") == "#ABC123|1120 01 005"
    assert ContactId(6, 602, 0, 0).body("1234") == "#1234|6602 00 000"
    assert ContactId(3, 356, 99, 999).sia_dcs_body("1234") == "#1234|Nri99/YK999"


@pytest.mark.parametrize(
    "args", [(2, 120, 1, 5), (1, 1000, 1, 5), (1, -1, 1, 5), (1, 120, 100, 5), (1, 120, 1, 1000), (1, "120", 1, 5)]
)
def test_contact_id_rejects(args: tuple) -> None:
    with pytest.raises(ValidationError):
        ContactId(*args)


@pytest.mark.parametrize("account", ["12", "12345678901234567", "12G4", "", "12 4"])
def test_bad_accounts(account: str) -> None:
    with pytest.raises(ValidationError):
        ContactId(1, 120).body(account)
    with pytest.raises(ValidationError):
        SiaFrame("ADM-CID", 1, account, "x")


@pytest.mark.parametrize(
    "kwargs",
    [dict(message_id="FOO"), dict(sequence=0), dict(sequence=10000), dict(receiver="XYZ"), dict(line=""),
     dict(data="a]b"), dict(xdata=("X[1",)), dict(xdata=("",)), dict(timestamp=datetime(2026, 1, 1)),
     dict(account=None), dict(data="naïve")],
)
def test_frame_rejects(kwargs: dict) -> None:
    fields = dict(message_id="ADM-CID", sequence=1, account="1234", data="#1234|1120 01 005")
    with pytest.raises(ValidationError):
        SiaFrame(**{**fields, **kwargs})


# ----------------------------------------------------------------------------- bad frames
GOOD = encode_frame(SiaFrame("ADM-CID", 7, "1234", "#1234|1120 01 005", timestamp=TS))


def _body(frame: bytes) -> str:
    return frame[9:-1].decode("ascii")


BAD_FRAMES = [
    ("empty", b"", "empty"),
    ("garbage", b"hello world", "LF"),
    ("non-ascii", b"\n\xff\xfe", "ASCII"),
    ("partial", GOOD[:-5], "no CR"),
    ("no crc", b'\n"ADM-CID"0001R1L1#1234[]\r', "CRC"),
    ("bad crc", b"\n0000" + GOOD[5:], "bad CRC"),
    ("lowercase crc", b'\ne3ba0029"ADM-CID"0001R1L1#1234[#1234|1120 01 005]\r', "CRC"),
    ("length short", GOOD[:5] + b"0010" + GOOD[9:], "length mismatch"),
    ("length long", GOOD[:5] + b"0FFF" + GOOD[9:], "length mismatch"),
    ("two frames", GOOD[:-1] + GOOD, "stray"),
    ("missing L", wrap_frame('"ADM-CID"0001R1#1234[#1234|1120 01 005]'), "missing L"),
    ("bad sequence", wrap_frame('"ADM-CID"00A1R1L1#1234[#1234|1120 01 005]'), "bad sequence"),
    ("short sequence", wrap_frame('"ADM-CID"001R1L1#1234[#1234|1120 01 005]'), "bad sequence"),
    ("sequence 0000", wrap_frame('"ADM-CID"0000R1L1#1234[#1234|1120 01 005]'), "0000"),
    ("unknown id", wrap_frame('"FOO"0001R1L1#1234[]'), "unknown message ID"),
    ("no id", wrap_frame("0001R1L1#1234[]"), "ID"),
    ("missing account", wrap_frame('"ADM-CID"0001R1L1[#1234|1120 01 005]'), "account"),
    ("missing [", wrap_frame('"ADM-CID"0001R1L1#1234#1234|1120 01 005]'), "'['"),
    ("unclosed data", wrap_frame('"ADM-CID"0001R1L1#1234[#1234|1120 01 005'), "malformed"),
    ("bad xdata", wrap_frame('"ADM-CID"0001R1L1#1234[#1234|1120 01 005][X012'), "malformed"),
    ("bad timestamp", wrap_frame('"ADM-CID"0001R1L1#1234[#1234|1120 01 005]_25:61:00,13-40-2026'), "timestamp"),
    ("junk after", wrap_frame('"ADM-CID"0001R1L1#1234[#1234|1120 01 005]xyz'), "malformed"),
    ("encrypted not hex", wrap_frame('"*ADM-CID"0001R1L1#1234[XYZ'), "hex"),
    ("encrypted odd block", wrap_frame('"*ADM-CID"0001R1L1#1234[' + "AB" * 15), "hex"),
]


@pytest.mark.parametrize(("name", "frame", "reason"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_decode_rejects(name: str, frame: bytes, reason: str) -> None:
    with pytest.raises(SiaFrameError) as info:
        decode_frame(frame)
    assert reason.lower() in info.value.reason.lower()
    assert isinstance(info.value, LonewatchError) and isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- encryption
KEYS = [b"0123456789ABCDEF", b"0123456789ABCDEF01234567", b"0123456789ABCDEF0123456789ABCDEF",
        "000102030405060708090A0B0C0D0E0F", "00" * 24, "AB" * 32]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"{type(k).__name__}{len(k)}")
def test_encryption_round_trip(key: str | bytes) -> None:
    frame = SiaFrame("ADM-CID", 42, "ABC123", ContactId(1, 122, 1, 17).body("ABC123"),
                     xdata=("X012E34.5678",), timestamp=TS)
    raw = encode_frame(frame, key)
    assert raw.startswith(b"\n") and raw.endswith(b"\r") and b'"*ADM-CID"0042R1L1#ABC123[' in raw
    cipher = raw.split(b"[", 1)[1][:-1]
    assert len(cipher) % 32 == 0 and cipher == cipher.upper()
    d = decode_frame(raw, {"ABC123": key})
    assert d.encrypted and d.decrypted
    assert (d.data, d.xdata, d.timestamp, d.sequence) == (frame.data, frame.xdata, TS, 42)
    assert encode_frame(frame, key) != raw  # random pad
    hidden = decode_frame(raw)  # no key: header only
    assert hidden.encrypted and not hidden.decrypted and hidden.data is None and hidden.account == "ABC123"


def test_encryption_fixed_pad_is_reproducible_and_pysiaalarm_reads_it() -> None:
    frame = SiaFrame("ADM-CID", 1, "ABC123", ContactId(1, 120, 1, 5).body("ABC123"), timestamp=TS)
    rest_len = len("|" + frame.data + "]_" + "23:05:28,11-30-2026")
    pad = "Q" * (16 - rest_len % 16)
    raw = encode_frame(frame, b"0123456789ABCDEF", pad=pad)
    assert raw == encode_frame(frame, "0123456789ABCDEF".encode().hex(), pad=pad)
    account = SIAAccount("ABC123", key="0123456789ABCDEF", allowed_timeband=None)
    event = SIAEvent.from_line(raw.decode().strip(), {"ABC123": account})
    assert event.valid_message and event.code == "PA" and event.ri == "005" and event.partition == "01"
    with pytest.raises(ValidationError):
        encode_frame(frame, b"0123456789ABCDEF", pad="x|y")
    with pytest.raises(ValidationError):
        encode_frame(frame, b"0123456789ABCDEF", pad="Q")


def test_encryption_errors() -> None:
    frame = SiaFrame("ADM-CID", 1, "ABC123", "#ABC123|1120 01 005")
    with pytest.raises(ValidationError):
        encode_frame(frame, b"0123456789ABCDEF")  # no timestamp
    for bad in ("0123456789ABCDEF", "zz" * 16, b"short", "00" * 20):
        with pytest.raises(ValidationError):
            aes_key(bad)
    raw = encode_frame(SiaFrame("ADM-CID", 1, "ABC123", "#ABC123|1120 01 005", timestamp=TS), "11" * 16)
    with pytest.raises(SiaFrameError, match="wrong key"):
        decode_frame(raw, {"ABC123": "22" * 16})


def test_pysiaalarm_adm_cid_takes_one_extended_block_only() -> None:
    """Why relay.arc trims extended data: pysiaalarm's ADM-CID regex has room for ONE block."""
    account = {"1234": SIAAccount("1234", allowed_timeband=None)}
    one = encode_frame(SiaFrame("ADM-CID", 1, "1234", "#1234|1120 01 005", ("IAnna",), TS))
    two = encode_frame(SiaFrame("ADM-CID", 1, "1234", "#1234|1120 01 005", ("X012E34.5678", "Y55N40.1234"), TS))
    dcs = encode_frame(SiaFrame("SIA-DCS", 1, "1234", "#1234|Nri1/PA005", ("X012E34.5678", "Y55N40.1234"), TS))
    assert SIAEvent.from_line(one.decode().strip(), account).extended_data[0].value == "Anna"
    with pytest.raises(EventFormatError):
        SIAEvent.from_line(two.decode().strip(), account)
    assert [x.identifier for x in SIAEvent.from_line(dcs.decode().strip(), account).extended_data] == ["X", "Y"]


# ----------------------------------------------------------------------------- replies
def _pysia_reply(frame: bytes, accounts: dict[str, SIAAccount]) -> bytes:
    return SIAEvent.from_line(frame.decode().strip(), accounts).create_response()


def test_reply_pysiaalarm_ack_duh_nak() -> None:
    acc = {"1234": SIAAccount("1234")}
    ack = parse_reply(_pysia_reply(encode_frame(SiaFrame("ADM-CID", 17, "1234", "#1234|1120 01 005")), acc))
    assert (ack.kind, ack.sequence, ack.receiver, ack.line, ack.account, ack.timestamp) == ("ACK", 17, "1", "1", "1234", None)
    duh = parse_reply(_pysia_reply(encode_frame(SiaFrame("SIA-DCS", 18, "1234", "#1234|Nri1/QC005")), acc))
    assert (duh.kind, duh.sequence, duh.account) == ("DUH", 18, "1234")
    # an unknown ADM-CID code is not DUHed but ACKed as "YN" (invalid report) — and so is 102
    for code in (999, 102):
        line = encode_frame(SiaFrame("ADM-CID", 20, "1234", f"#1234|1{code:03d} 01 005")).decode().strip()
        event = SIAEvent.from_line(line, acc)
        assert (event.code, parse_reply(event.create_response()).kind) == ("YN", "ACK")
    old = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    nak = parse_reply(_pysia_reply(encode_frame(SiaFrame("ADM-CID", 19, "1234", "#1234|1120 01 005", timestamp=old)), acc))
    assert (nak.kind, nak.sequence, nak.receiver, nak.line, nak.account) == ("NAK", 0, "1", "1", None)
    assert nak.timestamp is not None and nak.timestamp.year >= 2024 and nak.timestamp.tzinfo is not None


def test_reply_pysiaalarm_unparsable_nak_swaps_r_and_l() -> None:
    raw = NAKEvent().create_response()
    assert b'"NAK"0000L0R0A0[]_' in raw
    nak = parse_reply(raw)
    assert (nak.kind, nak.sequence, nak.receiver, nak.line, nak.account) == ("NAK", 0, "0", "0", None)
    assert nak.timestamp is not None


def test_reply_pysiaalarm_encrypted_ack_and_bare_nak() -> None:
    acc = {"ABC123": SIAAccount("ABC123", key="0123456789ABCDEF")}
    now = datetime.now(timezone.utc)
    frame = encode_frame(SiaFrame("ADM-CID", 3, "ABC123", "#ABC123|1120 01 005", timestamp=now), b"0123456789ABCDEF")
    raw = _pysia_reply(frame, acc)
    assert raw.startswith(b"\n") and b'"*ACK"0003R1L1#ABC123[' in raw
    ack = parse_reply(raw, b"0123456789ABCDEF")
    assert (ack.kind, ack.encrypted, ack.sequence, ack.account) == ("ACK", True, 3, "ABC123")
    assert ack.timestamp is not None and abs((ack.timestamp - now).total_seconds()) < 60
    assert parse_reply(raw).timestamp is None  # without the key only the header is readable
    unknown = _pysia_reply(encode_frame(SiaFrame("ADM-CID", 4, "999", "#999|1120 01 005")), acc)
    assert unknown == b'"NAK"'
    bare = parse_reply(unknown)
    assert (bare.kind, bare.sequence, bare.timestamp) == ("NAK", None, None)


def test_reply_vector_ack() -> None:
    raw = next(f for c, f in VECTOR_FRAMES if c.startswith("ACK"))
    reply = parse_reply(raw)
    assert (reply.kind, reply.sequence, reply.receiver, reply.line, reply.account) == ("ACK", 1, "1", "1", "1234")


@pytest.mark.parametrize(
    "raw",
    [b"\n\r", b"", b"hello", b"\n0000" + b"0014" + b'"ACK"0001R1L1#1234[]\r', b'\nD2770015"ACK"0001R1L1#1234[]\r',
     wrap_frame('"FOO"0001R1L1#1234[]'), b"\n\xff\r", wrap_frame('"ADM-CID"0001R1L1#1234[#1234|1120 01 005]')],
    ids=["pysia-crc-fail", "empty", "text", "bad-crc", "bad-length", "unknown-kind", "binary", "an-event"],
)
def test_reply_rejects(raw: bytes) -> None:
    with pytest.raises(SiaFrameError):
        parse_reply(raw)


def test_reply_complete() -> None:
    assert not reply_complete(b"") and not reply_complete(b"\nD277") and not reply_complete(b'"NA')
    assert reply_complete(b'"NAK"') and reply_complete(b"\n\r") and reply_complete(b"\nD2770014...\r")

"""Hostile input to the wire protocol: arbitrary bytes and JSON into ``decode`` /
``decode_for_topic``, oversized payloads, and SIA DC-09 receiver replies and frames of every
shape (garbage, partial, merged, binary, bad CRC, missing R/L, wrong key).

The contract under test: decoding either returns a fully valid message or raises the
module's own error (:class:`protocol.errors.ValidationError` /
:class:`protocol.sia.SiaFrameError`) with a reason — never another exception.
Example counts are bounded (``max_examples``) so the suite stays fast.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol.errors import ValidationError
from protocol.messages import (
    MAX_PAYLOAD_BYTES,
    Alive,
    Event,
    Position,
    decode,
    decode_for_topic,
    encode,
)
from protocol.sia import (
    SiaFrame,
    SiaFrameError,
    SiaReply,
    crc16_arc,
    decode_frame,
    encode_frame,
    parse_reply,
    reply_complete,
    wrap_frame,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
FIELDS = ["device", "seq", "kind", "ts", "position", "data", "battery_pct", "signal_dbm", "registration",
          "uptime_s", "firmware", "queue_depth", "state", "id", "stage", "detail", "v", "type"]
# Objects shaped like messages, with every field's value drawn from anything JSON can hold.
message_like = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1", None]), "type": st.sampled_from(["event", "alive", "status", "ack", "x"])},
    optional={k: st.one_of(json_values, st.sampled_from(["lw-0001", "panic", "cancel", "home", "online",
                                                          "lw-0001:5", "received", 1.5, 0, -1]))
              for k in FIELDS if k not in ("v", "type")},
)


def _decoded_or_clear_error(payload: bytes):
    try:
        msg = decode(payload)
    except ValidationError as exc:
        assert str(exc)  # a reason, not an empty message
        return None
    assert decode(encode(msg)) == msg  # what decodes is whole and valid
    return msg


@FAST
@given(st.binary(max_size=600))
@example(b"")
@example(b"\xff\xfe{}")
@example(b'{"v":1,"type":"event"' + b"\x00")
@example(b"NaN")
@example(b'{"v":1,"type":"alive","ts":Infinity}')
def test_decode_arbitrary_bytes_never_crashes(payload: bytes) -> None:
    _decoded_or_clear_error(payload)


@FAST
@given(json_values)
def test_decode_arbitrary_json_never_crashes(value) -> None:
    _decoded_or_clear_error(json.dumps(value).encode())


@FAST
@given(message_like)
def test_decode_message_shaped_json_returns_valid_messages_or_names_the_field(obj) -> None:
    try:
        msg = decode(json.dumps(obj).encode())
    except ValidationError as exc:
        assert exc.reason
        assert exc.field == "" or exc.field.split(".")[0].split("[")[0] in {*FIELDS, "topic"}
        return
    assert decode(encode(msg)) == msg


@FAST
@given(st.text(max_size=80), st.binary(max_size=200))
@example("lonewatch/lw-0001/event", b"{}")
@example("lonewatch/../event", b"{}")
@example("lonewatch/lw-0001/event/extra", b"{}")
@example("$share/g/lonewatch/lw-0001/event", b"{}")
def test_decode_for_topic_arbitrary_topic_and_payload_never_crashes(topic_name: str, payload: bytes) -> None:
    try:
        decode_for_topic(topic_name, payload)
    except ValidationError as exc:
        assert str(exc)


@FAST
@given(st.sampled_from(["lw-0001", "lw-0002"]), st.sampled_from(["event", "alive", "status", "ack"]), message_like)
def test_decode_for_topic_never_accepts_a_message_of_another_device_or_channel(dev: str, channel: str, obj) -> None:
    try:
        msg = decode_for_topic(f"lonewatch/{dev}/{channel}", json.dumps(obj).encode())
    except ValidationError:
        return
    assert msg.type == channel
    assert (msg.id.rpartition(":")[0] if channel == "ack" else msg.device) == dev


@pytest.mark.parametrize("size", [MAX_PAYLOAD_BYTES + 1, 65536, 4 * 1024 * 1024])
def test_oversized_payload_is_refused_before_parsing_with_the_limit_named(size: int) -> None:
    payload = b'{"v":1,"type":"alive"' + b" " * size + b"}"
    with pytest.raises(ValidationError, match=str(MAX_PAYLOAD_BYTES)):
        decode(payload)
    with pytest.raises(ValidationError, match=str(MAX_PAYLOAD_BYTES)):
        decode_for_topic("lonewatch/lw-0001/alive", payload)


def test_oversized_message_is_refused_on_encode_too() -> None:
    # Relay-raised events carry free bookkeeping data (device kinds have a schema, issue 15).
    ev = Event("lw-0001", 1, "lost_contact", 1_796_000_000.0, data={"note": "x" * MAX_PAYLOAD_BYTES}, origin="relay")
    with pytest.raises(ValidationError, match=str(MAX_PAYLOAD_BYTES)):
        encode(ev)


def test_deeply_nested_json_within_the_size_limit_is_a_clear_error() -> None:
    payload = b"[" * 2040 + b"]" * 2040
    assert len(payload) <= MAX_PAYLOAD_BYTES
    with pytest.raises(ValidationError):
        decode(payload)


# --- SIA DC-09 ---------------------------------------------------------------------------

MOMENT = datetime(2026, 11, 30, 13, 5, 28, tzinfo=timezone.utc)
frames = st.builds(
    SiaFrame,
    message_id=st.sampled_from(["ADM-CID", "SIA-DCS", "ACK", "NAK", "DUH"]),
    sequence=st.integers(1, 9999),
    account=st.from_regex(r"[0-9A-F]{3,16}", fullmatch=True),
    data=st.from_regex(r"#[0-9A-F]{4}\|1[0-9]{3} 0[0-9] [0-9]{3}", fullmatch=True),
    xdata=st.lists(st.from_regex(r"[XYHI][ -Z\\^-~]{0,12}", fullmatch=True), max_size=3).map(tuple),
    timestamp=st.sampled_from([None, MOMENT]),
    receiver=st.sampled_from([None, "1", "A3F"]),
    line=st.sampled_from(["1", "0", "FFFFFF"]),
)
KEY = b"0123456789ABCDEF"


def _mutations(raw: bytes) -> st.SearchStrategy[bytes]:
    n = len(raw)
    return st.one_of(
        st.integers(0, n - 1).map(lambda i: raw[:i]),  # partial
        st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(lambda t: raw[: t[0]] + bytes([t[1]]) + raw[t[0] + 1 :]),
        st.binary(min_size=1, max_size=40).map(lambda b: raw + b),  # trailing garbage / binary
        st.just(raw + raw),  # two frames merged in one read
        st.just(raw[1:]),  # LF missing
        st.just(raw.replace(b"L", b"", 1)),  # line field missing
        st.just(raw.replace(b"R", b"", 1)),  # receiver field missing
    )


@FAST
@given(st.data(), frames, st.booleans())
def test_decode_frame_of_mutated_frames_gives_a_frame_or_a_reason(data, frame: SiaFrame, encrypted: bool) -> None:
    key = KEY if encrypted and frame.timestamp is not None else None
    raw = encode_frame(frame, key)
    assert decode_frame(raw, {frame.account: KEY}).sequence == frame.sequence  # the untouched frame reads back
    mutated = data.draw(_mutations(raw))
    try:
        got = decode_frame(mutated, {frame.account: KEY} if data.draw(st.booleans()) else None)
    except SiaFrameError as exc:
        assert exc.reason
        return
    # Whatever is accepted passed the CRC and length checks over its own body.
    body = mutated[9:-1]
    assert got.crc == crc16_arc(body) and got.length == len(body)


@FAST
@given(st.binary(max_size=300))
@example(b"\n\r")
@example(b"\n0000\r")
@example(b"\n12340004\"ACK\"\r")
def test_decode_frame_of_arbitrary_bytes_never_crashes(raw: bytes) -> None:
    try:
        decode_frame(raw, {"1234": KEY})
    except SiaFrameError as exc:
        assert exc.reason


def _reply_shapes() -> st.SearchStrategy[bytes]:
    bodies = st.one_of(
        st.from_regex(r'"\*?(ACK|NAK|DUH|RSP)"[0-9]{0,4}([RL][0-9A-F]{1,6}){0,3}(#[0-9A-F]{3,16}|A[0-9]*)?(\[[ -~]{0,40})?', fullmatch=True),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    )
    wrapped = bodies.map(lambda b: wrap_frame(b) if len(b) <= 0xFFF and b.isprintable() else b.encode())
    return st.one_of(
        wrapped,
        bodies.map(lambda b: b.encode()),  # no envelope (bare reply)
        wrapped.map(lambda b: b[:-1]),  # no CR: partial
        wrapped.map(lambda b: b[:5] + b"FFFF"[:4] + b[9:] if len(b) > 9 else b),  # bad length field
        wrapped.map(lambda b: b"\n0000" + b[5:]),  # bad CRC
        st.tuples(wrapped, wrapped).map(lambda t: t[0] + t[1]),  # merged replies
        st.binary(max_size=80),  # binary noise
    )


@FAST
@given(_reply_shapes(), st.sampled_from([None, KEY, "30313233343536373839414243444546"]))
@example(b'"NAK"', None)
@example(b"\n\r", None)
@example(b'\n00000000"*ACK"0001R1L1#1234[0123]\r', KEY)
def test_parse_reply_of_every_shape_gives_a_reply_or_a_reason(raw: bytes, key) -> None:
    reply_complete(raw)  # must not raise either
    try:
        reply = parse_reply(raw, key)
    except SiaFrameError as exc:
        assert exc.reason
        return
    assert isinstance(reply, SiaReply) and reply.kind in ("ACK", "NAK", "DUH", "RSP")
    assert reply.sequence is None or 0 <= reply.sequence <= 9999


def test_position_and_alive_survive_the_extremes_they_allow() -> None:
    """Boundary values the validators accept must also encode and decode."""
    alive = Alive("lw-0001", 1e11, 100, -140, "unknown", Position(-90, 180, 1e6, 0), 1e10, "x" * 32, 10**9)
    assert decode(encode(alive)) == alive

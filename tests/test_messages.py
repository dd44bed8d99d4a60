"""The wire contract: topics, encoding, and validation that names the bad field."""

from __future__ import annotations

import json

import pytest

from protocol.errors import LonewatchError, ValidationError
from protocol.messages import (
    MAX_PAYLOAD_BYTES,
    Ack,
    Alive,
    Event,
    Position,
    Status,
    decode,
    decode_for_topic,
    encode,
)
from protocol.topics import parse_topic, shared, topic

POS = Position(lat=55.66857, lon=12.57613, accuracy_m=6.0, fixed_at=1_796_000_000.0)


def _event(**over) -> dict:
    base = {"v": 1, "type": "event", "device": "lw-0001", "seq": 7, "kind": "panic", "ts": 1_796_000_000.5,
            "position": {"lat": 55.1, "lon": 12.2, "accuracy_m": 5, "fixed_at": 1_796_000_000}, "data": {}}  # fmt: skip
    base.update(over)
    return base


@pytest.mark.parametrize(
    "msg",
    [
        Event("lw-0001", 1, "silent_panic", 1_796_000_000.0, POS),
        Event("lw-0001", 2, "checkin_start", 1_796_000_000.0, None, {"duration_s": 1800}),
        Event("lw-0001", 3, "cancel", 1_796_000_000.0, None, {"cancels": "lw-0001:1"}),
        Alive("lw-0001", 1_796_000_000.0, 87, -71, "home", POS, 3600.0, "0.1.0", 0),
        Alive("lw-0001", 1_796_000_000.0, None, None, "unknown", None, 1.0, "0.1.0", 3),
        Status("lw-0001", "offline", 1_796_000_000.0),
        Ack("lw-0001:1", "arc", 1_796_000_000.0, {"receiver": "primary", "latency_ms": 41.0}),
    ],
)
def test_round_trip(msg) -> None:
    assert decode(encode(msg)) == msg


def test_event_id_is_device_and_sequence() -> None:
    assert Event("lw-0001", 42, "panic", 0.0).id == "lw-0001:42"


@pytest.mark.parametrize(
    ("payload", "field", "reason_part"),
    [
        (b"\xff\xfe", "", "not UTF-8"),
        (b"{not json", "", "not JSON"),
        (b"[1,2]", "", "JSON object"),
        (json.dumps(_event(v=2)).encode(), "v", "unsupported wire version"),
        (json.dumps(_event(type="bogus")).encode(), "type", "unknown message type"),
        (json.dumps(_event(kind="explode")).encode(), "kind", "must be one of"),
        (json.dumps(_event(seq=0)).encode(), "seq", "in 1"),
        (json.dumps(_event(seq=True)).encode(), "seq", "integer"),
        (json.dumps(_event(seq="7")).encode(), "seq", "integer"),
        (json.dumps(_event(device="LW 1")).encode(), "device", "device id"),
        (json.dumps(_event(extra=1)).encode(), "extra", "unknown field"),
        (json.dumps({k: v for k, v in _event().items() if k != "ts"}).encode(), "ts", "missing"),
        (json.dumps(_event(position={"lat": 91, "lon": 0, "accuracy_m": 1, "fixed_at": 1})).encode(), "position.lat", "-90..90"),
        (json.dumps(_event(position={"lat": 1, "lon": 0})).encode(), "position.fixed_at", "missing"),
        (json.dumps(_event(kind="checkin_start", data={"duration_s": 4})).encode(), "data.duration_s", "5..86400"),
        (json.dumps(_event(kind="cancel", data={"cancels": "lw-0002:1"})).encode(), "data.cancels", "this device"),
        (b'{"v":1,"type":"event","ts":NaN}', "", "NaN"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "", "limit"),
    ],
)
def test_bad_payloads_name_the_field(payload: bytes, field: str, reason_part: str) -> None:
    with pytest.raises(ValidationError) as err:
        decode(payload)
    assert err.value.field == field
    assert reason_part in str(err.value)
    assert isinstance(err.value, LonewatchError) and isinstance(err.value, ValueError)


def test_topic_device_must_match_payload_device() -> None:
    raw = encode(Event("lw-0002", 1, "panic", 1.0))
    with pytest.raises(ValidationError) as err:
        decode_for_topic("lonewatch/lw-0001/event", raw)
    assert err.value.field == "device"


def test_message_type_must_match_topic_channel() -> None:
    raw = encode(Status("lw-0001", "online", 1.0))
    with pytest.raises(ValidationError) as err:
        decode_for_topic("lonewatch/lw-0001/event", raw)
    assert err.value.field == "type"


def test_ack_for_another_device_is_refused() -> None:
    raw = encode(Ack("lw-0002:5", "received", 1.0))
    with pytest.raises(ValidationError):
        decode_for_topic("lonewatch/lw-0001/ack", raw)
    assert decode_for_topic("lonewatch/lw-0002/ack", raw).id == "lw-0002:5"


@pytest.mark.parametrize("name", ["lonewatch/lw-0001", "other/lw-0001/event", "lonewatch/lw-0001/bogus", "lonewatch/A B/event", "lonewatch/lw-0001/event/x"])
def test_bad_topics(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_topic(name)
    assert err.value.field == "topic"


def test_topic_helpers() -> None:
    assert topic("lw-0001", "ack") == "lonewatch/lw-0001/ack"
    assert parse_topic("lonewatch/lw-0001/alive") == ("lw-0001", "alive")
    assert shared("lonewatch/+/event", "g") == "$share/g/lonewatch/+/event"


def test_encode_refuses_invalid_message() -> None:
    with pytest.raises(ValidationError):
        encode(Event("lw-0001", 1, "not-a-kind", 1.0))

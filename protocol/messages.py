"""Message types on the wire, their JSON encoding and validation (SPEC §2, §3).

Every message is one UTF-8 JSON object with ``"v": 1`` (the wire version) and ``"type"``.
Decoding validates everything and names the bad field and why (:class:`ValidationError`);
it never returns a half-valid message.

Times are Unix seconds (float) from the sender's clock. The device's clock may be wrong
before NTP sync (SPEC §7), so it only dates an event (time of occurrence); the relay stamps
SIA DC-09 frames with its own clock.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, Union

from .beacons import normalize_beacon_id
from .errors import ValidationError
from .eventdata import check_event_data
from .topics import check_device_id, parse_topic

WIRE_VERSION: Final = 1
#: Largest payload either side accepts, in bytes (an alarm is ~300 B; SPEC §3 "sizes").
MAX_PAYLOAD_BYTES: Final = 4096

#: Events that are alarms: delivered first, SMS fallback, sent to the ARC as new alarms.
ALARM_KINDS: Final = frozenset({"panic", "silent_panic", "man_down", "missed_checkin"})
#: Every event kind a device may send (SPEC §2 "Messages the device sends").
EVENT_KINDS: Final = ALARM_KINDS | frozenset(
    {
        "cancel",
        "checkin_start",
        "checkin_done",
        "shift_start",
        "shift_end",
        "low_battery",
        "battery_restore",
        "test",
        "listen_in",  # issue 11: a voice call to the ARC follows the alarm in data["alarm"]
        # issue 12: the shift-start readiness result, and a span without MQTT and SMS
        "readiness",
        "unprotected",
    }
)
#: Kinds only the relay raises (SPEC §3 supervision): ``lost_contact`` (CID 356 q1) and its
#: restore ``contact_restore`` (356 q3). The relay also raises ``missed_checkin`` itself.
RELAY_KINDS: Final = frozenset({"lost_contact", "contact_restore"})
#: Relay-raised kinds that are alarms (escalated like :data:`ALARM_KINDS`).
RELAY_ALARM_KINDS: Final = frozenset({"lost_contact"})
#: Who raised an event: the device (id ``<device>:<seq>``) or the relay's supervision
#: (id ``<device>:r<seq>``: the two never collide).
ORIGINS: Final = ("device", "relay")
REGISTRATION_STATES: Final = frozenset(
    {"home", "roaming", "searching", "denied", "not_registered", "unknown"}
)
#: Ack stages the relay sends back: ``received`` (stored in Redis — the only ack that lets
#: the device drop the event from its queue), ``arc`` (the ARC ACKed), ``arc_failed``.
ACK_STAGES: Final = frozenset({"received", "arc", "arc_failed"})
#: Shortest ``checkin_start`` duration on the wire, seconds. Devices refuse less than 60 s
#: unless their config is in ``[timing] test_mode`` (demos and tests use a few seconds).
CHECKIN_MIN_S: Final = 5


def event_id(device_id: str, sequence: int, origin: str = "device") -> str:
    """Unique event id ``<device_id>:<sequence>`` (SPEC §2: device id + persisted sequence);
    relay-raised events (``origin="relay"``) are ``<device_id>:r<sequence>``."""
    return f"{device_id}:r{sequence}" if origin == "relay" else f"{device_id}:{sequence}"


def alarm_priority(kind: str) -> int:
    """Queue priority of an event kind, lower first: 0 for alarms and cancels (a cancel may
    never overtake its alarm, nor wait behind routine events; nor may the ``listen_in`` that
    announces the alarm's voice call), 10 for the rest."""
    return 0 if kind in ALARM_KINDS or kind in ("cancel", "listen_in") else 10


@dataclass(frozen=True, slots=True)
class Position:
    """A GNSS fix. ``lat``/``lon`` decimal degrees (WGS84), ``accuracy_m`` metres or None
    when the modem does not report one (SIM7600 ``+CGPSINFO``), ``fixed_at`` Unix seconds
    (device clock) when the fix was taken."""

    lat: float
    lon: float
    accuracy_m: float | None
    fixed_at: float


@dataclass(frozen=True, slots=True)
class BeaconSighting:
    """The BLE location beacon a device takes as its place (issue 12): canonical ``id``
    (:func:`protocol.beacons.normalize_beacon_id`), smoothed ``rssi`` in dBm, ``seen_at`` Unix
    seconds (device clock) of the last advertisement heard from it."""

    id: str
    rssi: float
    seen_at: float


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened on a device: an alarm, cancel, check-in, shift, battery, test.

    ``id`` is :func:`event_id` of ``device``/``seq``; ``ts`` is when it happened (device
    clock, Unix s); ``data`` holds kind-specific fields: ``checkin_start`` has
    ``duration_s`` (int seconds), ``cancel`` has ``cancels`` (the alarm's event id),
    battery events have ``battery_pct``. ``origin`` is ``"relay"`` for events the relay's
    supervision raised (:data:`RELAY_KINDS`, relay-side ``missed_checkin``); their ``seq``
    counts per device on the relay and their ``ts`` is the relay's clock.
    """

    device: str
    seq: int
    kind: str
    ts: float
    position: Position | None = None
    data: dict[str, Any] = field(default_factory=dict)
    type: Literal["event"] = "event"
    origin: str = "device"
    #: Issue 12: the beacon the device took as its place when the event was raised, or None.
    beacon: BeaconSighting | None = None

    @property
    def id(self) -> str:
        return event_id(self.device, self.seq, self.origin)

    @property
    def is_alarm(self) -> bool:
        return self.kind in ALARM_KINDS or self.kind in RELAY_ALARM_KINDS


@dataclass(frozen=True, slots=True)
class Alive:
    """Periodic supervision message (default every 60 s, SPEC §2): battery %, signal dBm,
    registration state, last GNSS fix, uptime s, firmware version, queue depth."""

    device: str
    ts: float
    battery_pct: int | None
    signal_dbm: int | None
    registration: str
    position: Position | None
    uptime_s: float
    firmware: str
    queue_depth: int
    type: Literal["alive"] = "alive"
    #: Issue 12: the beacon the device takes as its place now, or None.
    beacon: BeaconSighting | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """Retained connection status: ``online`` on every connect, ``offline`` as the Last Will
    (LWT). ``offline`` alone is never an alarm (SPEC §3 supervision)."""

    device: str
    state: Literal["online", "offline"]
    ts: float
    type: Literal["status"] = "status"


@dataclass(frozen=True, slots=True)
class Ack:
    """Relay → device acknowledgement of event ``id`` at ``stage`` (see :data:`ACK_STAGES`);
    ``detail`` e.g. ``{"receiver": "primary", "latency_ms": 41}`` for ``arc``."""

    id: str
    stage: str
    ts: float
    detail: dict[str, Any] = field(default_factory=dict)
    type: Literal["ack"] = "ack"


Message = Union[Event, Alive, Status, Ack]


def encode(message: Message) -> bytes:
    """Encode a message as compact UTF-8 JSON with the wire version.

    Raises:
        ValidationError: the message does not pass the same checks :func:`decode` applies.
    """
    obj = {"v": WIRE_VERSION, **asdict(message)}
    if obj.get("origin") == "device":
        del obj["origin"]  # the default: not on the wire (cellular bytes, older relays)
    if "beacon" in obj and obj["beacon"] is None:
        del obj["beacon"]  # optional (issue 12): absent when no beacon is heard
    _from_obj(obj)  # one validator for both directions; names the bad field
    try:
        raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValidationError("data", f"not encodable as JSON: {exc}") from None
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ValidationError("", f"message is {len(raw)} bytes, limit {MAX_PAYLOAD_BYTES}")
    return raw


def decode(payload: bytes | str) -> Message:
    """Decode and validate one message.

    Raises:
        ValidationError: too large, not UTF-8, not JSON, wrong version, unknown type, or a
            field missing / of the wrong type / out of range (``field`` names it).
    """
    if isinstance(payload, str):
        payload = payload.encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValidationError("", f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ValidationError("", f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValidationError("", f"payload is not JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise ValidationError("", "payload is nested too deeply") from None
    return _from_obj(obj)


def decode_for_topic(topic_name: str, payload: bytes | str) -> Message:
    """Decode a message received on ``topic_name`` and check it belongs there: the topic's
    channel matches the message type and the topic's device id equals the payload's
    (SPEC §3 pipeline: "topic device id = payload device id").

    Raises:
        ValidationError: as :func:`decode`, or field ``topic`` / ``device`` on a mismatch.
    """
    device_id, channel = parse_topic(topic_name)
    msg = decode(payload)
    if msg.type != channel:
        raise ValidationError("type", f"{msg.type!r} message on the {channel!r} topic")
    if isinstance(msg, Ack):
        if msg.id.rpartition(":")[0] != device_id:
            raise ValidationError("id", f"ack for {msg.id!r} on the topic of device {device_id!r}")
        return msg
    if msg.device != device_id:
        raise ValidationError("device", f"payload device {msg.device!r} differs from topic device {device_id!r}")
    if isinstance(msg, Event) and msg.origin != "device":
        raise ValidationError("origin", "relay-raised events never come from a device")
    return msg


# --- validation -------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValidationError("", f"{name} is not allowed in messages")


def _from_obj(obj: Any) -> Message:
    if not isinstance(obj, dict):
        raise ValidationError("", "message must be a JSON object")
    v = obj.get("v")
    if v != WIRE_VERSION:
        raise ValidationError("v", f"unsupported wire version {v!r}, expected {WIRE_VERSION}")
    kind = obj.get("type")
    builder = _BUILDERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise ValidationError("type", f"unknown message type {kind!r}; expected one of {sorted(_BUILDERS)}")
    r = _Reader(obj, allowed=_FIELDS[kind])
    msg = builder(r)
    r.finish()
    return msg


class _Reader:
    """Reads typed fields from a dict, naming the field in every error."""

    def __init__(self, obj: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> None:
        self.obj, self.prefix = obj, prefix
        extra = set(obj) - allowed - {"v", "type"}
        if extra:
            raise ValidationError(prefix + sorted(extra)[0], "unknown field")

    def _name(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str, default: Any = ...) -> Any:
        if key not in self.obj:
            if default is ...:
                raise ValidationError(self._name(key), "missing")
            return default
        return self.obj[key]

    def string(self, key: str, *, choices: frozenset[str] | None = None, max_len: int = 64) -> str:
        val = self.get(key)
        if not isinstance(val, str) or not val or len(val) > max_len:
            raise ValidationError(self._name(key), f"must be a non-empty string of at most {max_len} characters")
        if choices is not None and val not in choices:
            raise ValidationError(self._name(key), f"must be one of {', '.join(sorted(choices))}; got {val!r}")
        return val

    def number(self, key: str, lo: float, hi: float, *, integer: bool = False, optional: bool = False) -> Any:
        val = self.get(key, None if optional else ...)
        if val is None and optional:
            return None
        ok_type = int if integer else (int, float)
        if isinstance(val, bool) or not isinstance(val, ok_type) or not math.isfinite(val):
            raise ValidationError(self._name(key), f"must be {'an integer' if integer else 'a number'}, got {val!r}")
        if not lo <= val <= hi:
            raise ValidationError(self._name(key), f"must be in {lo}..{hi}, got {val!r}")
        return val if integer else float(val)

    def position(self, key: str) -> Position | None:
        val = self.get(key, None)
        if val is None:
            return None
        if not isinstance(val, dict):
            raise ValidationError(self._name(key), "must be an object or null")
        r = _Reader(val, frozenset({"lat", "lon", "accuracy_m", "fixed_at"}), self._name(key) + ".")
        return Position(
            lat=r.number("lat", -90, 90),
            lon=r.number("lon", -180, 180),
            accuracy_m=r.number("accuracy_m", 0, 1e6, optional=True),
            fixed_at=r.number("fixed_at", 0, 1e11),
        )

    def beacon(self, key: str) -> BeaconSighting | None:
        """Optional beacon sighting (issue 12): ``{"id", "rssi" dBm -127..20, "seen_at"}``."""
        val = self.get(key, None)
        if val is None:
            return None
        if not isinstance(val, dict):
            raise ValidationError(self._name(key), "must be an object or null")
        r = _Reader(val, frozenset({"id", "rssi", "seen_at"}), self._name(key) + ".")
        return BeaconSighting(
            id=normalize_beacon_id(r.get("id"), self._name(key) + ".id"),
            rssi=r.number("rssi", -127, 20),
            seen_at=r.number("seen_at", 0, 1e11),
        )

    def mapping(self, key: str) -> dict[str, Any]:
        val = self.get(key, {})
        if not isinstance(val, dict):
            raise ValidationError(self._name(key), "must be an object")
        return val

    def finish(self) -> None:
        """Hook for checks over several fields (none yet)."""


def _event(r: _Reader) -> Event:
    device = check_device_id(r.get("device"))
    origin = r.string("origin", choices=frozenset(ORIGINS)) if "origin" in r.obj else "device"
    kind = r.string("kind", choices=EVENT_KINDS if origin == "device" else EVENT_KINDS | RELAY_KINDS)
    data = r.mapping("data")
    if origin == "device":  # relay-raised: data is the relay's own bookkeeping (deadline, last heard …)
        check_event_data(kind, device, data)  # per-kind schema, protocol/eventdata.py (issue 15)
    return Event(
        device=device,
        seq=r.number("seq", 1, 2**53, integer=True),
        kind=kind,
        ts=r.number("ts", 0, 1e11),
        position=r.position("position"),
        data=data,
        origin=origin,
        beacon=r.beacon("beacon"),
    )


def _alive(r: _Reader) -> Alive:
    return Alive(
        device=check_device_id(r.get("device")),
        ts=r.number("ts", 0, 1e11),
        battery_pct=r.number("battery_pct", 0, 100, integer=True, optional=True),
        signal_dbm=r.number("signal_dbm", -140, 0, integer=True, optional=True),
        registration=r.string("registration", choices=REGISTRATION_STATES),
        position=r.position("position"),
        uptime_s=r.number("uptime_s", 0, 1e10),
        firmware=r.string("firmware", max_len=32),
        queue_depth=r.number("queue_depth", 0, 1e9, integer=True),
        beacon=r.beacon("beacon"),
    )


def _status(r: _Reader) -> Status:
    return Status(
        device=check_device_id(r.get("device")),
        state=r.string("state", choices=frozenset({"online", "offline"})),  # type: ignore[arg-type]
        ts=r.number("ts", 0, 1e11),
    )


def _ack(r: _Reader) -> Ack:
    eid = r.string("id", max_len=64)
    dev, _, seq = eid.rpartition(":")
    check_device_id(dev, "id")
    if not seq.isdigit():
        raise ValidationError("id", f"not an event id: {eid!r}")
    return Ack(id=eid, stage=r.string("stage", choices=ACK_STAGES), ts=r.number("ts", 0, 1e11), detail=r.mapping("detail"))


_BUILDERS = {"event": _event, "alive": _alive, "status": _status, "ack": _ack}
_FIELDS = {
    "event": frozenset({"device", "seq", "kind", "ts", "position", "data", "origin", "beacon"}),
    "alive": frozenset(
        {"device", "ts", "battery_pct", "signal_dbm", "registration", "position", "uptime_s", "firmware", "queue_depth",
         "beacon"}
    ),
    "status": frozenset({"device", "state", "ts"}),
    "ack": frozenset({"id", "stage", "ts", "detail"}),
}

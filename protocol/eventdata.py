"""Per-kind schema of an event's ``data`` (issue 15 "every event field checked per kind").

Each device event kind lists the ``data`` fields it may carry, their types and ranges, and
which are required; everything else is refused with the field's name (``data.<field>``). The
relay dead-letters a refused event with that reason (SPEC §3 pipeline: bad input → dead
letter, never a crash). Relay-raised events (``origin = "relay"``) carry the relay's own
bookkeeping and are not checked here.

Rules that keep one device from harming another worker's alarm:

* No device kind may carry ``restore`` / ``restores``: only the relay's supervision restores
  (``contact_restore``). A data field can therefore never turn an alarm into a non-alarm.
* A reference to another event (``cancels``, ``checkin``) must be an event id of the *same*
  device (:class:`EventRef`); that the alarm exists and is open is the relay's check
  (:mod:`relay.references`), because only the relay has the event log.

How to add a kind or a field (other issues do: ``listen_in``, beacons, readiness):

1. A new kind: add it to :data:`protocol.messages.EVENT_KINDS` (and ``ALARM_KINDS`` if it is
   an alarm) and give it an entry here with :func:`define_kind` — ``define_kind("listen_in",
   {"alarm": EventRef(required=True)})``. A kind without an entry may carry no data at all.
2. A field on every alarm (e.g. a BLE beacon seen): :func:`add_alarm_field` (``"beacon":
   Text(max_len=32)``); on one kind: :func:`add_field`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import ValidationError


@dataclass(frozen=True, slots=True)
class Field:
    """A ``data`` field's rule; subclasses check the value. ``required`` fields must be
    present."""

    required: bool = False

    def check(self, name: str, value: Any, device: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Int(Field):
    """An integer (JSON number without fraction, not a boolean) in ``lo..hi``."""

    lo: int = 0
    hi: int = 2**31

    def check(self, name: str, value: Any, device: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(name, f"must be an integer, got {value!r}")
        if not self.lo <= value <= self.hi:
            raise ValidationError(name, f"must be in {self.lo}..{self.hi}, got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class Num(Field):
    """A finite number (int or float, not a boolean) in ``lo..hi``."""

    lo: float = -1e12
    hi: float = 1e12

    def check(self, name: str, value: Any, device: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError(name, f"must be a number, got {value!r}")
        if not self.lo <= value <= self.hi:
            raise ValidationError(name, f"must be in {self.lo}..{self.hi}, got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class Text(Field):
    """A non-empty string of at most ``max_len`` characters, one of ``choices`` if given."""

    max_len: int = 64
    choices: frozenset[str] | None = None

    def check(self, name: str, value: Any, device: str) -> str:
        if not isinstance(value, str) or not value or len(value) > self.max_len:
            raise ValidationError(name, f"must be a non-empty string of at most {self.max_len} characters")
        if self.choices is not None and value not in self.choices:
            raise ValidationError(name, f"must be one of {', '.join(sorted(self.choices))}; got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class Flag(Field):
    """A JSON boolean."""

    def check(self, name: str, value: Any, device: str) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(name, f"must be true or false, got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class EventRef(Field):
    """The id of another event of the *same* device (``<device>:<seq>``, seq ≥ 1)."""

    def check(self, name: str, value: Any, device: str) -> str:
        prefix = device + ":"
        if not isinstance(value, str) or not value.startswith(prefix) or not (value[len(prefix):].isascii() and value[len(prefix):].isdigit()) \
                or int(value[len(prefix):]) < 1 or len(value) > 64:
            raise ValidationError(name, f"must be the id of an event of this device ({device}:<seq>), got {value!r}")
        return value


#: Who started a routine event (shift by CLI or schedule, test by doctor or test-alarm).
@dataclass(frozen=True, slots=True)
class Report(Field):
    """A small object of named results: at most ``max_items`` entries, each name a string of at
    most 32 characters and each value an object of scalars (booleans, finite numbers, strings
    of at most 200 characters) — e.g. the shift-start self-test's checks (issue 12)."""

    max_items: int = 16

    def check(self, name: str, value: Any, device: str) -> dict[str, Any]:
        if not isinstance(value, dict) or len(value) > self.max_items:
            raise ValidationError(name, f"must be an object of at most {self.max_items} entries")
        for key, item in value.items():
            if not isinstance(key, str) or not key or len(key) > 32 or not isinstance(item, dict) or len(item) > 8:
                raise ValidationError(f"{name}.{key}", "must be a named object of at most 8 scalars")
            for k, v in item.items():
                ok = (isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(v))
                      or (isinstance(v, str) and len(v) <= 200) or v is None)
                if not isinstance(k, str) or len(k) > 32 or not ok:
                    raise ValidationError(f"{name}.{key}.{k}", "must be a boolean, a number or a short string")
        return value


SOURCE: Final = Text(max_len=32)

#: ``data`` fields per device event kind (SPEC §2 messages the device sends). Extend with
#: :func:`define_kind` / :func:`add_field` / :func:`add_alarm_field`, not by editing callers.
KIND_FIELDS: dict[str, dict[str, Field]] = {
    "panic": {},
    "silent_panic": {},
    # The device's own check-in timer expired (the relay raises its own too).
    "missed_checkin": {"checkin": EventRef()},
    # A cancel names the alarm it cancels (SPEC §2: sent as a new event, never deletes it).
    "cancel": {"cancels": EventRef(required=True)},
    "checkin_start": {"duration_s": Int(required=True, lo=5, hi=86400)},  # lo = messages.CHECKIN_MIN_S
    "checkin_done": {"checkin": EventRef()},
    "shift_start": {"source": SOURCE},
    "shift_end": {"source": SOURCE},
    "low_battery": {"battery_pct": Int(lo=0, hi=100)},
    "battery_restore": {"battery_pct": Int(lo=0, hi=100)},
    "test": {"source": SOURCE},
    # Issue 10: what set man-down off (fall, tilt, no_motion) and how long the worker was still.
    "man_down": {"trigger": Text(max_len=32), "still_s": Num(lo=0, hi=86400)},
    # Issue 11: listen-in to follow — the alarm the voice call belongs to.
    "listen_in": {"alarm": EventRef(required=True), "numbers": Int(lo=0, hi=32)},
    # Issue 12: the shift-start self-test, and a span without MQTT and SMS (Unix seconds).
    "readiness": {"ready": Flag(required=True), "final": Flag(), "shift": EventRef(), "attempt": Int(lo=0, hi=10_000),
                  "checks": Report()},
    "unprotected": {"since": Num(lo=0, hi=1e11, required=True), "until": Num(lo=0, hi=1e11, required=True),
                    "span_s": Num(lo=0, hi=1e9)},
}

#: Fields no device kind may carry, with the reason given (issue 15).
FORBIDDEN: Final = {
    "restore": "only the relay's supervision restores; a device event cannot restore anything",
    "restores": "only the relay's supervision restores; a device event cannot restore anything",
}


def define_kind(kind: str, fields: Mapping[str, Field]) -> None:
    """Give ``kind`` its ``data`` schema (replacing any). The kind must also be in
    :data:`protocol.messages.EVENT_KINDS`.

    Raises:
        ValueError: a field name in :data:`FORBIDDEN`.
    """
    _no_forbidden(fields)
    KIND_FIELDS[kind] = dict(fields)


def add_field(kind: str, name: str, rule: Field) -> None:
    """Allow ``data.<name>`` on ``kind``.

    Raises:
        KeyError: unknown kind. ValueError: a forbidden field name.
    """
    _no_forbidden({name: rule})
    KIND_FIELDS[kind][name] = rule


def add_alarm_field(name: str, rule: Field, alarm_kinds: Iterable[str] | None = None) -> None:
    """Allow ``data.<name>`` on every alarm kind (default: ``protocol.messages.ALARM_KINDS``)."""
    if alarm_kinds is None:
        from .messages import ALARM_KINDS

        alarm_kinds = ALARM_KINDS
    for kind in alarm_kinds:
        add_field(kind, name, rule)


def _no_forbidden(fields: Mapping[str, Field]) -> None:
    bad = sorted(set(fields) & set(FORBIDDEN))
    if bad:
        raise ValueError(f"data field {bad[0]!r} may not be given to a device kind: {FORBIDDEN[bad[0]]}")


def check_event_data(kind: str, device: str, data: Any) -> dict[str, Any]:
    """Check a device event's ``data`` against :data:`KIND_FIELDS` (issue 15).

    Args:
        kind: the event kind (already checked against ``EVENT_KINDS``).
        device: the event's device id (references must name this device's events).
        data: the decoded ``data`` object.

    Returns:
        ``data`` unchanged (a dict) when valid.

    Raises:
        ValidationError: ``data`` not an object; a forbidden, unknown, missing or invalid
            field (``field`` = ``data.<name>``).
    """
    if not isinstance(data, dict):
        raise ValidationError("data", "must be an object")
    schema = KIND_FIELDS.get(kind, {})
    for name in sorted(data):
        if name in FORBIDDEN:
            raise ValidationError(f"data.{name}", FORBIDDEN[name])
        if name not in schema:
            allowed = ", ".join(sorted(schema)) or "none"
            raise ValidationError(f"data.{name}", f"not a field of {kind!r} events (allowed: {allowed})")
        schema[name].check(f"data.{name}", data[name], device)
    for name, rule in schema.items():
        if rule.required and name not in data:
            raise ValidationError(f"data.{name}", f"missing (required for {kind!r})")
    return data


def salvage_alarm(topic_name: str, payload: bytes, error: ValidationError):
    """An alarm refused only for its ``data`` is still an alarm (issue 15: a data field can
    never turn an alarm into a non-alarm, and an alarm is never dropped): the same event with
    ``data`` emptied, or None when the message is not such an alarm or is bad elsewhere too.

    The caller dead-letters the original with ``error`` *and* delivers the salvaged alarm.

    Returns:
        protocol.messages.Event | None.
    """
    import json

    from .messages import ALARM_KINDS, decode_for_topic

    if not (error.field == "data" or error.field.startswith("data.")):
        return None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("type") != "event" or obj.get("kind") not in ALARM_KINDS \
            or "origin" in obj:
        return None
    try:
        return decode_for_topic(topic_name, json.dumps({**obj, "data": {}}).encode())
    except ValidationError:
        return None

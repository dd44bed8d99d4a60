"""Places in the registry: a BLE beacon id → site, building, floor, room, note (issue 12,
SPEC §5b "Place").

The device reports the beacon it takes as its place (:class:`protocol.messages.BeaconSighting`
on events and alives); the relay looks it up here and sends the place to the ARC as SIA DC-09
extended data ``O`` (building), ``L`` (location on site: the floor), ``R`` (room) — or in the
alarm text ``I`` for a receiver that takes one block (:func:`relay.arc.plan_xdata`) — and to
the contacts in their language (:mod:`relay.notify.templates`). GNSS stays as it is; both go
out when both are known.

File format (``lonewatch registry places import FILE``), validated with ``file:line`` errors
like every config file; a beacon listed twice is refused with both lines::

    [[places]]
    beacon = "ib:fda50693-a4e2-4fb1-afcf-c6eb07647825:1:17"
    site = "Vestergade 12"
    building = "Main building"
    floor = "Basement"
    room = "Laundry"
    note = "plant room behind the boiler, door code 4711"

Storage: one Redis hash ``lw:{reg}:places`` (beacon id → JSON), beside the registry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from os import PathLike
from typing import Any, Final

from protocol.beacons import normalize_beacon_id
from protocol.configfile import ConfigChecker, ConfigSource, load_toml
from protocol.errors import ValidationError
from protocol.messages import Event

from .store import Store, registry_key

__all__ = ["FIELD_MAX", "NOTE_MAX", "Place", "PlaceStore", "STATE_BEACON_MAX_AGE_S", "dump_places_toml",
           "load_places_toml", "place_fields", "place_for", "places_from_dict"]

#: Longest building / floor / room name (it travels in a DC-09 block and an SMS line).
FIELD_MAX: Final = 64
NOTE_MAX: Final = 200
#: An event without its own beacon takes the device's last alive beacon if it is no older
#: than this (seconds, relay clock), e.g. an alarm raised just before the first scan.
STATE_BEACON_MAX_AGE_S: Final = 300.0


@dataclass(frozen=True)
class Place:
    """Where a beacon hangs: ``beacon`` (canonical id), ``site`` (a registry site name),
    ``building``, ``floor``, ``room`` (at least one of the three), ``note`` (for whoever comes
    to help: "plant room behind the boiler, door code 4711")."""

    beacon: str
    site: str
    building: str = ""
    floor: str = ""
    room: str = ""
    note: str = ""

    def label(self) -> str:
        """``building / floor / room`` of the parts that are set (language-neutral)."""
        return " / ".join(p for p in (self.building, self.floor, self.room) if p)

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}


def places_from_dict(data: Any, source: str = "<dict>", *, sites: Iterable[str] | None = None) -> list[Place]:
    """Validate a document shaped like the places file (``{"places": [...]}``).

    Raises:
        protocol.configfile.ConfigError: every problem (no line numbers for dicts).
    """
    return _build(ConfigSource.from_dict(data, source), sites)


def load_places_toml(path: str | PathLike[str], *, sites: Iterable[str] | None = None) -> list[Place]:
    """Read and validate a places file (format: module docstring). ``sites``: the registry's
    site names; a place at another site is refused (None: not checked).

    Raises:
        protocol.configfile.ConfigError: unreadable / invalid TOML, or every problem found
            (bad beacon id, missing site, nothing but a site, too long, a beacon twice —
            with the line of its first listing), one ``file:line: key: message`` line each.
    """
    return _build(load_toml(path), sites)


def _build(source: ConfigSource, sites: Iterable[str] | None = None) -> list[Place]:
    known = None if sites is None else set(sites)
    checker = ConfigChecker(source)
    root = checker.root()
    seen: dict[str, int | None] = {}
    out: list[Place] = []
    for t in root.tables("places"):
        raw = t.string("beacon")
        beacon = raw
        try:
            beacon = normalize_beacon_id(raw) if raw else raw
        except ValidationError as exc:
            t.problem("beacon", exc.reason)
            beacon = None  # the other keys are still read (and checked) below
        fields = {k: t.string(k, "", max_len=FIELD_MAX) for k in ("building", "floor", "room")}
        place = Place(beacon=beacon, site=t.string("site", nonempty=True, max_len=FIELD_MAX),
                      note=t.string("note", "", max_len=NOTE_MAX), **fields)
        if known is not None and place.site and place.site not in known:
            t.problem("site", f"unknown site {place.site!r}; the registry has: {', '.join(sorted(known)) or 'none'}")
        if not any(fields.values()):
            t.problem(None, "a place needs at least one of building, floor, room")
        if beacon is None:
            continue
        if beacon in seen:
            first = seen[beacon]
            t.problem("beacon", f"beacon {beacon} is listed twice" + (f" (first at line {first})" if first else ""))
            continue
        seen[beacon] = t.line_of("beacon")
        out.append(place)
    checker.finish()
    return out


def dump_places_toml(places: Iterable[Place]) -> str:
    """Places as TOML that :func:`load_places_toml` reads back unchanged."""
    lines = ["# lonewatch places: BLE beacon → site, building, floor, room (written by "
             "`lonewatch registry places export`)"]
    for p in places:
        lines += ["", "[[places]]"]
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in p.to_dict().items()]
    return "\n".join(lines) + "\n"


class PlaceStore:
    """Places in Redis (``lw:{reg}:places``). Every method raises
    :class:`relay.store.StoreError` when Redis fails."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.key = registry_key("places")

    def save(self, places: list[Place], *, replace_all: bool = False) -> int:
        """Store ``places`` (merged by beacon id; ``replace_all`` drops the others first).
        Returns how many places the registry holds afterwards."""
        mapping = {p.beacon: json.dumps(p.to_dict(), ensure_ascii=False) for p in places}

        def write() -> int:
            pipe = self.store.r.pipeline(transaction=True)
            if replace_all:
                pipe.delete(self.key)
            if mapping:
                pipe.hset(self.key, mapping=mapping)
            pipe.hlen(self.key)
            return int(pipe.execute()[-1])

        return self.store._call(write)

    def load(self) -> list[Place]:
        """Every place, sorted by site, building, floor, room."""
        raw = self.store._call(self.store.r.hgetall, self.key)
        places = [_from_json(v) for v in raw.values()]
        return sorted(places, key=lambda p: (p.site, p.building, p.floor, p.room, p.beacon))

    def get(self, beacon: str) -> Place | None:
        """The place of ``beacon`` (any spelling), or None if unknown."""
        try:
            bid = normalize_beacon_id(beacon)
        except ValidationError:
            return None
        raw = self.store._call(self.store.r.hget, self.key, bid)
        return None if raw is None else _from_json(raw)

    def remove(self, beacon: str) -> bool:
        """Forget one beacon; True if it was known."""
        return bool(self.store._call(self.store.r.hdel, self.key, normalize_beacon_id(beacon)))


def _from_json(raw: bytes | str) -> Place:
    d = json.loads(raw)
    return Place(**{k: str(d.get(k, "")) for k in ("beacon", "site", "building", "floor", "room", "note")})


def place_for(store: Store, event: Event, *, now: float | None = None) -> tuple[Place | None, str]:
    """The registry place of ``event``: its own beacon, else the device's last alive beacon
    if fresh (:data:`STATE_BEACON_MAX_AGE_S`). Returns ``(place or None, beacon id or "")``;
    a beacon not in the registry gives ``(None, id)``.

    Raises:
        relay.store.StoreError: Redis failed.
    """
    beacon = event.beacon.id if event.beacon is not None else ""
    if not beacon:
        state = store.state(event.device)
        now = time.time() if now is None else now
        try:
            seen = float(state.get("beacon_at") or 0)
        except ValueError:
            seen = 0.0
        if state.get("beacon") and now - seen <= STATE_BEACON_MAX_AGE_S:
            beacon = state["beacon"]
    if not beacon:
        return None, ""
    return PlaceStore(store).get(beacon), beacon


def place_fields(store: Store, event: Event) -> dict[str, str]:
    """Alarm record fields for the place of ``event`` (:mod:`relay.escalation`):
    ``place_building``, ``place_floor``, ``place_room``, ``place_note``, ``beacon``; empty
    dict when there is none. Never raises for a Redis failure here (the alarm goes on
    without its place)."""
    from .store import StoreError

    try:
        place, beacon = place_for(store, event)
    except StoreError:
        return {}
    if place is None:
        return {"beacon": beacon} if beacon else {}
    return {"beacon": beacon, "place_building": place.building, "place_floor": place.floor,
            "place_room": place.room, "place_note": place.note}


def with_place(alarm: Any, store: Store, event: Event) -> Any:
    """``alarm`` (:class:`relay.arc.ArcAlarm`) with the event's place as ``place`` =
    (building, floor, room); unchanged without one, or when Redis fails for the lookup (the
    alarm is never held back for its place)."""
    from .store import StoreError

    if alarm is None:
        return None
    try:
        place, _ = place_for(store, event)
    except StoreError:
        return alarm
    if place is None:
        return alarm
    return replace(alarm, place=(place.building, place.floor, place.room))

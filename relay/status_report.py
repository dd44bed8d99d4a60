"""``lonewatch status``: what the relay knows about each device right now (SPEC §5) — last
seen, connection, on shift, lost contact, battery, signal, open alarms — read from Redis
(:mod:`relay.store` state and supervision hashes, :mod:`relay.alarms`). Read-only."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .store import Store

__all__ = ["DeviceStatus", "collect", "render_table"]


@dataclass(frozen=True)
class DeviceStatus:
    """One device. Times are Unix seconds (relay clock); ``last_seen_s`` seconds since the
    relay last heard the device (None = never); ``battery_pct`` %, ``signal_dbm`` dBm (None =
    unknown); ``on_shift`` None when the relay has no shift information; ``open_alarms``
    ``"<kind> <alarm id> <state>"`` strings of alarms that still need someone."""

    device: str
    worker: str
    site: str
    account: str
    zone: int
    last_seen: float | None
    last_seen_s: float | None
    connection: str
    on_shift: bool | None
    lost_contact: bool
    battery_pct: int | None
    signal_dbm: int | None
    registration: str
    firmware: str
    open_alarms: list[str] = field(default_factory=list)
    #: Issue 12: ``place`` "building / floor / room" of the beacon in the last alive ("" =
    #: none; ``beacon`` its id, also when the registry does not know it); ``ready`` the last
    #: shift-start self-test of the current shift: "ready", "NOT ready: <checks>", "pending",
    #: "" (no shift recorded); ``unprotected_s`` the last span without MQTT and SMS.
    place: str = ""
    beacon: str = ""
    ready: str = ""
    unprotected_s: float | None = None
    #: Operator-visible faults (relay/faults.py, issue 15): ``"<kind> ×<count>: <text>"``.
    faults: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(text: str | None, kind: type = int) -> Any:
    if text in (None, ""):
        return None
    try:
        return kind(float(text)) if kind is int else kind(text)
    except ValueError:
        return None


def registered_devices(store: Store) -> list[str]:
    """Every device id in the pipeline registry (``lw:device:*``), sorted."""
    keys = store._call(lambda: list(store.r.scan_iter(match="lw:device:*", count=1000)))
    return sorted(k.decode().split(":", 2)[2] for k in keys)


def collect(store: Store, devices: Iterable[str] | None = None, *, now: float | None = None) -> list[DeviceStatus]:
    """Status rows for ``devices`` (default: every registered device); ids that are not
    registered are left out.

    Raises:
        relay.store.StoreError: Redis unreachable.
    """
    from .alarms import AlarmStore
    from .faults import faults as device_faults

    now = time.time() if now is None else now
    ids = list(devices) if devices is not None else registered_devices(store)
    open_by_device: dict[str, list[str]] = {}
    for alarm in AlarmStore(store).recent(10_000, open_only=True):
        dev = alarm.get("device")
        open_by_device.setdefault(dev, []).append(f"{alarm.kind} {alarm.id} {alarm.state}")
    rows = []
    for dev in ids:
        entry = store.device(dev)
        if entry is None:
            continue  # not registered: nothing to report
        state = store.state(dev)
        sup = store.supervision_state(dev)
        last = _num(state.get("last_seen") or sup.get("heard"), float)
        rows.append(DeviceStatus(
            device=dev,
            worker=entry.worker,
            site=entry.site,
            account=entry.account,
            zone=entry.zone,
            last_seen=last,
            last_seen_s=None if last is None else max(0.0, now - last),
            connection=state.get("status", "") or "unknown",
            on_shift=None if "on_shift" not in sup else sup["on_shift"] == "1",
            lost_contact=sup.get("lost") == "1",
            battery_pct=_num(state.get("battery_pct")),
            signal_dbm=_num(state.get("signal_dbm")),
            registration=state.get("registration", ""),
            firmware=state.get("firmware", ""),
            open_alarms=open_by_device.get(dev, []),
            **_place_and_readiness(store, dev, state),
            faults=[f"{k} ×{v['count']}: {v['text']}" for k, v in sorted(device_faults(store, dev).items())],
        ))  # fmt: skip
    return rows


def _place_and_readiness(store: Store, dev: str, state: dict[str, str]) -> dict[str, Any]:
    """Issue 12 columns of one device (see :class:`DeviceStatus`)."""
    from .places import PlaceStore
    from .readiness import ReadinessTracker

    beacon = state.get("beacon", "")
    place = PlaceStore(store).get(beacon) if beacon else None
    rec = ReadinessTracker.record(store, dev)
    ready = ""
    if rec.get("shift"):
        if rec.get("result_shift") != rec["shift"]:
            ready = "pending"
        elif rec.get("ready") == "1":
            ready = "ready"
        else:
            ready = "NOT ready" + (f": {rec['failed']}" if rec.get("failed") else "")
    return {"place": place.label() if place else (f"beacon {beacon} (not in registry)" if beacon else ""),
            "beacon": beacon, "ready": ready, "unprotected_s": _num(rec.get("unprotected_s"), float)}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def render_table(rows: list[DeviceStatus]) -> str:
    """A plain-text table, one line per device, widest cell decides each column."""
    header = ("DEVICE", "WORKER", "SITE", "LAST SEEN", "LINK", "SHIFT", "BATTERY", "SIGNAL", "OPEN ALARMS", "PLACE", "READY", "FAULTS")
    lines = [header]
    for r in rows:
        shift = "-" if r.on_shift is None else ("on" if r.on_shift else "off")
        link = "LOST" if r.lost_contact else r.connection
        alarms = ", ".join(a.split(" ")[0] for a in r.open_alarms) if r.open_alarms else "-"
        lines.append((
            r.device, r.worker or "-", r.site or "-", _age(r.last_seen_s), link, shift,
            "-" if r.battery_pct is None else f"{r.battery_pct} %",
            "-" if r.signal_dbm is None else f"{r.signal_dbm} dBm",
            f"{len(r.open_alarms)}: {alarms}" if r.open_alarms else "-",
            r.place or "-", (r.ready or "-") + (f", unprotected {r.unprotected_s:.0f} s" if r.unprotected_s else ""),
            "; ".join(r.faults) if r.faults else "-",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines) + "\n"

"""Everything held about one worker: export it, or erase it (issue 13; GDPR art. 15 and 17,
docs/data-protection.md).

:func:`export_worker` gathers, as one JSON-able dict: the registry entry (with the worker's
contacts), their devices' registry and pipeline entries, last state and supervision state,
event records, event log entries and dead letters, and every alarm record naming them with
its history.

:func:`erase_worker` removes the worker and their devices from the registry and deletes
their events, event log entries, dead letters and device state — except the **alarm records
the law requires** (who was alarmed for what, when, who was told, who took it, the ARC's
answer: the employer's documentation of the safety measure and of any accident, Danish
Arbejdsmiljøloven / BS 8484 records). Those are kept until ``[retention] alarms_days`` ends,
**anonymised**: the worker's name is replaced by a pseudonym (``erased-<8 hex>``, random, the
same for all their alarms so that counts stay right), their number and the position are
blanked, the history's texts lose the name, and their alarm event records lose the
position. An open alarm blocks erasure (it still needs someone).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Final

from protocol.errors import LonewatchError
from protocol.messages import decode, encode

from .alarms import OPEN_STATES
from .registry import RegistryDoc, RegistryStore
from .retention import KEPT_KINDS, RetentionSection
from .store import DEADLETTER, EVENTS, INDEX, Store, device_key, escalation_key

__all__ = ["ErasureRefused", "UnknownWorker", "erase_worker", "export_worker"]

#: Alarm record fields that identify or locate the worker, blanked by erasure.
_ALARM_PERSONAL: Final = ("worker_number", "lat", "lon",
                           "beacon", "place_building", "place_floor", "place_room", "place_note")  # issue 12


class UnknownWorker(LonewatchError, LookupError):
    """No worker of that name in the registry (nor a device naming them)."""


class ErasureRefused(LonewatchError, RuntimeError):
    """The worker has an open alarm: it is resolved first, then erased."""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _hash(raw: dict) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


class _Holdings:
    """Where one worker's data lives (read once, used by export and erase)."""

    def __init__(self, store: Store, name: str) -> None:
        self.store, self.r, self.name = store, store.r, name
        self.doc: RegistryDoc = RegistryStore(store).load()
        self.worker = self.doc.worker(name)
        self.devices = [d for d in self.doc.devices if d.worker == name]
        if self.worker is None and not self.devices:
            known = ", ".join(sorted(w.name for w in self.doc.workers)) or "none"
            raise UnknownWorker(f"no worker {name!r} in the registry (workers: {known})")
        self.device_ids = {d.id for d in self.devices}

    def _stream(self, key: str, keep) -> list[tuple[str, dict[str, str]]]:
        out, start = [], "-"
        while True:
            rows = self.store._call(self.r.xrange, key, start, "+", count=1000)
            out += [(_s(i), _hash(f)) for i, f in rows if keep(_hash(f))]
            if len(rows) < 1000:
                return out
            start = "(" + _s(rows[-1][0])

    def event_log(self) -> list[tuple[str, dict[str, str]]]:
        return self._stream(EVENTS, lambda f: f.get("device") in self.device_ids)

    def dead_letters(self) -> list[tuple[str, dict[str, str]]]:
        return self._stream(DEADLETTER, lambda f: any(f"/{d}/" in f.get("topic", "") for d in self.device_ids))

    def event_records(self, device_id: str) -> list[tuple[str, dict[str, str]]]:
        out, cursor = [], 0
        while True:
            cursor, keys = self.store._call(self.r.scan, cursor, match=device_key(device_id, "event:*"), count=1000)
            out += [(_s(k), _hash(self.store._call(self.r.hgetall, k))) for k in keys]
            if int(cursor) == 0:
                return sorted(out)

    def alarms(self) -> list[tuple[str, dict[str, str]]]:
        ids = [_s(i) for i in self.store._call(self.r.zrange, escalation_key("alarms"), 0, -1)]
        pipe = self.r.pipeline(transaction=False)
        for alarm_id in ids:
            pipe.hgetall(escalation_key("alarm", alarm_id))
        rows = self.store._call(pipe.execute) if ids else []
        return [(a, _hash(h)) for a, h in zip(ids, rows)
                if h and (_hash(h).get("worker") == self.name or _hash(h).get("device") in self.device_ids)]

    def history(self, alarm_id: str) -> list[tuple[str, dict[str, str]]]:
        return self._stream(escalation_key("log", alarm_id), lambda f: True)


def export_worker(store: Store, name: str, *, retention: RetentionSection | None = None,
                  now: float | None = None) -> dict[str, Any]:
    """Everything the relay holds about the worker ``name``, JSON-able (module doc).

    Raises:
        UnknownWorker: not in the registry. StoreError: Redis failed.
    """
    h = _Holdings(store, name)
    now = time.time() if now is None else now
    devices = []
    for d in h.devices:
        events = []
        for key, rec in h.event_records(d.id):
            if "json" in rec:
                rec["event"] = json.loads(rec.pop("json"))
            events.append({"key": key, **rec})
        entry = store.device(d.id)
        devices.append({
            "id": d.id, "site": d.site, "account": d.account,
            "pipeline_entry": None if entry is None else {"zone": entry.zone, "language": entry.language},
            "state": store.state(d.id), "supervision": store.supervision_state(d.id), "events": events,
        })
    log = [{"id": i, "device": f["device"], "kind": f["kind"], "event": json.loads(f["json"])} for i, f in h.event_log()]
    alarms = []
    for alarm_id, fields in h.alarms():
        if "contacts" in fields:
            fields["contacts"] = json.loads(fields["contacts"])
        alarms.append({"id": alarm_id, "alarm": fields, "history": [{"id": i, **f} for i, f in h.history(alarm_id)]})
    sec = retention or RetentionSection()
    return {
        "exported_at": _iso(now),
        "worker": None if h.worker is None else h.doc.to_dict().get("workers", [])[list(h.doc.workers).index(h.worker)],
        "devices": devices,
        "event_log": log,
        "alarms": alarms,
        "dead_letters": [{"id": i, **f} for i, f in h.dead_letters()],
        "retention_days": {"events": sec.events_days, "alarms": sec.alarms_days, "alives": sec.alives_days,
                           "dead_letters": sec.deadletter_days},
    }


def erase_worker(store: Store, name: str, *, now: float | None = None) -> dict[str, Any]:
    """Erase the worker ``name``, keeping their alarm records anonymised (module doc).
    Returns what was done: ``pseudonym``, ``alarms_anonymised``, ``event_records_deleted``,
    ``alarm_event_records_kept``, ``event_log_deleted``, ``dead_letters_deleted``,
    ``devices_removed`` (ids; they need a new worker before use).

    Raises:
        UnknownWorker: not in the registry. ErasureRefused: an alarm of theirs is still open
            (nothing changed). StoreError / ConfigError: Redis or the registry refused.
    """
    h = _Holdings(store, name)
    now = time.time() if now is None else now
    alarms = h.alarms()
    open_ = [a for a, f in alarms if f.get("state") in OPEN_STATES]
    if open_:
        raise ErasureRefused(f"{name} has open alarm(s) {', '.join(open_)}: take charge and resolve them, "
                             f"then erase (nothing changed)")
    pseudonym = "erased-" + secrets.token_hex(4)
    r = store.r
    for alarm_id, fields in alarms:
        _anonymise_alarm(store, alarm_id, h.history(alarm_id), pseudonym, name, now)
    deleted = kept = 0
    for d in h.devices:
        pipe = r.pipeline(transaction=False)
        for key, rec in h.event_records(d.id):
            ev = decode(rec["json"]) if "json" in rec else None
            if ev is not None and ev.kind in KEPT_KINDS:
                pipe.hset(key, "json", encode(_without_position(ev)))
                kept += 1
            else:
                pipe.delete(key)
                deleted += 1
        pipe.delete(device_key(d.id, "state"), device_key(d.id, "sup"))
        pipe.zrem(INDEX, f"lost:{d.id}", f"checkin:{d.id}", f"q:{d.id}")
        store._call(pipe.execute)
    log_ids = [i for i, _ in h.event_log()]
    dead_ids = [i for i, _ in h.dead_letters()]
    for key, ids in ((EVENTS, log_ids), (DEADLETTER, dead_ids)):
        for start in range(0, len(ids), 1000):
            store._call(r.xdel, key, *ids[start:start + 1000])
    gone = set(h.device_ids)

    def edit(data: dict[str, Any]) -> None:
        data["workers"] = [w for w in data.get("workers", []) if w.get("name") != name]
        data["devices"] = [d for d in data.get("devices", []) if d.get("id") not in gone]

    RegistryStore(store).change(edit)
    return {"worker": name, "pseudonym": pseudonym, "alarms_anonymised": len(alarms),
            "event_records_deleted": deleted, "alarm_event_records_kept": kept,
            "event_log_deleted": len(log_ids), "dead_letters_deleted": len(dead_ids),
            "devices_removed": sorted(gone), "erased_at": _iso(now)}


def _without_position(ev: Any) -> Any:
    return dataclasses.replace(ev, position=None)


def _anonymise_alarm(store: Store, alarm_id: str, history: list[tuple[str, dict[str, str]]], pseudonym: str,
                     name: str, now: float) -> None:
    """Pseudonym instead of the name in the alarm hash and its history (the history stream is
    rewritten with the same entry ids, in one transaction, keeping its expiry)."""
    r = store.r
    hkey, lkey = escalation_key("alarm", alarm_id), escalation_key("log", alarm_id)
    ttl_ms = int(store._call(r.pttl, lkey))
    pipe = r.pipeline(transaction=True)
    pipe.hset(hkey, mapping={"worker": pseudonym, **{f: "" for f in _ALARM_PERSONAL}, "erased_at": f"{now:.3f}"})
    pipe.delete(lkey)
    for entry_id, fields in history:
        pipe.xadd(lkey, {k: v.replace(name, pseudonym) for k, v in fields.items()}, id=entry_id)
    pipe.xadd(lkey, {"at": f"{now:.3f}", "what": "erased",
                     "detail": "worker data erased on request; this record is kept anonymised (GDPR art. 17(3))"})
    if ttl_ms > 0:
        pipe.pexpire(lkey, ttl_ms)
    store._call(pipe.execute)


"""What the console pages show, read from the relay's Redis (issue 13 "Alarm queue",
"Workers on shift", "History"). Read only; plain dicts the templates render.

The alarm queue: every alarm of the newest :data:`QUEUE_WINDOW` that has no outcome yet
(``resolve`` sets one), most urgent first — nobody has it (``unanswered``, then ``open``),
then the ARC has it (``with_arc``), then a person has it (``acked``), then the worker
cancelled or the relay restored it — and newest first within each. Alarm states and fields
are those of :mod:`relay.alarms`; place (room from beacons, issue 12) is shown when the
alarm or the device state carries a ``place`` field.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from relay.alarms import Alarm
from relay.store import Store, device_key, escalation_key

__all__ = ["QUEUE_WINDOW", "alarm_view", "arc_label", "history_view", "load_alarms", "queue", "workers"]

#: How many of the newest alarms the queue looks at.
QUEUE_WINDOW: Final = 200
#: Urgency rank of each state (lower = more urgent).
URGENCY: Final = {"unanswered": 0, "open": 1, "with_arc": 2, "acked": 3, "cancelled": 4, "restored": 4}


def N_(msgid: str) -> str:
    """Marks a msgid for extraction (Babel ``-k N_``); translated where it is shown."""
    return msgid


#: Kinds in the words an operator uses (msgids: translated in the templates).
KIND_LABELS: Final = {
    "panic": N_("Panic"), "silent_panic": N_("Silent panic"), "man_down": N_("Man down"),
    "missed_checkin": N_("Missed check-in"), "lost_contact": N_("Lost contact"), "low_battery": N_("Low battery"),
    "test": N_("Test"),
}
#: Outcomes of a resolved alarm (stored values) and their labels.
OUTCOMES: Final = ("genuine", "false_alarm", "test", "technical")
OUTCOME_LABELS: Final = {"genuine": N_("Genuine"), "false_alarm": N_("False alarm"), "test": N_("Test"),
                         "technical": N_("Technical fault"), "cancelled_by_worker": N_("Cancelled by the worker"),
                         "unresolved": N_("Not resolved yet")}
#: Alarm states (relay.alarms) in words.
STATE_LABELS: Final = {"open": N_("nobody has it yet"), "unanswered": N_("NOBODY ANSWERED"), "with_arc": N_("with the ARC"),
                       "acked": N_("taken"), "cancelled": N_("cancelled by the worker"), "restored": N_("restored")}


def load_alarms(store: Store, count: int = QUEUE_WINDOW) -> list[Alarm]:
    """The newest ``count`` alarms, newest first, in two round trips (ZREVRANGE + one pipeline)."""
    ids = [i.decode() for i in store._call(store.r.zrevrange, escalation_key("alarms"), 0, count - 1)]
    if not ids:
        return []
    pipe = store.r.pipeline(transaction=False)
    for alarm_id in ids:
        pipe.hgetall(escalation_key("alarm", alarm_id))
    raws = store._call(pipe.execute)
    return [Alarm.from_hash(i, raw) for i, raw in zip(ids, raws) if raw and b"kind" in raw]


def arc_label(alarm: Alarm) -> tuple[str, str]:
    """``(label, css class)`` of the alarm's ARC state: sent and waiting, ACKed, failed …"""
    if alarm.get("policy") == "contacts_only":
        return N_("not sent (contacts only)"), "muted"
    return {
        "acked": (N_("ACKed"), "ok"),
        "rejected": (N_("failed: refused (DUH)"), "bad"),
        "unreachable": (N_("failed: not reachable, retrying"), "bad"),
        "no_arc": (N_("no ARC receiver configured"), "muted"),
    }.get(alarm.get("arc_state"), (N_("sent, waiting for ACK"), "warn"))


def _num(value: str) -> float | None:
    try:
        return float(value) if value not in ("", None) else None
    except ValueError:
        return None


def _row(alarm: Alarm, now: float) -> dict[str, Any]:
    arc, arc_class = arc_label(alarm)
    told = [c.name for c in alarm.contacts[:alarm.notified]]
    opened = _num(alarm.get("opened_at")) or 0.0
    return {
        "id": alarm.id, "kind": alarm.kind, "kind_label": KIND_LABELS.get(alarm.kind, alarm.kind),
        "state": alarm.state, "worker": alarm.get("worker"), "site": alarm.get("site"), "address": alarm.get("address"),
        "place": alarm.get("place"), "lat": _num(alarm.get("lat")), "lon": _num(alarm.get("lon")),
        "opened_at": opened, "since_s": max(0.0, now - opened), "occurred_at": _num(alarm.get("occurred_at")),
        "arc": arc, "arc_class": arc_class, "told": told, "contacts": [c.name for c in alarm.contacts],
        "acked_by": alarm.get("acked_by"), "acked_at": _num(alarm.get("acked_at")), "ack_via": alarm.get("ack_via"),
        "outcome": alarm.get("outcome"), "resolved_by": alarm.get("resolved_by"), "ref": alarm.ref,
        "policy": alarm.get("policy"), "escape_routes": alarm.get("escape_routes"), "device": alarm.get("device"),
        "needs_someone": alarm.state in ("open", "unanswered"), "urgency": URGENCY.get(alarm.state, 5),
    }


def queue(alarms: list[Alarm], now: float | None = None) -> list[dict[str, Any]]:
    """Rows of the alarm queue (see the module docstring for the order)."""
    now = time.time() if now is None else now
    rows = [_row(a, now) for a in alarms if not a.get("outcome")]
    rows.sort(key=lambda r: (r["urgency"], -r["opened_at"]))
    return rows


def alarm_view(store: Store, alarm_id: str, now: float | None = None) -> dict[str, Any] | None:
    """One alarm for its page (the queue's fields plus every stored field), or None."""
    raw = store._call(store.r.hgetall, escalation_key("alarm", alarm_id))
    if not raw or b"kind" not in raw:
        return None
    alarm = Alarm.from_hash(alarm_id, raw)
    row = _row(alarm, time.time() if now is None else now)
    row["resolve_note"] = alarm.get("resolve_note")
    row["resolved_at"] = _num(alarm.get("resolved_at"))
    row["contact_rows"] = [{"name": c.name, "role": c.role, "told": i < alarm.notified,
                            "has_it": c.name == alarm.get("acked_by")} for i, c in enumerate(alarm.contacts)]
    return row


def history_view(store: Store, alarm_id: str) -> list[dict[str, Any]]:
    """The alarm's history (relay and console entries), oldest first, with ``at`` as float."""
    rows = store._call(store.r.xrange, escalation_key("log", alarm_id))
    out = []
    for _, f in rows:
        e = {k.decode(): v.decode() for k, v in f.items()}
        e["at_f"] = _num(e.get("at", "")) or 0.0
        out.append(e)
    return out


def workers(store: Store, *, low_battery_pct: int, offline_after_s: float, now: float | None = None) -> list[dict[str, Any]]:
    """One row per registered device: worker, site, on shift, last seen, link, battery,
    signal, readiness and place (when the device reports them); ``offline`` and
    ``low_battery`` flags for the rows that must stand out. On-shift rows first."""
    from relay.registry import RegistryStore

    now = time.time() if now is None else now
    doc = RegistryStore(store).load()
    devices = list(doc.devices)
    if not devices:
        return []
    pipe = store.r.pipeline(transaction=False)
    for d in devices:
        pipe.hgetall(device_key(d.id, "state"))
        pipe.hgetall(device_key(d.id, "sup"))
    res = store._call(pipe.execute)
    rows = []
    for i, d in enumerate(devices):
        state = {k.decode(): v.decode() for k, v in res[2 * i].items()}
        sup = {k.decode(): v.decode() for k, v in res[2 * i + 1].items()}
        last_seen = _num(state.get("last_seen", ""))
        age = None if last_seen is None else max(0.0, now - last_seen)
        battery = _num(state.get("battery_pct", ""))
        offline = state.get("status") == "offline" or age is None or age > offline_after_s or sup.get("lost") == "1"
        rows.append({
            "device": d.id, "worker": d.worker, "site": d.site, "on_shift": sup.get("on_shift") == "1",
            "last_seen": last_seen, "age_s": age, "status": state.get("status", ""), "offline": offline,
            "lost": sup.get("lost") == "1", "battery": battery, "low_battery": battery is not None and battery <= low_battery_pct,
            "signal": _num(state.get("signal_dbm", "")), "registration": state.get("registration", ""),
            "readiness": state.get("readiness", ""), "place": _place(state), "lat": _num(state.get("lat", "")),
            "lon": _num(state.get("lon", "")), "checkin": sup.get("checkin_state", ""),
        })
    rows.sort(key=lambda r: (not r["on_shift"], not (r["offline"] or r["low_battery"]), r["worker"]))
    return rows


def _place(state: dict[str, str]) -> str:
    """A place the device reported (issue 12 stores it as text or JSON), else ``""``."""
    value = state.get("place", "")
    if value.startswith("{"):
        try:
            p = json.loads(value)
            return ", ".join(str(p[k]) for k in ("building", "floor", "room") if p.get(k))
        except (ValueError, TypeError, AttributeError):
            return value
    return value

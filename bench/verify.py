"""Checks shared by the fault tests and the benchmarks: did every alarm reach the ARC exactly
once, and does the relay's event log (``lw:events``) hold every event without a gap?"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from protocol.sia import contact_id_for

from relay.store import Store

from .arcrecorder import ArcRecorder


def event_log_ids(r: redis.Redis) -> list[str]:
    """Event ids in the event log (``lw:events``), oldest first."""
    return [e["id"] for e in Store(r).event_log(count=10_000_000)]


def delivery_problems(r: redis.Redis, arc: ArcRecorder, alarms: Iterable[tuple[str, str]],
                      other_events: Iterable[str] = ()) -> list[str]:
    """Everything wrong with the delivery of ``alarms`` (``(event id, kind)`` pairs); empty
    when all is well.

    * event log: each alarm and each of ``other_events`` appears in ``lw:events`` exactly
      once, and nothing else from the same devices (no gap, no duplicate);
    * relay record: each alarm is marked ``arc = acked`` with its DC-09 sequence;
    * ARC: the distinct ``(account, sequence)`` messages the receiver accepted are exactly
      those recorded for the alarms — one per alarm, no alarm twice under two sequence
      numbers — with the Contact ID code of the alarm's kind. A repeat of the same
      ``(account, sequence)`` is a re-send the ARC discards, as DC-09 prescribes.
    """
    alarms = list(alarms)
    problems: list[str] = []
    expected = [eid for eid, _ in alarms] + list(other_events)
    devices = {eid.rpartition(":")[0] for eid in expected}
    log = [eid for eid in event_log_ids(r) if eid.rpartition(":")[0] in devices]
    counts: dict[str, int] = {}
    for eid in log:
        counts[eid] = counts.get(eid, 0) + 1
    for eid in expected:
        if counts.get(eid, 0) != 1:
            problems.append(f"event log: {eid} appears {counts.get(eid, 0)} times (want 1)")
    for eid in set(log) - set(expected):
        problems.append(f"event log: unexpected event {eid}")

    store = Store(r)
    recorded: dict[tuple[str, int], str] = {}
    for eid, kind in alarms:
        found = store.event(eid)
        rec = found[1] if found is not None else {}
        entry = store.device(eid.rpartition(":")[0])
        account = entry.account if entry is not None else None
        if rec.get("arc") != "acked" or not rec.get("arc_sequence") or account is None:
            problems.append(f"relay: {eid} not marked acked by the ARC (record {rec})")
            continue
        key = (account.upper(), int(rec["arc_sequence"]))
        if key in recorded:
            problems.append(f"relay: {eid} and {recorded[key]} share ARC message {key}")
        recorded[key] = eid
        frames = arc.distinct().get(key)
        if not frames:
            problems.append(f"ARC: never received {eid} (account {key[0]}, sequence {key[1]:04d})")
        elif frames[0].code != f"{contact_id_for(kind)[0]:03d}":
            problems.append(f"ARC: {eid} arrived as Contact ID {frames[0].code}, want {contact_id_for(kind)[0]:03d}")
    extra = sorted(set(arc.distinct()) - set(recorded))
    if extra:
        problems.append(f"ARC: {len(extra)} message(s) no alarm accounts for (a second copy under a new sequence?): {extra[:5]}")
    return problems


def wait_for(pred, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``pred()`` until true or ``timeout_s`` seconds passed; returns its last value.
    For waiting on asynchronous outcomes in the fault tests, never for timing asserts."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval_s)
    return bool(pred())

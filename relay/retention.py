"""Data kept no longer than needed (issue 13; docs/data-protection.md).

Two rules:

* **Where the worker is, only on shift or with an alarm.** The device sends no position off
  shift (:meth:`device.daemon.Daemon.alive`); the relay drops any it still gets: an alive's
  location fields (:data:`relay.redis_scripts.LOCATION_FIELDS`) are written only while the
  device's ``on_shift`` flag is set (in the alive script), ``shift_end`` forgets the last
  position, and :func:`strip_location_off_shift` takes the position off a non-alarm event that
  arrives off shift. Alarms always keep theirs: that is what help needs.
* **Everything else for a set number of days** (``[retention]`` in relay.toml,
  :class:`RetentionSection`), enforced by :meth:`Purger.purge_once`, which one relay runs every
  ``purge_interval_s`` (a claim per period in Redis, so N relays purge once) and which
  ``lonewatch retention purge`` runs by hand.

What the purge removes (cut-off = now − days):

==================================  =====================  ========================================
data                                kept                   how
==================================  =====================  ========================================
event log entries (not alarms)      ``events_days``        XDEL in ``lw:events``
event records (not alarms)          ``events_days``,       DEL ``lw:{<dev>}:event:<id>`` (they also
                                    at most 30 days        expire after the 30-day dedupe window)
alarm events, alarm records and     ``alarms_days``        XTRIM ``lw:events``; EXPIRE set on
their histories (the audit trail)                          ``lw:{esc}:alarm|log:<id>`` and the
                                                           event record; an open alarm is never removed
inbound SMS, notification jobs      ``events_days``        XTRIM ``lw:{esc}:inbox|outbox:*``
dead letters                        ``deadletter_days``    XTRIM ``lw:deadletter``
device state (last alive: battery,  ``alives_days`` after  DEL ``lw:{<dev>}:state``; its location
signal, last seen, position)        the device was heard   fields at once when off shift
console sessions                    ``sessions_days``      ``lw:{console}:sessions`` zset (id → last
                                                           used, Unix s) + ``lw:{console}:session:<id>``
==================================  =====================  ========================================

Other parts add their own data with :data:`EXTRA_PURGES` (``(store, section, now) -> counts``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from protocol.messages import ALARM_KINDS, RELAY_ALARM_KINDS, Event, encode

from .alarms import OPEN_STATES
from .redis_scripts import LOCATION_FIELDS
from .store import DEADLETTER, EVENTS, PREFIX, Store, StoreError, escalation_key

log = logging.getLogger(__name__)

__all__ = ["EXTRA_PURGES", "Purger", "RetentionSection", "retention_section", "strip_location_off_shift"]

DAY_S: Final = 86400
#: Kinds whose records are kept ``alarms_days`` (what the ARC and contacts were called for).
KEPT_KINDS: Final = ALARM_KINDS | RELAY_ALARM_KINDS
SESSIONS: Final = PREFIX + "{console}:sessions"
#: Hooks ``(store, section, now) -> {what: count}`` run by every purge (other modules' data).
EXTRA_PURGES: list[Callable[[Store, RetentionSection, float], dict[str, int]]] = []


@dataclass(frozen=True)
class RetentionSection:
    """``[retention]`` of relay.toml, in days (issue 13): ``events_days`` events that are no
    alarm (shift, check-in, battery, test …); ``alarms_days`` alarms and their history (the
    audit trail; ≥ ``events_days``); ``alives_days`` a device's last alive state after it was
    last heard; ``deadletter_days`` rejected input; ``sessions_days`` console sessions;
    ``purge_interval_s`` how often a relay purges (seconds)."""

    events_days: int = 30
    alarms_days: int = 365
    alives_days: int = 7
    deadletter_days: int = 14
    sessions_days: int = 30
    purge_interval_s: float = 3600.0


def retention_section(root: Any) -> RetentionSection:
    """Read ``[retention]`` from a :class:`protocol.configfile.TableReader` root (problems
    are reported with file:line by the caller's checker)."""
    t = root.table("retention")
    d = RetentionSection
    section = RetentionSection(
        events_days=t.integer("events_days", d.events_days, min=1, max=3650),
        alarms_days=t.integer("alarms_days", d.alarms_days, min=1, max=3650),
        alives_days=t.integer("alives_days", d.alives_days, min=1, max=3650),
        deadletter_days=t.integer("deadletter_days", d.deadletter_days, min=1, max=3650),
        sessions_days=t.integer("sessions_days", d.sessions_days, min=1, max=3650),
        purge_interval_s=t.number("purge_interval_s", d.purge_interval_s, min=60, max=86400),
    )
    if section.alarms_days < section.events_days:
        t.problem("alarms_days", f"must be at least events_days ({section.events_days}): an alarm's "
                                 f"record is kept no shorter than a shift event's")
    return section


def strip_location_off_shift(store: Store, event: Event, payload: bytes) -> tuple[Event, bytes]:
    """The event as it may be stored: a non-alarm event from a device that is off shift loses
    its position (``payload`` re-encoded). Alarms keep theirs. One Redis read, only for
    events that carry a position.

    Raises:
        StoreError: Redis unavailable (the caller does not ack; the device resends).
    """
    if event.position is None or event.kind in KEPT_KINDS:
        return event, payload
    if store.supervision_state(event.device).get("on_shift") == "1":
        return event, payload
    stripped = dataclasses.replace(event, position=None)
    return stripped, encode(stripped)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _stream_id_ms(cutoff: float) -> str:
    return str(max(0, int(cutoff * 1000)))


class Purger:
    """Runs :meth:`purge_once` every ``section.purge_interval_s`` in a thread (one relay per
    period: a claim in Redis). ``start()``/``stop()`` as the relay's other components."""

    def __init__(self, store: Store, section: RetentionSection, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.r = store.r
        self.section = section
        self.clock = clock
        self.last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        period = self.section.purge_interval_s
        while not self._stop.is_set():
            try:
                slot = int(self.clock() // period)
                if self.store.claim_once(f"{PREFIX}retention:{slot}", period * 2):
                    self.last = self.purge_once()
                    log.info("retention purge: %s", self.last)
            except StoreError as exc:
                log.warning("retention purge skipped: %s", exc)
            except Exception:  # a purge bug must never stop the relay
                log.exception("retention purge failed")
            self._stop.wait(min(period, 60.0))

    # --- the purge -------------------------------------------------------------------

    def purge_once(self, now: float | None = None) -> dict[str, int]:
        """Remove what is older than its retention (module table). Returns counts per kind.

        Raises:
            StoreError / StoreDataError: Redis failed part-way (what was removed stays removed;
                the next purge continues).
        """
        now = self.clock() if now is None else now
        sec = self.section
        events_cut, alarms_cut = now - sec.events_days * DAY_S, now - sec.alarms_days * DAY_S
        counts: dict[str, int] = {}
        counts["event_log"] = self._purge_event_log(events_cut, alarms_cut)
        counts["event_records"], counts["alarm_records_kept"] = self._purge_event_records(now, events_cut, alarms_cut)
        counts["alarms"] = self._purge_alarms(now, alarms_cut)
        for key in (escalation_key("inbox"), escalation_key("outbox", "sms"), escalation_key("outbox", "email")):
            counts["notify_streams"] = counts.get("notify_streams", 0) + self._trim(key, events_cut)
        counts["dead_letters"] = self._trim(DEADLETTER, now - sec.deadletter_days * DAY_S)
        counts["device_states"], counts["positions"] = self._purge_states(now - sec.alives_days * DAY_S)
        counts["sessions"] = self._purge_sessions(now - sec.sessions_days * DAY_S)
        for extra in EXTRA_PURGES:
            counts.update(extra(self.store, sec, now))
        return counts

    def _trim(self, key: str, cutoff: float) -> int:
        return int(self.store._call(self.r.xtrim, key, minid=_stream_id_ms(cutoff), approximate=False))

    def _purge_event_log(self, events_cut: float, alarms_cut: float) -> int:
        removed = self._trim(EVENTS, alarms_cut)
        start = "-"
        while True:
            rows = self.store._call(self.r.xrange, EVENTS, start, _stream_id_ms(events_cut), count=1000)
            if not rows:
                break
            drop = [rid for rid, f in rows if _s(f.get(b"kind", b"")) not in KEPT_KINDS]
            if drop:
                removed += int(self.store._call(self.r.xdel, EVENTS, *drop))
            if len(rows) < 1000:
                break
            start = "(" + _s(rows[-1][0])
        return removed

    def _scan(self, pattern: str):
        cursor = 0
        while True:
            cursor, keys = self.store._call(self.r.scan, cursor, match=pattern, count=1000)
            yield from keys
            if int(cursor) == 0:
                break

    def _purge_event_records(self, now: float, events_cut: float, alarms_cut: float) -> tuple[int, int]:
        removed = kept = 0
        batch: list[bytes] = []

        def flush() -> None:
            nonlocal removed, kept
            pipe = self.r.pipeline(transaction=False)
            for key in batch:
                pipe.hmget(key, "json", "stored_at")
            rows = self.store._call(pipe.execute)
            pipe = self.r.pipeline(transaction=False)
            for key, (js, stored_at) in zip(batch, rows):
                if js is None:
                    continue
                at = float(stored_at or now)
                kind = json.loads(js).get("kind", "")
                if kind in KEPT_KINDS:
                    ttl = int(at + (now - alarms_cut) - now)  # stored_at + alarms_days − now
                    if ttl <= 0:
                        pipe.delete(key)
                        removed += 1
                    else:
                        pipe.expire(key, ttl, gt=True)  # kept as long as the alarm (never shortened)
                        kept += 1
                elif at < events_cut:
                    pipe.delete(key)
                    removed += 1
            self.store._call(pipe.execute)
            batch.clear()

        for key in self._scan(f"{PREFIX}{{*}}:event:*"):
            batch.append(key)
            if len(batch) >= 500:
                flush()
        if batch:
            flush()
        return removed, kept

    def _purge_alarms(self, now: float, alarms_cut: float) -> int:
        """Alarm records: removed after ``alarms_days`` (never an open one); younger ones get
        an expiry at ``opened + alarms_days`` (longer than the 30 days they are created with)."""
        removed = 0
        rows = self.store._call(self.r.zrange, escalation_key("alarms"), 0, -1, withscores=True)
        keep_s = now - alarms_cut
        for member, opened in rows:
            alarm_id = _s(member)
            hkey, lkey = escalation_key("alarm", alarm_id), escalation_key("log", alarm_id)
            ttl = int(opened + keep_s - now)
            if ttl <= 0:
                state = self.store._call(self.r.hget, hkey, "state")
                if state is not None and _s(state) in OPEN_STATES:
                    continue  # an alarm that still needs someone is never purged
                pipe = self.r.pipeline(transaction=False)
                pipe.delete(hkey, lkey)
                pipe.zrem(escalation_key("alarms"), alarm_id)
                pipe.zrem(escalation_key("due"), alarm_id)
                self.store._call(pipe.execute)
                removed += 1
            else:
                pipe = self.r.pipeline(transaction=False)
                pipe.expire(hkey, ttl, gt=True)
                pipe.expire(lkey, ttl, gt=True)
                self.store._call(pipe.execute)
        return removed

    def _purge_states(self, alives_cut: float) -> tuple[int, int]:
        """Device states not heard since ``alives_cut`` go; a device off shift loses its last
        position (also one stored before this rule, or with an alarm off shift)."""
        states = positions = 0
        for key in self._scan(f"{PREFIX}{{*}}:state"):
            k = _s(key)
            sup = k[: -len("state")] + "sup"
            last_seen, lat = self.store._call(self.r.hmget, k, "last_seen", "lat")
            on_shift = self.store._call(self.r.hget, sup, "on_shift")
            if last_seen is not None and float(last_seen) < alives_cut:
                self.store._call(self.r.delete, k)
                states += 1
            elif lat is not None and _s(on_shift or b"0") != "1":
                positions += int(self.store._call(self.r.hdel, k, *LOCATION_FIELDS) > 0)
        return states, positions

    def _purge_sessions(self, sessions_cut: float) -> int:
        old = self.store._call(self.r.zrangebyscore, SESSIONS, "-inf", sessions_cut)
        if not old:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for sid in old:
            pipe.delete(f"{PREFIX}{{console}}:session:{_s(sid)}")
        pipe.zremrangebyscore(SESSIONS, "-inf", sessions_cut)
        self.store._call(pipe.execute)
        return len(old)

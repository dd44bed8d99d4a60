"""Redis state of the relay: registry, dedupe, event log, dispatch jobs, dead letters
(SPEC §3 pipeline). All state lives here so that several relay instances behave as one.

Key layout (``lw:`` prefix):

===========================  =======  =====================================================
key                          type     holds
===========================  =======  =====================================================
``lw:device:<id>``           hash     registry entry: worker, zone, account, site, language
``lw:state:<id>``            hash     last_seen, status, battery_pct, signal_dbm, lat, lon …
``lw:event:<event id>``      hash     the stored event (``json``), ``stored_at``, ``arc`` …
``lw:events``                stream   the event log: one entry per distinct event
``lw:dispatch``              stream   dispatch jobs, consumer group ``dispatchers``
``lw:deadletter``            stream   bad input with the reason
``lw:arcseq:<account>``      string   last SIA DC-09 sequence number used for the account
===========================  =======  =====================================================

Storing an event is one Lua script: dedupe, event record, log entry and dispatch job are
written together or not at all, so a relay killed half-way never leaves an event that is
"seen" but not dispatched (the device resends it: no ``received`` ack went out).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Final

import redis

from protocol.errors import LonewatchError
from protocol.messages import Alive, Event, Status, encode

PREFIX: Final = "lw:"
EVENTS: Final = PREFIX + "events"
DISPATCH: Final = PREFIX + "dispatch"
DEADLETTER: Final = PREFIX + "deadletter"
GROUP: Final = "dispatchers"
#: How long an event id is remembered for deduplication, in seconds (30 days).
EVENT_TTL_S: Final = 30 * 24 * 3600

_STORE_EVENT = """
-- KEYS: event hash, event log stream, dispatch stream, device state hash
-- ARGV: json, stored_at, event id, device, kind, event log maxlen
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'stored_at', ARGV[2], 'arc', 'pending')
redis.call('EXPIRE', KEYS[1], %d)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[3], 'device', ARGV[4], 'kind', ARGV[5], 'json', ARGV[1])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[3])
redis.call('HSET', KEYS[4], 'last_seen', ARGV[2], 'last_event', ARGV[3])
return 1
""" % EVENT_TTL_S


class StoreError(LonewatchError, RuntimeError):
    """Redis could not be reached or answered wrongly; the message was not stored."""


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """Registry entry of one device (SPEC §3): SIA ``account`` (3–16 hex), Contact ID
    ``zone`` (= worker number, 1–999), worker name, site name, contact language."""

    device: str
    account: str
    zone: int
    worker: str
    site: str
    language: str = "da"


def _key(kind: str, ident: str) -> str:
    return f"{PREFIX}{kind}:{ident}"


class Store:
    """The relay's view of Redis. Thread-safe (redis-py's client uses a connection pool).

    Every method raises :class:`StoreError` when Redis fails, never a bare redis exception.
    """

    def __init__(self, client: redis.Redis, *, event_log_maxlen: int = 1_000_000, deadletter_maxlen: int = 100_000) -> None:
        self.r = client
        self.event_log_maxlen = event_log_maxlen
        self.deadletter_maxlen = deadletter_maxlen
        self._store_event = client.register_script(_STORE_EVENT)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> "Store":
        """Connect to ``url`` (``redis://host:port/db``) with short socket timeouts."""
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=10), **kw)

    def _call(self, fn, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc.__class__.__name__}: {exc}") from exc

    # --- registry ----------------------------------------------------------------------

    def register(self, entry: DeviceEntry) -> None:
        """Add or replace a device's registry entry."""
        fields = {"account": entry.account, "zone": entry.zone, "worker": entry.worker, "site": entry.site, "language": entry.language}
        self._call(self.r.hset, _key("device", entry.device), mapping=fields)

    def device(self, device_id: str) -> DeviceEntry | None:
        """The registry entry, or None for an unknown device."""
        raw = self._call(self.r.hgetall, _key("device", device_id))
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return DeviceEntry(device_id, d["account"], int(d["zone"]), d.get("worker", ""), d.get("site", ""), d.get("language", "da"))

    # --- events ------------------------------------------------------------------------

    def store_event(self, event: Event, raw_json: bytes | None = None) -> bool:
        """Store a validated event atomically: dedupe by event id, event record, event log
        entry, dispatch job, device last-seen (SPEC §3 pipeline).

        Returns:
            True if the event is new, False if it was stored before (a resend).
        Raises:
            StoreError: nothing was stored; do not ack ``received``.
        """
        payload = raw_json if raw_json is not None else encode(event)
        keys = [_key("event", event.id), EVENTS, DISPATCH, _key("state", event.device)]
        args = [payload, f"{time.time():.3f}", event.id, event.device, event.kind, self.event_log_maxlen]
        return bool(self._call(self._store_event, keys=keys, args=args))

    def event(self, event_id: str) -> tuple[Event, dict[str, str]] | None:
        """The stored event and its record fields (``stored_at``, ``arc`` …), or None."""
        from protocol.messages import decode

        raw = self._call(self.r.hgetall, _key("event", event_id))
        if not raw:
            return None
        rec = {k.decode(): v.decode() for k, v in raw.items()}
        return decode(rec["json"]), rec  # type: ignore[return-value]

    def mark_event(self, event_id: str, **fields: str | int | float) -> None:
        """Update an event record (e.g. ``arc="acked"``, ``arc_receiver="primary"``)."""
        self._call(self.r.hset, _key("event", event_id), mapping=fields)

    def event_log(self, count: int = 100) -> list[dict[str, str]]:
        """The newest ``count`` entries of the event log, oldest first."""
        rows = self._call(self.r.xrevrange, EVENTS, count=count)
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in reversed(rows)]

    # --- device state ------------------------------------------------------------------

    def update_alive(self, alive: Alive) -> None:
        """Record a device's alive message: last seen (relay clock), battery, signal, position."""
        state: dict[str, Any] = {
            "last_seen": f"{time.time():.3f}",
            "battery_pct": "" if alive.battery_pct is None else alive.battery_pct,
            "signal_dbm": "" if alive.signal_dbm is None else alive.signal_dbm,
            "registration": alive.registration,
            "queue_depth": alive.queue_depth,
            "firmware": alive.firmware,
        }
        if alive.position is not None:
            state.update(lat=alive.position.lat, lon=alive.position.lon, accuracy_m=alive.position.accuracy_m)
        self._call(self.r.hset, _key("state", alive.device), mapping=state)

    def update_status(self, status: Status) -> None:
        """Record the retained online/offline status (``offline`` alone is no alarm)."""
        self._call(self.r.hset, _key("state", status.device), mapping={"status": status.state, "status_at": f"{time.time():.3f}"})

    def state(self, device_id: str) -> dict[str, str]:
        """Everything known about a device's current state (strings)."""
        raw = self._call(self.r.hgetall, _key("state", device_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    # --- dead letters ------------------------------------------------------------------

    def dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep bad input with the reason (SPEC §3). Payload capped at 8 KiB, kept as text
        with undecodable bytes replaced."""
        fields = {"topic": topic[:256], "payload": payload[:8192].decode("utf-8", "replace"), "reason": reason[:512], "at": f"{time.time():.3f}"}
        self._call(self.r.xadd, DEADLETTER, fields, maxlen=self.deadletter_maxlen, approximate=True)

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The newest ``count`` dead letters, oldest first."""
        rows = self._call(self.r.xrevrange, DEADLETTER, count=count)
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in reversed(rows)]

    # --- dispatch jobs (Redis stream consumer group: at-least-once, survives relay crash) ---

    def ensure_group(self) -> None:
        """Create the dispatch consumer group if missing."""
        try:
            self.r.xgroup_create(DISPATCH, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StoreError(str(exc)) from exc
        except redis.RedisError as exc:
            raise StoreError(str(exc)) from exc

    def next_jobs(self, consumer: str, block_ms: int = 1000, count: int = 10) -> list[tuple[str, str]]:
        """New dispatch jobs for ``consumer`` as ``(job id, event id)`` pairs."""
        resp = self._call(self.r.xreadgroup, GROUP, consumer, {DISPATCH: ">"}, count=count, block=block_ms)
        return [(jid.decode(), f[b"id"].decode()) for _, entries in resp or [] for jid, f in entries]

    def reclaim_jobs(self, consumer: str, min_idle_ms: int, count: int = 10) -> list[tuple[str, str]]:
        """Jobs another (dead) consumer took but did not finish within ``min_idle_ms``."""
        resp = self._call(self.r.xautoclaim, DISPATCH, GROUP, consumer, min_idle_ms, start_id="0-0", count=count)
        return [(jid.decode(), f[b"id"].decode()) for jid, f in resp[1] if f]

    def finish_job(self, job_id: str) -> None:
        """Acknowledge a dispatch job (XACK): it is done and will not be redelivered."""
        self._call(self.r.xack, DISPATCH, GROUP, job_id)

    # --- SIA DC-09 sequence numbers ----------------------------------------------------

    def next_sequence(self, account: str) -> int:
        """Next SIA DC-09 sequence number for ``account``: 1–9999, wrapping (SPEC §4);
        persistent across restarts and shared by every relay instance."""
        n = int(self._call(self.r.incr, _key("arcseq", account)))
        return (n - 1) % 9999 + 1

    def ping(self) -> bool:
        """True if Redis answers."""
        return bool(self._call(self.r.ping))


def dumps(obj: Any) -> str:
    """Compact JSON for log/record fields."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

"""Redis state of the relay: registry, dedupe, event log, dispatch jobs, dead letters
(SPEC §3 pipeline). All state lives here so that several relay instances behave as one.

Key layout (``lw:`` prefix). ``{…}`` is a Redis Cluster hash tag: keys with the same tag
live in one slot, so one Lua script may touch them together. Everything about one device is
tagged with the device id; the streams and the supervision index are single keys that no
script combines with others.

==================================  =======  ==============================================
key                                 type     holds
==================================  =======  ==============================================
``lw:device:<id>``                  hash     registry entry: worker, zone, account, site …
``lw:{<id>}:state``                 hash     last_seen, status, battery_pct, signal_dbm, lat …
``lw:{<id>}:sup``                   hash     supervision state (:mod:`relay.redis_scripts`)
``lw:{<id>}:event:<event id>``      hash     stored event (``json``), ``stored_at``, ``arc``,
                                             ``queued``, dispatch lease, ``arc_seq`` …
``lw:{<id>}:unqueued``              set      event ids stored but not yet on ``lw:dispatch``
``lw:events``                       stream   the event log: one entry per distinct event
``lw:dispatch``                     stream   dispatch jobs, consumer group ``dispatchers``
``lw:deadletter``                   stream   bad input with the reason
``lw:deadlines``                    zset     supervision index: ``lost:<id>``,
                                             ``checkin:<id>``, ``q:<id>`` → due (Unix s)
``lw:arcseq:<account>``             string   last SIA DC-09 sequence number of the account
``lw:linktest:<who>:<period>``      string   claim: which relay sends a periodic test 602
``lw:{reg}:<kind>``                 hash     registry (:mod:`relay.registry`): workers, sites …
``lw:{esc}:…``                      various  alarms, escalation and history (:mod:`relay.alarms`)
==================================  =======  ==============================================

Storing an event is one Lua script on the device's slot (dedupe, event record, device state,
supervision) followed by the **outbox** step: the event goes to the event log and the
dispatch stream, then is marked ``queued``. A relay killed in between never leaves an event
"seen" but not dispatched: the device resends it (no ``received`` ack went out) and the
resend queues it again, and a supervision sweep re-queues anything left unqueued for
``requeue_after_s`` (also relay-raised events, which no device resends). A job queued twice
is harmless: the dispatch lease on the event lets one dispatcher send it, once.

Supervision deadlines (SPEC §3): the index ``lw:deadlines`` holds for each device at most
one member per concern with a score **no later** than the true deadline kept in the device's
``sup`` hash. Sweepers (any relay) claim due members with a compare-and-set on the score,
run the device's sweep script — which raises what is really due exactly once — and set the
member to the next due. A restart or a second relay loses nothing: it is all in Redis.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import redis
import redis.cluster

from protocol.messages import Alive, Event, Status, decode, encode

from . import redis_scripts as lua
from .fairshare import ROUTINE_STREAM, is_urgent
from .store_jobs import DispatchJobs
from .store_keys import (  # noqa: F401  (re-exported: callers import these from relay.store)
    DEADLETTER,
    DISPATCH,
    EVENT_TTL_S,
    EVENTS,
    GROUP,
    INDEX,
    PREFIX,
    StoreDataError,
    StoreError,
    _by_stream,
    _job_id,
    _s,
    device_key,
    event_key,
)
from .store_supervision import SupervisionStore

log = logging.getLogger(__name__)

#: ``arc`` states of an event record after which no dispatcher sends it again.
ARC_TERMINAL: Final = ("acked", "rejected", "not_sent", "no_arc", "suppressed", "code_refused", "closed_undelivered",
                       "coalesced")
#: How long a sweeper owns a claimed index member, seconds (a sweeper that dies mid-way
#: delays that device's deadline by at most this).
SWEEP_LEASE_S: Final = 5.0

@dataclass(frozen=True, slots=True)
class SupervisionPolicy:
    """Relay-wide supervision defaults (SPEC §3; per device: :meth:`Store.set_supervision`).

    Lost contact after ``alive_interval_s × missed_alives + grace_s`` seconds without an
    alive or event; ``mode`` ``on_shift`` (between ``shift_start`` and ``shift_end``),
    ``always`` or ``off``. A relay-side check-in expires ``checkin_grace_s`` after the
    device's own timer, so a living device reports its missed check-in itself (with its
    position) and the relay's timer only catches a silent one. ``requeue_after_s``: an
    event stored but not queued for dispatch this long is queued by a sweep.
    """

    alive_interval_s: float = 60.0
    missed_alives: int = 3
    grace_s: float = 5.0
    mode: str = "on_shift"
    checkin_grace_s: float = 5.0
    requeue_after_s: float = 5.0

    @property
    def limit_s(self) -> float:
        """Seconds of silence before lost contact."""
        return self.alive_interval_s * self.missed_alives + self.grace_s


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


def registry_key(kind: str) -> str:
    """Registry hash of one kind (``workers``, ``sites``, ``accounts``, ``devices``, ``meta``,
    ``version``). All share the hash tag ``{reg}``, so one MULTI/EXEC writes them together,
    also on Redis Cluster."""
    return f"{PREFIX}{{reg}}:{kind}"


def escalation_key(kind: str, ident: str = "") -> str:
    """Escalation state (:mod:`relay.alarms`): ``alarm:<id>`` hash, ``log:<id>`` history
    stream, ``due`` and ``alarms`` sorted sets, ``outbox:<channel>`` streams,
    ``bynumber:<e164>`` sets, ``ref`` counter. All share the hash tag ``{esc}`` so one Lua
    script may touch them together, also on Redis Cluster (alarms are few: one slot is plenty)."""
    return f"{PREFIX}{{esc}}:{kind}" + (f":{ident}" if ident else "")


class Store(SupervisionStore, DispatchJobs):
    """The relay's view of Redis. Thread-safe (redis-py's client uses a connection pool).

    Every method raises :class:`StoreError` when Redis is unavailable (retry later) and
    :class:`StoreDataError` when it refuses what was sent, never a bare redis exception.
    """

    def __init__(self, client: redis.Redis, *, event_log_maxlen: int = 1_000_000, deadletter_maxlen: int = 100_000) -> None:
        self.r = client
        self.event_log_maxlen = event_log_maxlen
        self.deadletter_maxlen = deadletter_maxlen
        #: Supervision defaults used by the scripts (set from ``[supervision]``).
        self.supervision = SupervisionPolicy()
        #: Called with each event the relay raised (lost contact, restore, missed check-in).
        self.raised_hooks: list[Any] = []
        #: Called with the reason of each dead letter kept (metrics).
        self.dead_letter_hooks: list[Any] = []
        self._store_event = client.register_script(lua.STORE_EVENT)
        self._update_alive = client.register_script(lua.UPDATE_ALIVE)
        self._mark_queued = client.register_script(lua.MARK_QUEUED)
        self._lease_event = client.register_script(lua.LEASE_EVENT)

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, **kw: Any) -> "Store":
        """Connect to ``url`` (``redis://host:port/db``) with short socket timeouts;
        ``cluster``: ``url`` is a node of a Redis Cluster (redis-py's cluster client)."""
        if cluster:
            from redis.cluster import RedisCluster

            return cls(RedisCluster.from_url(url, socket_timeout=5, socket_connect_timeout=3), **kw)  # type: ignore[arg-type]
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=10), **kw)

    #: Replicas that must have a write before an event is acked ``received`` or an ARC
    #: outcome counts (``WAIT``; issue 14: a failover must lose no alarm and send none twice).
    #: 0 = a single Redis; :func:`relay.redis_connect.connect_store` sets 1 for Sentinel/Cluster.
    replicas_to_wait: int = 0
    replica_wait_ms: int = 1000

    def _replicated(self, key: str) -> None:
        """Return once :attr:`replicas_to_wait` replicas have every write so far on the node
        of ``key`` (:func:`relay.redis_connect.wait_replicated`). Raises StoreError."""
        if self.replicas_to_wait > 0:
            from .redis_connect import wait_replicated

            wait_replicated(self, key)

    def claim_once(self, key: str, ttl_s: float) -> bool:
        """``SET key NX EX ttl``: True for the first caller only (e.g. which relay sends the
        periodic test of a period)."""
        return bool(self._call(self.r.set, key, "1", nx=True, ex=max(1, int(ttl_s))))

    def _call(self, fn, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            raise StoreError(f"redis unavailable: {exc.__class__.__name__}: {exc}") from exc
        except (redis.RedisError, redis.DataError) as exc:
            if "READONLY" in str(exc) or "LOADING" in str(exc) or "MASTERDOWN" in str(exc):
                raise StoreError(f"redis not writable: {exc}") from exc
            raise StoreDataError(f"redis refused: {exc.__class__.__name__}: {exc}") from exc

    # --- registry ----------------------------------------------------------------------

    def register(self, entry: DeviceEntry) -> None:
        """Add or replace a device's registry entry."""
        fields = {"account": entry.account, "zone": entry.zone, "worker": entry.worker, "site": entry.site, "language": entry.language}
        self._call(self.r.hset, _key("device", entry.device), mapping=fields)

    def register_many(self, entries: list[DeviceEntry], *, remove: list[str] = (), chunk: int = 1000) -> None:  # type: ignore[assignment]
        """Add or replace many registry entries (and remove the ids in ``remove``) in
        pipelined chunks: one round trip per ``chunk`` devices instead of one each."""
        for start in range(0, max(len(entries), len(remove)), chunk):
            pipe = self.r.pipeline(transaction=False)
            for e in entries[start:start + chunk]:
                pipe.hset(_key("device", e.device), mapping={"account": e.account, "zone": e.zone, "worker": e.worker,
                                                             "site": e.site, "language": e.language})
            for device_id in remove[start:start + chunk]:
                pipe.delete(_key("device", device_id))
            self._call(pipe.execute)

    def unregister(self, device_id: str) -> None:
        """Remove a device's registry entry (its messages are dead-lettered from now on)."""
        self._call(self.r.delete, _key("device", device_id))

    def device(self, device_id: str) -> DeviceEntry | None:
        """The registry entry, or None for an unknown device."""
        raw = self._call(self.r.hgetall, _key("device", device_id))
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return DeviceEntry(device_id, d["account"], int(d["zone"]), d.get("worker", ""), d.get("site", ""), d.get("language", "da"))

    # --- events ------------------------------------------------------------------------

    def store_event(self, event: Event, raw_json: bytes | None = None) -> bool:
        """Store a validated device event: dedupe by event id, event record, device state and
        supervision (shift, check-in timer, restore of a lost contact) in one script, then
        the outbox step (event log entry + dispatch job). See the module docstring.

        A device ``missed_checkin`` for a check-in the relay already raised is stored and
        logged but not dispatched (``arc = "suppressed"``, ``duplicate_of``): the ARC gets
        one 102 per check-in.

        Returns:
            True if the event is new, False if it was stored before (a resend).
        Raises:
            StoreError: Redis unavailable; do not ack ``received`` (the device resends, the
                resend completes whatever step was missing).
        """
        payload = raw_json if raw_json is not None else encode(event)
        now, dev, pol = time.time(), event.device, self.supervision
        duration = event.data.get("duration_s", 0) if event.kind == "checkin_start" else 0
        keys = [event_key(event.id), device_key(dev, "state"), device_key(dev, "sup"), device_key(dev, "unqueued")]
        args = [payload, f"{now:.3f}", event.id, dev, event.kind, device_key(dev, "event:"), *self._policy_args(),
                pol.checkin_grace_s, event.seq if event.seq < 2**52 else 0, duration, EVENT_TTL_S]  # fmt: skip
        # ^ the device's order (seq; derived ids of relay/conflicts.py are 0), never its clock (issue 15)
        if event.position is not None:
            p = event.position
            args += ["lat", p.lat, "lon", p.lon, "accuracy_m", "" if p.accuracy_m is None else p.accuracy_m, "fixed_at", p.fixed_at]
        # Index the outbox check first: if this relay dies after the script, a sweep queues it.
        # (Two round trips: redis-py's cluster pipelines refuse scripts.)
        self._call(self.r.zadd, INDEX, {f"q:{dev}": now + pol.requeue_after_s}, lt=True)
        res = self._call(self._store_event, keys=keys, args=args)
        status, lost_due, checkin_due = int(res[0]), _s(res[1]), _s(res[2])
        items: list[tuple[str, str, str | bytes, bool]] = []
        if status in (1, 2, 3):
            items.append((event.id, event.kind, payload, status != 3))
        raised = self._triples(res[3:])
        items += [(eid, kind, js, True) for eid, kind, js in raised]
        index = {}
        if lost_due:
            index[f"lost:{dev}"] = float(lost_due)
        if checkin_due:
            index[f"checkin:{dev}"] = float(checkin_due)
        self._enqueue(dev, items, index)
        self._replicated(event_key(event.id))  # before the device is told "received" (issue 14)
        self._announce(raised)
        return status in (1, 3)

    def _policy_args(self) -> list[Any]:
        p = self.supervision
        return [p.alive_interval_s, p.missed_alives, p.grace_s, p.mode]

    @staticmethod
    def _triples(flat: list[Any]) -> list[tuple[str, str, str]]:
        return [(_s(flat[i]), _s(flat[i + 1]), _s(flat[i + 2])) for i in range(0, len(flat) - 2, 3)]

    def _enqueue(self, device: str, items: list[tuple[str, str, str | bytes, bool]], index: dict[str, float]) -> None:
        """Outbox step: log entry (+ dispatch job) per item, then mark them queued; index
        members written with a plain ZADD (a writer's new truth, visible to sweepers)."""
        if not items and not index:
            return
        # One MULTI/EXEC on a single Redis: log entry, dispatch job and the "queued" mark
        # land together, so a Redis crash in between cannot make a resend log the event twice.
        # Redis Cluster refuses cross-slot transactions: there the mark is a second step (a
        # crash between the two may log an event twice; the dispatch lease still sends it once).
        cluster = isinstance(self.r, redis.cluster.RedisCluster)
        pipe = self.r.pipeline(transaction=not cluster)
        for eid, kind, js, dispatch in items:
            pipe.xadd(EVENTS, {"id": eid, "device": device, "kind": kind, "json": js}, maxlen=self.event_log_maxlen, approximate=True)
            if dispatch and is_urgent(kind):  # issue 15: alarms first (relay/fairshare.py)
                pipe.rpush(device_key(device, "order"), eid)  # per-device dispatch order
                pipe.xadd(DISPATCH, {"id": eid})
            elif dispatch:
                pipe.rpush(device_key(device, "rorder"), eid)  # routine events: their own order
                pipe.xadd(ROUTINE_STREAM, {"id": eid})
        if index:
            pipe.zadd(INDEX, index)
        mark = {"keys": [device_key(device, "unqueued")], "args": [device_key(device, "event:"), *(i[0] for i in items)]}
        if items and not cluster:
            self._mark_queued(**mark, client=pipe)
        self._call(pipe.execute)
        if items and cluster:
            self._call(self._mark_queued, **mark)
        if f"lost:{device}" in index:
            self._call(self.r.hset, device_key(device, "sup"), "lost_idx", "1")

    # --- per-device dispatch order ------------------------------------------------------

    def order_head(self, device_id: str, kind: str | None = None) -> str | None:
        """The oldest event of this device still waiting to be dispatched, or None.
        ``lw:{<device>}:order`` is a list filled in storing order (SPEC §3: an ARC must see
        an alarm before its cancel or restore). Issue 15: urgent kinds (relay/fairshare.py)
        and routine kinds (``…:rorder``, e.g. low battery before its restore) keep separate
        orders, so an alarm never waits behind its device's routine events."""
        which = "order" if kind is None or is_urgent(kind) else "rorder"
        head = self._call(self.r.lindex, device_key(device_id, which), 0)
        return None if head is None else _s(head)

    def leave_order(self, device_id: str, event_id: str) -> None:
        """Remove a dispatched (or finally refused) event from its device's order list."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lrem(device_key(device_id, "order"), 0, event_id)
        pipe.lrem(device_key(device_id, "rorder"), 0, event_id)
        self._call(pipe.execute)

    def _announce(self, raised: list[tuple[str, str, str]]) -> None:
        for _eid, _kind, js in raised:
            ev = decode(js)
            for hook in self.raised_hooks:
                try:
                    hook(ev)
                except Exception:  # an observer must not break storing
                    log.exception("raised hook failed")

    def event(self, event_id: str) -> tuple[Event, dict[str, str]] | None:
        """The stored event and its record fields (``stored_at``, ``arc`` …), or None."""
        raw = self._call(self.r.hgetall, event_key(event_id))
        if not raw or b"json" not in raw:
            return None
        rec = {k.decode(): v.decode() for k, v in raw.items()}
        return decode(rec["json"]), rec  # type: ignore[return-value]

    def mark_event(self, event_id: str, **fields: str | int | float) -> None:
        """Update an event record (e.g. ``arc="acked"``, ``arc_receiver="primary"``)."""
        self._call(self.r.hset, event_key(event_id), mapping=fields)
        self._replicated(event_key(event_id))  # an ACK lost in a failover would send the alarm twice

    def lease_event(self, event_id: str, owner: str, lease_s: float) -> str:
        """Take or renew the dispatch lease of an event for ``owner`` for ``lease_s`` seconds.

        Returns ``"ok"``, ``"busy"`` (another dispatcher's lease is valid), ``"done"`` (its
        ``arc`` state is terminal, :data:`ARC_TERMINAL`) or ``"missing"``.
        """
        res = self._call(self._lease_event, keys=[event_key(event_id)], args=[owner, f"{time.time():.3f}", lease_s, *ARC_TERMINAL])
        return _s(res)

    def event_sequence(self, event_id: str, account: str) -> int:
        """The DC-09 sequence number of an event, taken from the account's counter once and
        kept on the event, so a resend after a relay crash repeats it (receivers may then
        discard the duplicate, SPEC §4).

        Failover (issue 14): the number is on a replica (``WAIT``) before the first frame
        goes out, so a promoted replica repeats it. An ARC ACK whose ``mark_event`` fails
        (master killed before the outcome replicated) is kept and re-recorded by the
        dispatcher until Redis answers (:meth:`relay.dispatch.Dispatcher._record_ack`); only
        a relay stopped or dying in that window leaves the job to be sent again — with this
        same number, which SIA DC-09 receivers discard as a repeat per account/line."""
        key = event_key(event_id)
        got = self._call(self.r.hget, key, "arc_seq")
        if got is None:
            self._call(self.r.hsetnx, key, "arc_seq", self.next_sequence(account))
            got = self._call(self.r.hget, key, "arc_seq")
            self._replicated(key)
        return int(got)

    def event_log(self, count: int = 100) -> list[dict[str, str]]:
        """The newest ``count`` entries of the event log, oldest first."""
        rows = self._call(self.r.xrevrange, EVENTS, count=count)
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in reversed(rows)]

    # --- device state ------------------------------------------------------------------

    def update_alive(self, alive: Alive) -> None:
        """Record a device's alive message: last seen (relay clock), battery, signal, position;
        supervision: the device was heard (restores a raised lost contact)."""
        self.update_alives([alive])

    def update_alives(self, alives: list[Alive]) -> None:
        """:meth:`update_alive` for many alive messages in one Redis round trip (one pipeline,
        so with ``appendfsync always`` one fsync instead of one per message). The scripts run
        in order; what a script raises (a restore) is queued afterwards as for one message.

        Raises:
            StoreError / StoreDataError: as every Store method; nothing is partially acked
                by the caller (it acks the MQTT messages only after this returns).
        """
        if not alives:
            return
        if isinstance(self.r, redis.cluster.RedisCluster):
            # redis-py refuses scripts in cluster pipelines: one call per message there.
            results = [self._call(self._update_alive, keys=k, args=a) for k, a in map(self._alive_script_args, alives)]
        else:
            pipe = self.r.pipeline(transaction=False)
            for alive in alives:
                keys, args = self._alive_script_args(alive)
                self._update_alive(keys=keys, args=args, client=pipe)
            results = self._call(pipe.execute)
        for alive, res in zip(alives, results):
            lost_due, raised = _s(res[0]), self._triples(res[1:])
            if raised or lost_due:
                dev = alive.device
                self._enqueue(dev, [(e, k, j, True) for e, k, j in raised], {f"lost:{dev}": float(lost_due)} if lost_due else {})
                self._announce(raised)

    def _alive_script_args(self, alive: Alive) -> tuple[list[str], list[Any]]:
        state: dict[str, Any] = {
            "last_seen": f"{time.time():.3f}",
            "battery_pct": "" if alive.battery_pct is None else alive.battery_pct,
            "signal_dbm": "" if alive.signal_dbm is None else alive.signal_dbm,
            "registration": alive.registration,
            "queue_depth": alive.queue_depth,
            "firmware": alive.firmware,
        }
        if alive.position is not None:
            p = alive.position
            state.update(lat=p.lat, lon=p.lon, accuracy_m="" if p.accuracy_m is None else p.accuracy_m, fixed_at=p.fixed_at)
        b = alive.beacon  # issue 12: the beacon the device takes as its place ("" = none heard)
        state.update(beacon=b.id if b else "", beacon_rssi=b.rssi if b else "", beacon_at=f"{time.time():.3f}" if b else "")
        now, dev = time.time(), alive.device
        flat = [x for kv in state.items() for x in kv]
        args = [f"{now:.3f}", dev, device_key(dev, "event:"), *self._policy_args(), EVENT_TTL_S, *flat]
        return [device_key(dev, "state"), device_key(dev, "sup"), device_key(dev, "unqueued")], args

    def update_status(self, status: Status) -> None:
        """Record the retained online/offline status (``offline`` alone is no alarm)."""
        self._call(self.r.hset, device_key(status.device, "state"), mapping={"status": status.state, "status_at": f"{time.time():.3f}"})

    def state(self, device_id: str) -> dict[str, str]:
        """Everything known about a device's current state (strings)."""
        raw = self._call(self.r.hgetall, device_key(device_id, "state"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    # --- supervision (SPEC §3; scripts in relay.redis_scripts) -------------------------

    def dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep bad input with the reason (SPEC §3). Payload capped at 8 KiB, kept as text
        with undecodable bytes replaced."""
        fields = {"topic": topic[:256], "payload": payload[:8192].decode("utf-8", "replace"), "reason": reason[:512], "at": f"{time.time():.3f}"}
        self._call(self.r.xadd, DEADLETTER, fields, maxlen=self.deadletter_maxlen, approximate=True)
        for hook in self.dead_letter_hooks:
            hook(reason)

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The newest ``count`` dead letters, oldest first."""
        rows = self._call(self.r.xrevrange, DEADLETTER, count=count)
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in reversed(rows)]

    # --- dispatch jobs (Redis stream consumer group: at-least-once, survives relay crash) ---

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

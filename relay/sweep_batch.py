"""One batched supervision sweep over many due index members (scripts and the reason:
:mod:`relay.sweep_scripts`): claim all → sweep all (grouped per Redis Cluster slot) → queue
what was raised (one pipeline) → settle all. Used by :class:`relay.supervision.Supervisor`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.cluster
from redis.crc import key_slot

from protocol.messages import Event, decode

from . import sweep_scripts as lua
from .store import DISPATCH, EVENT_TTL_S, EVENTS, INDEX, SWEEP_LEASE_S, Store, _s, device_key

__all__ = ["BatchSweep", "SweepOutcome"]

#: Devices per SWEEP_MANY call on a single Redis (bounds one script's run time: ~1 ms / 100).
CHUNK = 250


@dataclass
class SweepOutcome:
    """What one batch did: ``claimed`` members, ``raised`` events (new alarms/restores, to
    announce), ``requeued`` events (stored but never queued, now queued)."""

    claimed: int = 0
    raised: list[Event] = field(default_factory=list)
    requeued: list[Event] = field(default_factory=list)


class BatchSweep:
    """Batched claim/sweep/settle for ``store`` (single Redis, Sentinel or Redis Cluster).

    Raises StoreError / StoreDataError like every :class:`relay.store.Store` method; a batch
    interrupted by Redis trouble leaves its claimed members leased for ``SWEEP_LEASE_S`` at
    most, after which any relay sweeps them again (the device state decides: nothing twice).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        r = store.r
        self.cluster = isinstance(r, redis.cluster.RedisCluster)
        self._claim = r.register_script(lua.CLAIM_BATCH)
        self._settle = r.register_script(lua.SETTLE_BATCH)
        self._sweep = r.register_script(lua.SWEEP_MANY)

    def run(self, due: list[tuple[str, float]], now: float, hold: float = 0.0) -> SweepOutcome:
        """Sweep the ``(member, seen score)`` pairs of ``due`` at ``now``; lost contacts due
        before ``hold`` are put back at ``hold`` instead of being raised."""
        st = self.store
        out = SweepOutcome()
        if not due:
            return out
        lease = repr(now + SWEEP_LEASE_S + random.random() / 1000)
        flat = [x for m, seen in due for x in (m, repr(seen))]
        claimed = [_s(m) for m in st._call(self._claim, keys=[INDEX], args=[lease, *flat])]
        out.claimed = len(claimed)
        if not claimed:
            return out
        groups: dict[Any, list[tuple[str, str]]] = defaultdict(list)
        for n, member in enumerate(claimed):
            what, _, dev = member.partition(":")
            what = {"lost": "lost", "checkin": "checkin"}.get(what, "queue")
            slot = key_slot(device_key(dev, "sup").encode()) if self.cluster else n // CHUNK
            groups[slot].append((dev, what))
        pol = st.supervision
        head = [f"{now:.3f}", pol.alive_interval_s, pol.missed_alives, pol.grace_s, pol.mode, EVENT_TTL_S,
                pol.requeue_after_s, f"{hold:.3f}"]  # fmt: skip
        calls = []
        for members in groups.values():
            keys = [k for dev, _ in members for k in (device_key(dev, "state"), device_key(dev, "sup"), device_key(dev, "unqueued"))]
            calls.append((members, keys, head + [x for pair in members for x in pair]))
        if self.cluster:  # redis-py refuses scripts in cluster pipelines: one call per slot
            results = [st._call(self._sweep, keys=k, args=a) for _, k, a in calls]
        else:
            pipe = st.r.pipeline(transaction=False)
            for _, k, a in calls:
                self._sweep(keys=k, args=a, client=pipe)
            results = st._call(pipe.execute)
        settle: list[str] = []
        queue: list[tuple[str, list[tuple[str, str, str]]]] = []
        raised_triples: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for (members, _, _), res in zip(calls, results):
            i = 0
            for dev, what in members:
                nxt, n_raised, n = _s(res[i]), int(res[i + 1]), int(res[i + 2])
                triples = st._triples(res[i + 3:i + 3 + 3 * n])
                i += 3 + 3 * n
                member = f"{'q' if what == 'queue' else what}:{dev}"
                settle += [member, nxt]
                triples = [t for t in triples if t[0] not in seen]  # two members of one device
                seen.update(t[0] for t in triples)
                if triples:
                    queue.append((dev, triples))
                    raised_triples += triples[:n_raised]
                    out.raised += [decode(j) for _, _, j in triples[:n_raised]]  # type: ignore[misc]
                    out.requeued += [decode(j) for _, _, j in triples[n_raised:]]  # type: ignore[misc]
        self._enqueue_many(queue)
        st._call(self._settle, keys=[INDEX], args=[lease, *settle])
        st._announce(raised_triples)
        return out

    def _enqueue_many(self, queue: list[tuple[str, list[tuple[str, str, str]]]]) -> None:
        """The outbox step (:meth:`relay.store.Store._enqueue`) for many devices at once:
        one MULTI/EXEC on a single Redis; on a cluster one pipeline, then the marks."""
        if not queue:
            return
        st = self.store
        pipe = st.r.pipeline(transaction=not self.cluster)
        for dev, items in queue:
            for eid, kind, js in items:
                pipe.xadd(EVENTS, {"id": eid, "device": dev, "kind": kind, "json": js}, maxlen=st.event_log_maxlen, approximate=True)
                pipe.rpush(device_key(dev, "order"), eid)
                pipe.xadd(DISPATCH, {"id": eid})
            if not self.cluster:
                st._mark_queued(keys=[device_key(dev, "unqueued")], args=[device_key(dev, "event:"), *(e for e, _, _ in items)], client=pipe)
        st._call(pipe.execute)
        if self.cluster:
            for dev, items in queue:
                st._call(st._mark_queued, keys=[device_key(dev, "unqueued")], args=[device_key(dev, "event:"), *(e for e, _, _ in items)])

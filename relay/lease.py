"""Takeover after a crash in seconds (issue 15): each relay's liveness is a short lease in
Redis; the dispatch jobs of a relay whose lease expired are taken over at once, and a
restarted relay resumes its own jobs at start.

* :class:`RelayLease` — ``lw:lease:<relay>`` (``SET PX``) renewed every ``ttl_s / 3``; the
  relay's name is also added to ``lw:leases`` (relays known to hold leases, so an older relay
  without one is never mistaken for a dead one). A clean stop deletes the lease: its jobs
  (left pending, SPEC §3) are taken over at once, too.
* :func:`take_over` — for every dispatch consumer (``<relay>-<n>``) with pending jobs whose
  relay is known but has no lease: ``XCLAIM`` its jobs (urgent stream first) to the caller
  and clear the events' dispatch leases held by it; ``resume=True`` does the same for the
  caller's own relay (a restart under the same instance name).

Without a lease a job would wait ``[relay] reclaim_idle_s`` (30 s) of idleness, and the
per-device order would hold the device's later alarms behind it.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from .fairshare import ROUTINE_JOB, ROUTINE_STREAM
from .store import DISPATCH, GROUP, Store, event_key

log = logging.getLogger(__name__)

LEASES: Final = "lw:leases"
#: Default lease length, seconds (renewed every third of it).
LEASE_TTL_S: Final = 3.0


def lease_key(relay: str) -> str:
    return f"lw:lease:{relay}"


class RelayLease:
    """Keeps ``relay``'s lease alive in a background thread while the relay runs."""

    def __init__(self, store: Store, relay: str, ttl_s: float = LEASE_TTL_S) -> None:
        self.store, self.relay, self.ttl_s = store, relay, ttl_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        """Renew once (raises relay.store.StoreError)."""
        self.store._call(self.store.r.set, lease_key(self.relay), "1", px=int(self.ttl_s * 1000))

    def start(self) -> None:
        self.store._call(self.store.r.sadd, LEASES, self.relay)
        self.renew()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="relay-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except Exception as exc:  # Redis away: the lease may lapse; others take over
                log.error("relay lease: cannot renew (%s)", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        try:
            self.store._call(self.store.r.delete, lease_key(self.relay))
        except Exception:
            pass


def _relay_of(consumer: str) -> str:
    return consumer.rsplit("-", 1)[0]


def holder_is_dead(store: Store, consumer: str) -> bool:
    """True when the relay of dispatch consumer ``consumer`` (``<relay>-<n>``) is known to
    hold leases (``lw:leases``) but its lease has expired: it was killed or lost Redis, and
    the events it holds are about to be taken over (:func:`take_over`). False for a live
    relay and for one that never held a lease (an older relay: it may still be working).

    Raises:
        relay.store.StoreError.
    """
    relay = _relay_of(consumer)
    r = store.r
    return bool(store._call(r.sismember, LEASES, relay)) and not store._call(r.exists, lease_key(relay))


def take_over(store: Store, consumer: str, own_relay: str, *, resume: bool = False, count: int = 100) -> list[tuple[str, str]]:
    """Claim for ``consumer`` the pending dispatch jobs of dead relays (and, with ``resume``,
    of ``own_relay``'s consumers from a previous life). Returns ``(job id, event id)`` pairs,
    urgent first.

    Raises:
        relay.store.StoreError.
    """
    r = store.r
    known = {m.decode() if isinstance(m, bytes) else m for m in store._call(r.smembers, LEASES)}
    jobs: list[tuple[str, str]] = []
    for stream, prefix in ((DISPATCH, ""), (ROUTINE_STREAM, ROUTINE_JOB)):
        try:
            consumers = store._call(r.xinfo_consumers, stream, GROUP)
        except Exception:
            continue
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if not int(c.get("pending", 0)) or (name == consumer and not resume):
                continue
            relay = _relay_of(name)
            if relay == own_relay:
                if not resume:
                    continue
            elif relay not in known or store._call(r.exists, lease_key(relay)):
                continue
            rows = store._call(r.xpending_range, stream, GROUP, min="-", max="+", count=count, consumername=name)
            ids = [row["message_id"] for row in rows]
            if not ids:
                continue
            claimed = store._call(r.xclaim, stream, GROUP, consumer, 0, ids)
            for jid, fields in claimed:
                if not fields:
                    continue
                eid = fields[b"id"].decode()
                owner = store._call(r.hget, event_key(eid), "lease_owner")
                if owner is not None and _relay_of(owner.decode()) == relay:
                    store._call(r.hdel, event_key(eid), "lease_owner", "lease_until")
                jobs.append((prefix + (jid.decode() if isinstance(jid, bytes) else jid), eid))
            log.warning("took over %d dispatch job(s) of %s (%s)", len(claimed), name,
                        "own, from before a restart" if relay == own_relay else "its relay's lease expired")
    # Oldest first (urgent before routine): one worker runs them in turn, and a device's later
    # alarm must not wait for its turn behind an older one further down this same list.
    def order(job: tuple[str, str]) -> tuple[bool, int, int]:
        routine = job[0].startswith(ROUTINE_JOB)
        ms, _, seq = job[0].removeprefix(ROUTINE_JOB).partition("-")
        return routine, int(ms), int(seq or 0)

    return sorted(jobs, key=order)

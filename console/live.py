"""The live feed behind the console's Server-Sent Events (issue 13: "a new alarm appears
within 2 s of the relay storing it").

One :class:`Feed` per console process polls the relay's Redis every ``poll_s`` (default
0.25 s: two round trips, :func:`console.queries.load_alarms`) and keeps the newest
snapshot of the alarms; when anything the queue shows changed (an alarm opened, a contact
told, the ARC's answer, taken, resolved) its ``version`` grows and every waiting SSE
connection renders the queue for its own user and sends it. Polling, not keyspace
notifications: it needs no Redis configuration, works the same with N consoles and on
Redis Cluster, and a connection that comes back after a break simply gets the current
snapshot — nothing is missed while the browser was away.

When Redis fails the snapshot keeps the last alarms and says so (``redis_ok`` False), so the
page shows that what it shows may be stale.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

from relay.alarms import Alarm
from relay.store import Store, StoreError

from .queries import load_alarms

__all__ = ["Feed", "Snapshot"]

log = logging.getLogger(__name__)

_SHOWN = ("state", "arc_state", "notified", "step", "acked_by", "outcome", "kind", "worker", "site", "place", "lat", "lon")


@dataclass(frozen=True)
class Snapshot:
    """The alarms as last read (newest first), a version that grows with every visible
    change, when it was read (Unix s), and whether Redis answered."""

    version: int = 0
    alarms: tuple[Alarm, ...] = ()
    read_at: float = 0.0
    redis_ok: bool = True
    first_seen: dict[str, float] = field(default_factory=dict)


def digest(alarms: list[Alarm] | tuple[Alarm, ...]) -> str:
    """A fingerprint of what the queue shows of ``alarms``."""
    h = hashlib.blake2b(digest_size=16)
    for a in alarms:
        h.update(a.id.encode())
        for k in _SHOWN:
            h.update(b"\x00" + a.get(k).encode())
    return h.hexdigest()


class Feed:
    """Polls Redis in a worker thread and wakes SSE connections on change.

    Args:
        store: the relay's Redis. poll_s: seconds between reads. on_minute: called in the
            worker thread about once a minute (figures facts refresh)."""

    def __init__(self, store: Store, poll_s: float = 0.25, on_minute=None) -> None:
        self.store, self.poll_s, self.on_minute = store, poll_s, on_minute
        self.snapshot = Snapshot()
        self._digest = ""
        self._cond: asyncio.Condition | None = None
        self._task: asyncio.Task | None = None
        self._last_minute = 0.0

    async def start(self, *, background: bool = True) -> None:
        """First read, then (``background``) poll every ``poll_s`` in a task."""
        self._cond = asyncio.Condition()
        await self.poll_once()
        if background:
            self._task = asyncio.create_task(self._run(), name="console-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _read(self) -> list[Alarm] | None:
        try:
            alarms = load_alarms(self.store)
        except StoreError as exc:
            log.warning("console feed: redis unavailable (%s)", exc)
            return None
        if self.on_minute is not None and time.monotonic() - self._last_minute > 60:
            self._last_minute = time.monotonic()
            try:
                self.on_minute()
            except Exception:  # figures facts are a by-product: never stop the feed
                log.exception("console feed: minute job failed")
        return alarms

    async def poll_once(self) -> bool:
        """Read once; True if the snapshot changed."""
        alarms = await asyncio.to_thread(self._read)
        old = self.snapshot
        now = time.time()
        if alarms is None:
            if not old.redis_ok:
                return False
            self.snapshot = Snapshot(old.version + 1, old.alarms, old.read_at, False, old.first_seen)
        else:
            d = digest(alarms)
            if d == self._digest and old.redis_ok:
                self.snapshot = Snapshot(old.version, tuple(alarms), now, True, old.first_seen)
                return False
            self._digest = d
            seen = {a.id: old.first_seen.get(a.id, now) for a in alarms}
            self.snapshot = Snapshot(old.version + 1, tuple(alarms), now, True, seen)
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # keep the feed alive whatever happens
                log.exception("console feed: poll failed")
            await asyncio.sleep(self.poll_s)

    async def wait_change(self, version: int, timeout_s: float) -> Snapshot:
        """The snapshot once its version differs from ``version`` (or after ``timeout_s``)."""
        if self.snapshot.version != version or self._cond is None:
            return self.snapshot
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.snapshot.version != version), timeout_s)
            except asyncio.TimeoutError:
                pass
        return self.snapshot

"""The dispatch-job part of :class:`relay.store.Store` (SPEC §3 "Dispatch"): the urgent and
routine job streams (``lw:dispatch``, ``lw:dispatch:routine``; issue 15 fair shares), the
consumer group, and reading, reclaiming, renewing and finishing jobs.

A mixin: it uses the store's Redis client (``self.r``) and ``self._call``; import
:class:`relay.store.Store`, never this class alone.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from .fairshare import ROUTINE_STREAM
from .store_keys import (
    DISPATCH,
    GROUP,
    StoreDataError,
    StoreError,
    _by_stream,
    _job_id,
    _s,
)


class DispatchJobs:
    """Dispatch jobs in Redis streams; mixed into :class:`relay.store.Store`."""

    r: Any
    _call: Any

    def dispatch_backlog(self) -> dict[str, int]:
        """Dispatch backlog over the urgent and the routine stream: ``pending`` (taken, not
        finished) and ``lag`` (not yet taken by any dispatcher; Redis ≥ 7), ``length``."""
        out = {"pending": 0, "lag": 0, "length": 0}
        for stream in (DISPATCH, ROUTINE_STREAM):
            try:
                groups = self._call(self.r.xinfo_groups, stream)
            except StoreDataError:  # no stream yet
                continue
            g = next((g for g in groups if _s(g.get("name", "")) == GROUP), None)
            length = int(self._call(self.r.xlen, stream))
            out["length"] += length
            if g is None:
                out["lag"] += length
                continue
            lag = g.get("lag")
            out["pending"] += int(g.get("pending", 0))
            out["lag"] += int(lag) if lag is not None else 0
        return out

    # --- dead letters ------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the dispatch consumer groups (urgent and routine stream) if missing."""
        for stream in (DISPATCH, ROUTINE_STREAM):
            try:
                self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise StoreError(str(exc)) from exc
            except redis.RedisError as exc:
                raise StoreError(str(exc)) from exc

    def next_jobs(self, consumer: str, block_ms: int = 1000, count: int = 10) -> list[tuple[str, str]]:
        """New dispatch jobs for ``consumer`` as ``(job id, event id)`` pairs: urgent ones
        first (issue 15); routine job ids carry the prefix ``routine/``."""
        # One stream per read (the two streams are in different cluster slots); while idle,
        # block on the urgent stream in short slices so an alarm is taken at once.
        deadline = time.monotonic() + block_ms / 1000
        while True:
            for stream in (DISPATCH, ROUTINE_STREAM):
                resp = self._call(self.r.xreadgroup, GROUP, consumer, {stream: ">"}, count=count)
                if resp:
                    return [(_job_id(stream, jid), f[b"id"].decode()) for _, entries in resp for jid, f in entries]
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return []
            resp = self._call(self.r.xreadgroup, GROUP, consumer, {DISPATCH: ">"}, count=count, block=min(left_ms, 100))
            if resp:
                return [(_job_id(DISPATCH, jid), f[b"id"].decode()) for _, entries in resp for jid, f in entries]

    def reclaim_jobs(self, consumer: str, min_idle_ms: int, count: int = 10) -> list[tuple[str, str]]:
        """Jobs another (dead) consumer took but did not finish within ``min_idle_ms``
        (urgent ones first; routine ids prefixed ``routine/``)."""
        for stream in (DISPATCH, ROUTINE_STREAM):
            resp = self._call(self.r.xautoclaim, stream, GROUP, consumer, min_idle_ms, start_id="0-0", count=count)
            jobs = [(_job_id(stream, jid), f[b"id"].decode()) for jid, f in resp[1] if f]
            if jobs:
                return jobs
        return []

    def touch_jobs(self, consumer: str, job_ids: list[str]) -> None:
        """Reset the idle time of jobs this consumer is still working on (XCLAIM JUSTID), so
        no other relay reclaims them while, say, the ARC is being retried."""
        for stream, ids in _by_stream(job_ids).items():
            if ids:
                self._call(self.r.xclaim, stream, GROUP, consumer, 0, ids, justid=True)

    def finish_job(self, job_id: str) -> None:
        """Acknowledge a dispatch job (XACK): it is done and will not be redelivered."""
        ((stream, ids),) = ((s, i) for s, i in _by_stream([job_id]).items() if i)
        self._call(self.r.xack, stream, GROUP, *ids)

    # --- SIA DC-09 sequence numbers ----------------------------------------------------

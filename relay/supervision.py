"""Supervision sweeper (SPEC §3 "Supervision — so that a worker who cannot call is missed").

The relay raises, on its own:

* ``lost_contact`` (Contact ID 356, qualifier 1) when a device sends no alive and no event for
  ``alive_interval_s × missed_alives + grace_s`` (default 60 × 3 + 5 s) while its worker is on
  shift (``shift_start`` … ``shift_end`` from the device), or always (``mode = "always"``);
  ``contact_restore`` (356, qualifier 3) when it is heard again. The retained ``offline``
  status alone is no alarm.
* ``missed_checkin`` (102) when a check-in (``checkin_start`` with ``duration_s``) is not
  finished with ``checkin_done`` in time (+ ``checkin_grace_s``) — also when the device is
  destroyed. A device-side ``missed_checkin`` for the same check-in is not sent twice.

The deadlines and the state live in Redis (:mod:`relay.store`, :mod:`relay.redis_scripts`):
the pipeline updates them atomically with each message; this module only sweeps the index
of due deadlines. Any number of relays may sweep at once: a due member is claimed with a
compare-and-set, and the device's sweep script raises an alarm only if the device's state
says it is really due and not raised yet — each expiry is raised exactly once. Due members are
handled in batches (:mod:`relay.sweep_batch`, issue 14: 100 000 devices), and lost contacts are
held while the relay has no working broker link (:mod:`relay.brokerlink`). Raised events
are stored like device events and reach the ARC through the same durable dispatch stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from protocol.messages import Event

from .store import Store, StoreError, SupervisionPolicy

__all__ = ["SupervisionPolicy", "Supervisor"]

log = logging.getLogger(__name__)


class Supervisor:
    """Sweeps the supervision index of ``store`` every ``sweep_interval_s`` seconds.

    Args:
        store: the relay's Redis state (its ``supervision`` policy is used).
        sweep_interval_s: how often the index is looked at; the lag of an alarm behind its
            deadline is at most about this plus the Redis round trips (SPEC §6: ≤ 2 s).
        batch: members handled per look (more are taken at the next look, at once).
        workers: kept for callers of the per-member sweep; a sweep is now one batch
            (:mod:`relay.sweep_batch`: claim, sweep per slot, settle — three round trips, so
            with ``appendfsync always`` a mass loss of contact is raised in bulk, not in line).
        on_raised: optional ``(Event) -> None`` for each alarm/restore this sweeper raised.
        clock: Unix seconds now (injectable: tests move time forward instead of sleeping).
        hold: optional ``(now) -> Unix s`` before which no lost contact is raised (due ones
            are looked at again then): :meth:`relay.brokerlink.BrokerLink.hold_until` — no
            broker subscription, or one that came back less than an alive interval ago.
        mass_loss: optional :class:`relay.brokerlink.MassLoss`, told how many lost contacts
            each sweep raised (one summary system event for a real mass loss).

    Attributes:
        counts: ``raised:<kind>``, ``requeued``, ``errors``, ``sweeps``.
        last_sweep: ``time.monotonic()`` of the last completed sweep (health).
        last_lag_s: seconds between the deadline and the raise of the last alarm raised.
    """

    def __init__(self, store: Store, *, sweep_interval_s: float = 0.5, batch: int = 500, workers: int = 8,
                 on_raised: Callable[[Event], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 hold: Callable[[float], float] | None = None, mass_loss: Any = None) -> None:  # fmt: skip
        if sweep_interval_s <= 0:
            raise ValueError("sweep_interval_s must be > 0")
        self.store = store
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.sweep_interval_s = sweep_interval_s
        self.batch = batch
        self.on_raised = on_raised
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.last_sweep: float | None = None
        self.last_lag_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hold = hold
        self.mass_loss = mass_loss
        self._batch: Any = None

    def start(self) -> None:
        """Start the sweeper thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="supervision", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the sweeper; a member it had claimed is swept by any relay after its lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.sweep_once()
            except StoreError as exc:
                self.counts["errors"] += 1
                log.error("supervision sweep: redis unavailable (%s); retrying", exc)
                n = 0
            except Exception:  # a bug must not end supervision
                self.counts["errors"] += 1
                log.exception("supervision sweep failed; retrying")
                n = 0
            if n < self.batch:  # a full batch: more are due, go on at once
                self._stop.wait(self.sweep_interval_s)

    def sweep_once(self, now: float | None = None) -> int:
        """Handle every index member due at ``now`` (default: the clock), up to ``batch``, in
        one batch (:mod:`relay.sweep_batch`: three Redis round trips for the whole batch).
        Lost contacts are held while :attr:`hold` says so (our own outage, issue 14).
        Returns how many were due. Raises StoreError when Redis is unavailable."""
        now = self.clock() if now is None else now
        due = self.store.due_members(now, self.batch)
        hold = self.hold(now) if self.hold is not None else 0.0
        if hold > now and due:
            self.counts["held_sweeps"] += 1
        if self._batch is None:
            from .sweep_batch import BatchSweep

            self._batch = BatchSweep(self.store)
        outcome = self._batch.run(due, now, hold)
        lost = 0
        for ev in outcome.raised:
            self._raised(ev)
            lost += ev.kind == "lost_contact"
        if outcome.requeued:
            with self._lock:
                self.counts["requeued"] += len(outcome.requeued)
            log.warning("re-queued %d event(s) stored by a relay that stopped before queueing: %s",
                        len(outcome.requeued), ", ".join(e.id for e in outcome.requeued))  # fmt: skip
        if lost and self.mass_loss is not None:
            self.mass_loss.count(lost, now)
        self.counts["sweeps"] += 1
        self.last_sweep = time.monotonic()
        return len(due)

    def _raised(self, ev: Event) -> None:
        late = ev.data.get("late_s")
        with self._lock:
            self.counts[f"raised:{ev.kind}"] += 1
            if isinstance(late, (int, float)):
                self.last_lag_s = float(late)
        log.warning("supervision raised %s %s for %s (deadline %s, %.2f s after it)",
                    ev.kind, ev.id, ev.device, ev.data.get("deadline"), late if isinstance(late, (int, float)) else -1)  # fmt: skip
        if self.on_raised is not None:
            try:
                self.on_raised(ev)
            except Exception:
                log.exception("on_raised hook failed")

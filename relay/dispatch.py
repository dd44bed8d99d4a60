"""Dispatch of stored events to the ARC over SIA DC-09 (SPEC §3 "Dispatch of an alarm").

Worker threads take dispatch jobs from the Redis stream consumer group (at-least-once:
a job taken by a relay that dies is reclaimed by another after ``reclaim_idle_s``), map the
event to Contact ID, send it with :class:`relay.arc.ArcClient`, record the result on the
event and ack ``arc`` to the device. An ARC that cannot be reached or refuses is retried
with back-off until it takes the alarm (issue 14; the ladder per receiver is
:mod:`relay.arc_policy`); the device is told ``arc_failed`` meanwhile, so it can fall back
to SMS. Nothing is dropped: a job is XACKed only once its outcome is recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Final

from protocol.messages import ALARM_KINDS, RELAY_ALARM_KINDS, Ack, Event
from protocol.sia import ContactId, contact_id_for

from .arc import ArcAlarm, ArcClient, ArcError, ArcRejectedError, ArcResult
from .arc_policy import INFORMATIONAL_KINDS, ArcFaults
from .fairshare import TEST_SIGNAL_PERIOD_S, arc_test_coalesced
from .lease import RelayLease, holder_is_dead, take_over
from .places import with_place
from .store import ARC_TERMINAL, DeviceEntry, Store, StoreError

log = logging.getLogger(__name__)

#: Event kinds that are not sent to the ARC (check-in bookkeeping stays in the relay).
NOT_FOR_ARC = frozenset({"checkin_start", "checkin_done", "readiness", "unprotected"})  # last two: issue 12
#: Kinds that need not wait for an older event of their device whose dispatcher died: alarms
#: (never a cancel, restore or listen-in, which must follow their alarm, SPEC §3).
SHORTCUT_KINDS: Final = ALARM_KINDS | RELAY_ALARM_KINDS
#: A device-queued event older than this (relay clock vs event time) carries its time of
#: occurrence as ``H`` extended data (SPEC §4), in seconds.
LATE_AFTER_S = 30.0


def contact_id_of(event: Event, zone: int, partition: int) -> ContactId | None:
    """The Contact ID message for an event (SPEC §3 event mapping), or None if the event
    kind is not reported to the ARC. ``battery_restore`` is 302 with qualifier 3."""
    if event.kind in NOT_FOR_ARC:
        return None
    if event.kind == "battery_restore":
        code, qualifier = contact_id_for("low_battery", restore=True)
    else:
        code, qualifier = contact_id_for(event.kind)
    return ContactId(qualifier=qualifier, code=code, partition=partition, zone=zone)


def arc_alarm_of(event: Event, entry: DeviceEntry, *, partition: int, fmt: str, now: float | None = None) -> ArcAlarm | None:
    """Build the SIA DC-09 alarm for a stored event: account and zone from the registry,
    position as extended data, worker/site as alarm text, time of occurrence if late."""
    cid = contact_id_of(event, entry.zone, partition)
    if cid is None:
        return None
    now = time.time() if now is None else now
    occurred = datetime.fromtimestamp(event.ts, timezone.utc) if now - event.ts > LATE_AFTER_S else None
    pos = event.position
    return ArcAlarm(
        account=entry.account,
        contact_id=cid,
        fmt=fmt,
        position=(pos.lat, pos.lon, pos.accuracy_m) if pos is not None else None,
        occurred_at=occurred,
        text=", ".join(p for p in (entry.worker, entry.site) if p) or None,
    )


class Dispatcher:
    """Runs ``workers`` dispatch threads against the store's dispatch stream.

    Args:
        store: Redis state.
        arc: the ARC client (``None``: no ARC contract; jobs are recorded as ``no_arc``).
        publish_ack: ``(device_id, Ack) -> None``.
        name: consumer name prefix, unique per relay instance.
        partition, fmt: Contact ID partition and SIA DC-09 format from the relay config.
        on_result: optional hook ``(Event, ArcResult | Exception) -> None``, called before
            the device is told; it must return quickly (the demo and tests observe with it).
        retry_s: wait between rounds when every receiver failed, seconds (doubles to 30 s).
        reclaim_idle_s: a job untouched this long by its consumer is taken over, seconds.
            Jobs in progress are touched (and their event's dispatch lease renewed) every
            ``reclaim_idle_s / 3``, so only a dead relay's jobs are taken over; the lease
            lets one dispatcher send an event however many jobs name it (scale-out: the
            ARC gets each alarm once).
        escalation: optional :class:`relay.escalation.Escalation` (contacts, issue 4): told of
            every event before the ARC and of every ARC answer; started and stopped with the
            dispatcher. ``contacts_only`` sites' events do not go to the ARC.
    """

    def __init__(
        self,
        store: Store,
        arc: ArcClient | None,
        publish_ack: Callable[[str, Ack], None],
        *,
        name: str,
        partition: int = 1,
        fmt: str = "ADM-CID",
        workers: int = 4,
        on_result: Callable[[Event, object], None] | None = None,
        retry_s: float = 1.0,
        reclaim_idle_s: float = 30.0,
        escalation: Any = None,
    ) -> None:
        self.store, self.arc, self.publish_ack = store, arc, publish_ack
        self.name, self.partition, self.fmt = name, partition, fmt
        self.workers, self.on_result = workers, on_result
        self.retry_s, self.reclaim_idle_s = retry_s, reclaim_idle_s
        self.escalation = escalation
        #: At most one test signal per device per this many seconds to the ARC (issue 15).
        self.test_period_s = TEST_SIGNAL_PERIOD_S
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._inflight: dict[str, tuple[str, str]] = {}  # job id → (event id, consumer)
        self._inflight_lock = threading.Lock()

    def start(self) -> None:
        """Create the consumer group and start the worker threads."""
        self.store.ensure_group()
        # --- issue 15 takeover: a lease in Redis (relay/lease.py); resume own jobs first
        self.lease = RelayLease(self.store, self.name)
        self.lease.start()
        self._resumed = take_over(self.store, f"{self.name}-0", self.name, resume=True)  # before any worker runs
        # --- end issue 15
        if self.escalation is not None:
            self.escalation.start()
        for i in range(self.workers):
            t = threading.Thread(target=self._run, args=(f"{self.name}-{i}",), name=f"dispatch-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._heartbeat, name="dispatch-heartbeat", daemon=True)
        t.start()
        self._threads.append(t)

    def _heartbeat(self) -> None:
        """Keep the jobs in progress ours: renew their event leases, reset their idle time."""
        while not self._stop.wait(max(self.reclaim_idle_s / 3, 0.05)):
            with self._inflight_lock:
                items = list(self._inflight.items())
            for job_id, (event_id, consumer) in items:
                try:
                    self.store.lease_event(event_id, consumer, self.reclaim_idle_s)
                    self.store.touch_jobs(consumer, [job_id])
                except StoreError as exc:
                    log.error("dispatch heartbeat: redis unavailable (%s)", exc)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the workers to stop and wait up to ``timeout_s`` seconds for each.
        A job in flight stays pending in Redis and is reclaimed later: nothing is lost."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)
        self._threads.clear()
        if getattr(self, "lease", None) is not None:  # issue 15: others take over at once
            self.lease.stop()
        if self.escalation is not None:
            self.escalation.stop(timeout_s)

    def _run(self, consumer: str) -> None:
        last_reclaim = last_takeover = 0.0
        jobs: list[tuple[str, str]] = []
        if consumer.endswith("-0"):  # issue 15: this relay's jobs from before a restart
            jobs, self._resumed = list(getattr(self, "_resumed", [])), []
        while not self._stop.is_set():
            try:
                if not jobs and time.monotonic() - last_takeover > self.TAKEOVER_EVERY_S:  # issue 15 (relay/lease.py)
                    jobs = take_over(self.store, consumer, self.name)
                    last_takeover = time.monotonic()
                if not jobs and time.monotonic() - last_reclaim > self.reclaim_idle_s / 2:
                    jobs = self.store.reclaim_jobs(consumer, int(self.reclaim_idle_s * 1000))
                    last_reclaim = time.monotonic()
                jobs = jobs or self.store.next_jobs(consumer, block_ms=500, count=1)
                for job_id, event_id in jobs:
                    self.run_job(job_id, event_id, consumer)
                jobs = []
            except StoreError as exc:
                log.error("dispatch %s: redis unavailable (%s); retrying", consumer, exc)
                self._stop.wait(1.0)
            except Exception:  # a bug must not kill the worker; the job stays pending
                log.exception("dispatch %s: unexpected error; job left pending for retry", consumer)
                self._stop.wait(1.0)

    def run_job(self, job_id: str, event_id: str, consumer: str | None = None) -> None:
        """Dispatch one job to completion (or until stop). XACKs only after recording.

        Takes the event's dispatch lease first: a job whose event another live dispatcher
        is sending stays pending (looked at again after ``reclaim_idle_s``)."""
        owner = consumer or self.name
        with self._inflight_lock:  # a sibling worker of this relay is still on it (issue 14)
            busy = any(ev == event_id for ev, _ in self._inflight.values())
        if busy:
            log.info("dispatch job %s: event %s is in progress in this relay", job_id, event_id)
            return
        lease = self.store.lease_event(event_id, owner, self.reclaim_idle_s)
        if lease == "done":
            self.store.finish_job(job_id)  # already done (a duplicate job, or a dead relay's)
            return
        if lease == "busy":
            log.info("dispatch job %s: event %s is being sent by another dispatcher", job_id, event_id)
            return
        with self._inflight_lock:
            self._inflight[job_id] = (event_id, owner)
        try:
            self._run_leased(job_id, event_id)
        finally:
            with self._inflight_lock:
                self._inflight.pop(job_id, None)

    def _run_leased(self, job_id: str, event_id: str) -> None:
        rec = self.store.event(event_id)
        if rec is None:
            log.error("dispatch job %s: event %s missing from store (expired?)", job_id, event_id)
            self.store.finish_job(job_id)
            return
        event, fields = rec

        def finish() -> None:
            self.store.leave_order(event.device, event_id)
            self.store.finish_job(job_id)
        # Contacts first (idempotent: a job run twice opens the alarm once); a failure here
        # leaves the job pending (StoreError) or is logged, never keeps the alarm from the ARC.
        to_arc = self._escalate(event)
        if fields.get("arc") in ARC_TERMINAL:
            finish()  # already done by an instance that died before XACK
            return
        entry = self.store.device(event.device)
        alarm = arc_alarm_of(event, entry, partition=self.partition, fmt=self.fmt) if entry and to_arc else None
        alarm = with_place(alarm, self.store, event)  # issue 12: building/floor/room from the beacon
        # --- issue 15 fair shares: one test signal per device per period (relay/fairshare.py)
        merged = arc_test_coalesced(self.store, event, self.test_period_s) if alarm and self.arc else None
        if merged is not None:
            self.store.mark_event(event_id, arc="coalesced", coalesced_into=merged["coalesced_into"])
            self._ack_device(event, Ack(id=event.id, stage="arc", ts=time.time(), detail=merged))
            finish()
            return
        # --- end issue 15
        if alarm is None or self.arc is None:
            self.store.mark_event(event_id, arc="not_sent" if alarm is None and to_arc else "no_arc")
            if alarm is not None:
                self._notify(event, "no_arc")
            finish()
            return
        self._wait_turn(event)
        self._send_until_done(event, alarm)
        now = self.store.event(event_id)
        if self._stop.is_set() and now is not None and now[1].get("arc") not in ARC_TERMINAL:
            return  # stopped while retrying: the job stays pending, its place in the order too
        finish()

    #: How often each worker looks for jobs of relays whose lease expired, seconds (issue 15).
    TAKEOVER_EVERY_S = 1.0

    #: Longest wait for an older event of the same device before sending anyway, seconds:
    #: order matters (alarm before cancel/restore), but never more than getting help.
    ORDER_WAIT_S = 15.0

    #: How often a waiting worker asks whether the older event's relay is still alive, seconds.
    HOLDER_CHECK_S = 0.5

    def _wait_turn(self, event: Event, wait_s: float | None = None) -> None:
        """Wait until ``event`` is the oldest undispatched event of its device (another
        dispatcher, maybe in another relay, is sending an older one), at most
        :attr:`ORDER_WAIT_S`. An older entry whose event is already final or gone is
        dropped from the order list."""
        deadline = time.monotonic() + (self.ORDER_WAIT_S if wait_s is None else wait_s)
        next_holder_check = 0.0
        while not self._stop.is_set():
            head = self.store.order_head(event.device, event.kind)  # urgent/routine order (issue 15)
            if head is None or head == event.id:
                return
            rec = self.store.event(head)
            if rec is None or rec[1].get("arc") in ARC_TERMINAL:
                self.store.leave_order(event.device, head)
                continue
            holder = rec[1].get("lease_owner")
            if holder and event.kind in SHORTCUT_KINDS and (float(rec[1].get("lease_until") or 0) < time.time()
                           or (time.monotonic() >= next_holder_check and holder_is_dead(self.store, holder))):
                # Its dispatcher held it and stopped renewing, or its relay's lease (3 s) expired
                # while the event's own (reclaim_idle_s) still runs — a relay killed -9 in a
                # back-off: its job is being taken over (relay/lease.py), by a worker that may be
                # this one once it is free; waiting for it only delays this alarm (issue 15).
                # Alarms only: a cancel, restore or listen-in waits its turn (at most
                # ORDER_WAIT_S) — the ARC must never see a cancel before its alarm (SPEC §3).
                log.warning("sending %s now: older %s of the same device lost its dispatcher", event.id, head)
                return
            if holder and event.kind in SHORTCUT_KINDS and time.monotonic() >= next_holder_check:
                next_holder_check = time.monotonic() + self.HOLDER_CHECK_S
            if time.monotonic() > deadline:
                log.warning("sending %s although older %s of the same device is not yet dispatched", event.id, head)
                return
            self._stop.wait(0.05)

    def _send_until_done(self, event: Event, alarm: ArcAlarm) -> None:
        """Send until a receiver ACKs, never giving up while the alarm is open (issue 14):
        every receiver refusing (DUH/NAK after its whole ladder, :mod:`relay.arc_policy`) or
        none reachable → a visible fault (:class:`relay.arc_policy.ArcFaults`), the contacts
        are told (escalation) and the round is repeated after a back-off doubling up to
        :attr:`RETRY_CAP_S`. Final without an ACK only: an informational event every receiver
        refused for its code alone (``code_refused``), or an alarm closed meanwhile
        (cancelled/restored: ``closed_undelivered``)."""
        wait, told_failed = self.retry_s, False
        while True:
            try:
                # One sequence per event, kept in Redis: a resend after a crash repeats it.
                sequence = self.store.event_sequence(event.id, alarm.account)
                result: ArcResult = self.arc.send(alarm, sequence=sequence)  # type: ignore[union-attr]
            except ArcError as exc:
                refused = isinstance(exc, ArcRejectedError)
                if refused and event.kind in INFORMATIONAL_KINDS and self.arc is not None \
                        and len(exc.code_refused) == len(self.arc.receivers):  # type: ignore[attr-defined]
                    log.warning("no ARC receiver knows code %03d: %s (%s) recorded as code_refused",
                                alarm.contact_id.code, event.id, event.kind)
                    self.store.mark_event(event.id, arc="code_refused", arc_error=str(exc)[:500])
                    self._fault(event, None)
                    return
                if self._closed_meanwhile(event):
                    log.error("alarm %s (%s) closed before any ARC receiver took it", event.id, event.kind)
                    self.store.mark_event(event.id, arc="closed_undelivered", arc_error=str(exc)[:500])
                    self._fault(event, None)
                    return
                reason = "rejected" if refused else "unreachable"
                log.error("ARC %s for %s (%s): %s; retrying in %.1f s", "refused" if refused else "unreachable",
                          event.id, event.kind, exc, wait)
                self.store.mark_event(event.id, arc="retrying", arc_error=str(exc)[:500], arc_reason=reason)
                self._fault(event, reason)
                if not told_failed:
                    self._ack_device(event, Ack(id=event.id, stage="arc_failed", ts=time.time(), detail={"reason": reason}))
                    told_failed = True
                self._notify(event, exc)
                if self._stop.wait(wait):
                    return  # job stays pending in Redis; another run picks it up
                wait = min(wait * 2, self.RETRY_CAP_S)
                self._wait_turn(event)  # when the ARC is back, older events of the device first
                continue
            if not self._record_ack(event, result):
                return  # stopped before Redis took the ACK: the job stays pending (see below)
            self._fault(event, None)
            log.info("ARC ACK for %s (%s) from %s in %.0f ms", event.id, event.kind, result.receiver, result.latency_s * 1000)
            self._notify(event, result)
            detail = {"receiver": result.receiver, "latency_ms": round(result.latency_s * 1000, 1)}
            self._ack_device(event, Ack(id=event.id, stage="arc", ts=time.time(), detail=detail))
            return

    #: Wait between two tries to record an ARC ACK while Redis is unavailable, seconds.
    RECORD_RETRY_S = 0.05

    def _record_ack(self, event: Event, result: ArcResult) -> bool:
        """Record the ARC ACK on the event (``arc = "acked"``, replicated: ``mark_event``
        WAITs), retrying every :attr:`RECORD_RETRY_S` while Redis is unavailable — e.g. the
        master was SIGKILLed between the ACK and the write, or before the write reached a
        replica (issue 14). Giving up here would leave the job pending and the event
        un-acked on the promoted replica, and the reclaimed job would send the alarm to
        the ARC a second time. Meanwhile the heartbeat keeps the job and the event lease
        ours, and :meth:`run_job` keeps this relay's other workers off the event.

        Returns True once recorded; False if the dispatcher was stopped first (then, and
        only then — the relay stopping or dying between the ACK and a replica having the
        outcome — the job is sent again later, with the same DC-09 sequence number, which
        the receiver discards as a repeat: SIA DC-09, :meth:`relay.store.Store.event_sequence`).
        """
        fields: dict[str, str | int | float] = {
            "arc": "acked", "arc_receiver": result.receiver, "arc_sequence": result.sequence,
            "arc_latency_ms": round(result.latency_s * 1000, 1), "arc_acked_at": f"{time.time():.3f}",
        }  # fmt: skip
        while True:
            try:
                self.store.mark_event(event.id, **fields)
                return True
            except StoreError as exc:
                log.error("ARC ACK for %s (%s) not yet recorded: %s; retrying", event.id, event.kind, exc)
                if self._stop.wait(self.RECORD_RETRY_S):
                    return False

    #: Longest wait between two delivery rounds of an alarm no receiver took, seconds.
    RETRY_CAP_S = 30.0

    def _fault(self, event: Event, reason: str | None) -> None:
        """Open (``reason``) or close (None) the event's undelivered-alarm fault; Redis
        trouble here is logged, never keeps the alarm from the next round."""
        try:
            faults = ArcFaults(self.store.r)
            if reason is None:
                faults.close(event.id)
            else:
                faults.open(event.id, event.kind, reason)
        except Exception as exc:
            log.error("could not record the ARC fault of %s: %s", event.id, exc)

    def _closed_meanwhile(self, event: Event) -> bool:
        """True when the event's alarm was cancelled or restored (no longer open)."""
        alarms = getattr(self.escalation, "alarms", None)
        if alarms is None:
            return False
        try:
            alarm = alarms.get(event.id)
        except Exception:
            return False
        return alarm is not None and alarm.state in ("cancelled", "restored")

    def _ack_device(self, event: Event, ack: Ack) -> None:
        """Tell the device about its own events; relay-raised ones are none of its business."""
        if event.origin == "device":
            self.publish_ack(event.device, ack)

    def _escalate(self, event: Event) -> bool:
        """Tell the escalation about ``event``; True if the event goes to the ARC."""
        if self.escalation is None:
            return True
        try:
            return bool(self.escalation.on_event(event))
        except StoreError:
            raise
        except Exception:  # a bug in escalation must not keep the alarm from the ARC
            log.exception("escalation failed for %s (%s); sending to the ARC anyway", event.id, event.kind)
            return True

    def _notify(self, event: Event, outcome: object) -> None:
        if self.escalation is not None:
            try:
                self.escalation.arc_outcome(event, outcome)
            except Exception:  # recorded in the log; the ARC path goes on
                log.exception("escalation could not record the ARC outcome of %s", event.id)
        if outcome == "no_arc":
            return
        if self.on_result is not None:
            try:
                self.on_result(event, outcome)
            except Exception:
                log.exception("on_result hook failed")

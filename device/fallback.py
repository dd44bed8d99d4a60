"""SMS fallback of alarms (SPEC §2 "Delivery guarantees").

An alarm (panic, silent panic, man down, missed check-in) that has no ``received`` ack from the
relay ``sms_fallback_after_s`` seconds after the device queued it is also sent by SMS, through
the modem, to every fallback recipient in the recipient's language (:mod:`device.smstext`).
MQTT resending goes on meanwhile: the relay deduplicates by event id, so the later MQTT copy is
the same alarm. A cancel of an alarm that went out by SMS follows the same path, to the
recipients who got that alarm's SMS.

Durable, at-least-once per part: the plan (text, concatenation reference, recipients) is
committed to the queue database before the first part is sent, and the message reference of
every accepted part is committed right after it (:class:`device.queue.SmsRecord`). A restart
resends only parts not recorded as accepted — a crash between the network accepting a part and
the commit can duplicate that one part, never lose it. A failed attempt is retried with
back-off (``sms_retry_s`` doubling to 10 minutes) until it is sent; only a number the network
refuses for good (``+CMS ERROR: 1`` unassigned number and the like) is given up, loudly.

When the relay's ack arrives first, nothing is sent; when it arrives during the fallback,
messages not yet started are skipped and started ones are finished.

Timing uses the monotonic clock inside one run; an event found on disk at start-up is due
``sms_fallback_after_s`` minus its wall-clock age (never later than that after the start), so
a wrong clock before NTP (SPEC §7) can make the SMS earlier, never later.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from protocol.errors import ValidationError
from protocol.messages import ALARM_KINDS, Event, Position, decode

from device.config import DeviceConfig
from modem import sms
from modem.errors import CmsError, ModemError
from .queue import EventQueue, QueueError, SmsRecord
from .smstext import render_alarm, render_cancel

log = logging.getLogger(__name__)

__all__ = ["PERMANENT_CMS_CODES", "SmsFallback"]

#: ``+CMS ERROR`` codes after which resending to that number is pointless (TS 24.011 causes:
#: 1 unassigned number; TS 27.005: 304/305 invalid PDU/text parameter).
PERMANENT_CMS_CODES = frozenset({1, 304, 305})
MAX_RETRY_S = 600.0
KEEP_DONE_S = 7 * 86400
FALLBACK_KINDS = ALARM_KINDS | {"cancel"}


class SmsFallback:
    """Plans and sends the SMS fallback of one device.

    Args:
        cfg: device config (``[sms]`` recipients, ``[worker]``, ``timing.sms_fallback_after_s``,
            ``timing.sms_retry_s``).
        queue: the durable queue (events and SMS records).
        modem: a :class:`modem.supervisor.ModemSupervisor`, or None (no modem: nothing
            can be sent, which is logged as an error once per alarm).
        position: ``() -> Position | None``, the latest GNSS fix.
        tz: the device's time zone for local times (None = system zone).
        observer: ``(step, fields)``: ``sms_fallback`` (plan made), ``sms_sent`` (recipient,
            language, encoding, parts, refs), ``sms_failed`` (error, retry_in_s, permanent).
        on_fallback: ``(event_id) -> None`` when an alarm starts falling back (the daemon
            plays the ``no_connection`` feedback).
    """

    def __init__(self, cfg: DeviceConfig, queue: EventQueue, modem: Any, *,
                 position: Callable[[], Position | None] = lambda: None,
                 tz: tzinfo | None = None,
                 observer: Callable[[str, dict[str, Any]], None] | None = None,
                 on_fallback: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.queue = queue
        self.modem = modem
        self.position = position
        self.tz = tz
        self.observer = observer or (lambda step, fields: None)
        self.on_fallback = on_fallback or (lambda event_id: None)
        self.after_s = cfg.timing.sms_fallback_after_s
        self.retry_s = cfg.timing.sms_retry_s
        self._lock = threading.Lock()
        self._due_at: dict[str, float] = {}   # event id → monotonic time its SMS is due
        self._planned: set[str] = set()
        self._wake = threading.Event()

    # -- hooks ---------------------------------------------------------------------------

    def received(self, event_id: str) -> None:
        """The relay acknowledged ``event_id``: unstarted messages of it are skipped."""
        with self._lock:
            self._due_at.pop(event_id, None)
        try:
            skipped = self.queue.sms_skip_unstarted(event_id, time.time())
        except QueueError:
            log.exception("could not record the relay's ack for the SMS fallback of %s", event_id)
            return
        if skipped:
            log.info("relay has %s: %d SMS not needed any more", event_id, skipped)

    def wake(self) -> None:
        """Check now (e.g. an alarm was queued)."""
        self._wake.set()

    # -- loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event, heartbeat: Callable[[], None] = lambda: None) -> None:
        """Check twice a second until ``stop`` is set; errors are logged and retried."""
        while not stop.is_set():
            heartbeat()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("SMS fallback check failed; retrying")
                stop.wait(1.0)
            self._wake.wait(1.0)  # woken at once for a new alarm; 1 s pacing of the timer
            self._wake.clear()

    def tick(self, now: float | None = None) -> None:
        """Plan the SMS of alarms that became due, then send what is due."""
        wall = time.time() if now is None else now
        mono = time.monotonic()
        pending = [qe for qe in self.queue.pending() if qe.kind in FALLBACK_KINDS]
        with self._lock:
            ids = {qe.id for qe in pending}
            for gone in [k for k in self._due_at if k not in ids]:
                del self._due_at[gone]  # acknowledged meanwhile
            for qe in pending:
                if qe.id not in self._due_at:
                    age = max(0.0, wall - qe.created_at)
                    self._due_at[qe.id] = mono + max(0.0, self.after_s - age)
            due = [qe for qe in pending
                   if qe.id not in self._planned and mono >= self._due_at[qe.id]]
        for qe in due:
            self._plan(qe.id, qe.payload, wall)
        self._send_due(wall)
        if random.random() < 0.001:
            self.queue.sms_prune(wall - KEEP_DONE_S)

    # -- planning ------------------------------------------------------------------------

    def _plan(self, event_id: str, payload: bytes, now: float) -> None:
        if self.queue.sms_for(event_id):
            self._planned.add(event_id)  # planned before a restart
            return
        try:
            event = decode(payload)
        except ValidationError:
            log.error("queued event %s does not decode; no SMS fallback for it", event_id)
            self._planned.add(event_id)
            return
        assert isinstance(event, Event)
        if event.kind == "cancel":
            records = self._plan_cancel(event, now)
            if records is None:
                return  # the alarm's own SMS are not finished: plan the cancel later
        else:
            records = self._plan_alarm(event, now)
        self._planned.add(event_id)
        if not records:
            if event.kind != "cancel":
                log.error("alarm %s has no relay ack after %.0f s and there is no SMS fallback "
                          "(no fallback numbers configured)", event_id, self.after_s)
            return
        if self.modem is None:
            log.error("alarm %s needs the SMS fallback but the device has no modem", event_id)
        self.queue.plan_sms(records)
        self.observer("sms_fallback", {"id": event_id, "kind": event.kind,
                                       "recipients": len(records), "after_s": self.after_s})
        log.warning("no relay ack for %s (%s) after %.0f s: sending it by SMS to %d recipient(s)",
                    event_id, event.kind, self.after_s, len(records))
        if event.kind in ALARM_KINDS:
            self.on_fallback(event_id)

    def _record(self, event: Event, number: str, language: str, text: str,
                now: float) -> SmsRecord:
        parts = len(sms.split(text))
        return SmsRecord(event_id=event.id, kind=event.kind, number=number, language=language,
                         text=text, reference=random.randrange(256), parts=parts, part_refs=(),
                         status="due", attempts=0, next_attempt_at=now, last_error=None,
                         created_at=now, done_at=None)

    def _plan_alarm(self, event: Event, now: float) -> list[SmsRecord]:
        position = _newest(event.position, self.position())
        w = self.cfg.worker
        out = []
        for r in self.cfg.sms.recipients:
            text = render_alarm(event.kind, r.language, worker=w.name, site=w.site,
                                device_id=event.device, event_id=event.id,
                                occurred_at=event.ts, position=position, now=now, tz=self.tz)
            out.append(self._record(event, r.number, r.language, text, now))
        return out

    def _plan_cancel(self, event: Event, now: float) -> list[SmsRecord] | None:
        alarm_id = str(event.data.get("cancels", ""))
        alarm_sms = self.queue.sms_for(alarm_id)
        if any(r.status == "due" for r in alarm_sms):
            return None  # the cancel follows the alarm's own SMS, never overtakes them
        w = self.cfg.worker
        out = []
        for r in alarm_sms:
            if r.status != "sent":
                continue
            text = render_cancel(r.kind, r.language, worker=w.name, site=w.site,
                                 device_id=event.device, event_id=alarm_id,
                                 occurred_at=event.ts, tz=self.tz)
            out.append(self._record(event, r.number, r.language, text, now))
        return out

    # -- sending -------------------------------------------------------------------------

    def _send_due(self, now: float) -> None:
        if self.modem is None:
            return
        for rec in self.queue.sms_due(now):
            if not self._send(rec):
                return  # the modem is in trouble: do not hammer it with the others now

    def _send(self, rec: SmsRecord) -> bool:
        pdus = sms.encode_submit(rec.number, rec.text, reference=rec.reference)
        encoding = sms.choose_encoding(rec.text)
        for index in range(len(rec.part_refs), len(pdus)):
            try:
                ref = self.modem.send_pdu(pdus[index])
            except (ModemError, sms.SmsError) as exc:
                self._failed(rec, index, exc)
                return False
            rec = self.queue.sms_part_sent(rec.event_id, rec.number, ref, time.time())
        self.observer("sms_sent", {"id": rec.event_id, "kind": rec.kind, "recipient": rec.number,
                                   "language": rec.language, "encoding": encoding,
                                   "parts": rec.parts, "refs": list(rec.part_refs)})
        log.info("SMS fallback of %s sent to %s (%s, %d part(s))", rec.event_id, rec.number,
                 encoding, rec.parts)
        return True

    def _failed(self, rec: SmsRecord, index: int, exc: Exception) -> None:
        permanent = isinstance(exc, sms.SmsError) or (
            isinstance(exc, CmsError) and exc.code in PERMANENT_CMS_CODES)
        delay = min(self.retry_s * 2 ** rec.attempts, MAX_RETRY_S)
        self.queue.sms_attempt_failed(rec.event_id, rec.number, str(exc), time.time() + delay,
                                      permanent=permanent)
        self.observer("sms_failed", {"id": rec.event_id, "recipient": rec.number,
                                     "part": index + 1, "error": str(exc)[:200],
                                     "permanent": permanent,
                                     "retry_in_s": None if permanent else round(delay, 1)})
        if permanent:
            log.error("SMS fallback of %s to %s refused for good: %s", rec.event_id, rec.number, exc)
        else:
            log.warning("SMS fallback of %s to %s failed at part %d (%s); retrying in %.0f s",
                        rec.event_id, rec.number, index + 1, exc, delay)


def _newest(a: Position | None, b: Position | None) -> Position | None:
    if a is None or b is None:
        return a or b
    return a if a.fixed_at >= b.fixed_at else b

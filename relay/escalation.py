"""Escalation of alarms to contacts (SPEC §3 "Contacts by escalation policy per site").

Policies (per site, :mod:`relay.registry`):

* ``arc_then_contacts`` (default) — the ARC gets the alarm and the contacts are told at once,
  in order, until one acknowledges.
* ``contacts_only`` — no ARC contract: the contacts only; nothing is sent to the ARC.
* ``arc_only`` — the ARC only; but when the ARC refuses the alarm (DUH) or cannot be reached,
  or no receiver is configured, the contacts are told after all (recorded in the history).

The next contact is told after the site's ``escalate_after_s`` (default 120 s) without an
acknowledgement; after the last one the list starts again, ``max_rounds`` times, then the
alarm is ``unanswered`` (still listed, logged as an error). An acknowledgement comes by SMS
reply (:meth:`Escalation.handle_reply`) or ``lonewatch alarm ack`` (:meth:`Escalation.ack`).
A cancel (CID 406) or restore ends the escalation and tells every contact told so far.

Hooks called by :class:`relay.dispatch.Dispatcher` for every dispatch job (at least once,
so all are idempotent): :meth:`Escalation.on_event` (before the ARC), :meth:`Escalation.arc_outcome`.

Threads (:meth:`start`): one ticker claims due steps (:meth:`relay.alarms.AlarmStore.step`,
exactly once across relay instances) every ``poll_s``; one sender per configured channel
kind (``sms``, ``email``) takes notification jobs from the outbox streams (at least once: a
relay killed mid-send leaves the job to be reclaimed by another after ``reclaim_idle_s``),
renders the text in the contact's language and records every delivery result.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from protocol.messages import ALARM_KINDS, Event

from .alarms import Alarm, AlarmStore
from .notify import Channel, Delivery
from .notify.templates import DEFAULT_MAP_URL, MessageContext, parse_reply, render
from .places import place_fields
from .registry import RegistryStore, Resolved, normalize_phone
from .store import Store, StoreError

__all__ = ["ESCALATING_KINDS", "Escalation", "EscalationSettings", "escalation_action"]

log = logging.getLogger(__name__)

#: Event kinds that open an alarm for contacts (``lost_contact`` is raised by the relay).
ESCALATING_KINDS: Final = frozenset(ALARM_KINDS | {"lost_contact"})


def escalation_action(event: Event) -> str | None:
    """What an event means for escalation: ``"open"`` (an alarm: :data:`ESCALATING_KINDS`),
    ``"cancel"`` (``cancel`` with ``data["cancels"]`` = the alarm's event id), ``"restore"``
    (``data["restore"]`` true, or ``data["restores"]`` = the alarm's event id), else None.

    Issue 15: the kind decides first — an alarm kind always opens, whatever its ``data``
    says — and only relay-raised events (``origin = "relay"``) restore; a device's data never
    closes anything (``protocol.eventdata`` refuses such fields, this is the second line)."""
    if event.kind in ESCALATING_KINDS:
        return "open"
    if event.kind == "cancel":
        return "cancel"
    if event.origin == "relay" and (event.data.get("restore") or event.data.get("restores")):
        return "restore"
    return None


@dataclass(frozen=True)
class EscalationSettings:
    """``[notify]`` knobs: ``max_rounds`` times through the contact list; ``poll_s`` how often
    due steps are looked for (s); ``reclaim_idle_s`` after which a dead sender's job is taken
    over (s); ``send_attempts`` per notification before it is recorded as failed;
    ``map_url`` template; ``timezone`` for sites without one; ``default_region`` for reply
    numbers in national format."""

    max_rounds: int = 3
    poll_s: float = 0.5
    reclaim_idle_s: float = 60.0
    send_attempts: int = 3
    retry_s: float = 2.0
    map_url: str = DEFAULT_MAP_URL
    timezone: str = ""
    default_region: str = ""


class Escalation:
    """The escalation engine of one relay instance (all state in Redis).

    Args:
        store: Redis state. registry: the registry in Redis.
        channels: ``{"sms": [modem channel, gateway …], "email": [apprise e-mail]}``; each kind
            tries its channels in order until one delivers. A kind with no channel is left to
            the relay instances that have one.
        name: consumer name, unique per instance and stable across restarts.
    """

    def __init__(self, store: Store, registry: RegistryStore, channels: dict[str, Sequence[Channel]], *,
                 name: str, settings: EscalationSettings | None = None) -> None:
        self.store = store
        self.registry = registry
        self.alarms = AlarmStore(store)
        self.channels = {k: list(v) for k, v in channels.items() if v}
        self.name = name
        self.settings = settings or EscalationSettings()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the ticker and one sender thread per channel kind configured here."""
        self._stop.clear()
        self.alarms.ensure_groups()
        targets = [("escalation-tick", self._tick_loop, ())]
        targets += [(f"notify-{kind}", self._send_loop, (kind,)) for kind in self.channels]
        for tname, fn, args in targets:
            t = threading.Thread(target=fn, args=args, name=tname, daemon=True)
            t.start()
            self._threads.append(t)
        for channel in self._all_channels():
            starter = getattr(channel, "start", None)
            if starter is not None:
                starter()  # e.g. the modem's inbound SMS reader
        if not self.channels:
            log.warning("escalation: no SMS or e-mail channel configured on this relay instance")

    def _all_channels(self) -> list[Channel]:
        return [c for chans in self.channels.values() for c in chans]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the threads; a job in flight stays pending in Redis for another run."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)
        self._threads.clear()
        for channel in self._all_channels():
            stopper = getattr(channel, "stop", None)
            if stopper is not None:
                stopper()

    # --- dispatch hooks -----------------------------------------------------------------

    def on_event(self, event: Event) -> bool:
        """Open, cancel or restore the alarm ``event`` stands for (idempotent). Returns
        whether the event goes to the ARC (False for devices at ``contacts_only`` sites).

        Raises StoreError (the dispatch job stays pending and is run again)."""
        resolved = self.registry.resolve(event.device)
        policy = resolved.policy if resolved else "arc_then_contacts"
        action = escalation_action(event)
        if action == "open":
            self._open(event, resolved)
        elif action in ("cancel", "restore"):
            target = str(event.data.get("cancels") or event.data.get("restores") or "")
            targets = [target] if target else self._live_alarms(event, same_kind=action == "restore")
            state = "cancelled" if action == "cancel" else "restored"
            detail = (f"cancelled by the worker (event {event.id}, CID 406)" if action == "cancel"
                      else f"restored (event {event.id})")
            for alarm_id in targets:
                outcome = self.alarms.close(alarm_id, state, detail)
                log.info("alarm %s %s: %s", alarm_id, state, outcome)
        return policy != "contacts_only"

    def _live_alarms(self, event: Event, *, same_kind: bool) -> list[str]:
        """Alarms of the event's device not yet cancelled/restored (of the same kind for a
        restore that names no alarm)."""
        return [a.id for a in self.alarms.recent(200)
                if a.get("device") == event.device and a.state in ("open", "unanswered", "acked", "with_arc")
                and (not same_kind or a.kind == event.kind)]

    def _open(self, event: Event, resolved: Resolved | None) -> None:
        if resolved is None:
            log.error("alarm %s: device %s not in the registry; nobody to escalate to", event.id, event.device)
            contacts, policy, after, site, worker = (), "arc_then_contacts", 120, None, None
        else:
            contacts, policy, after = resolved.contacts, resolved.policy, resolved.escalate_after_s
            site, worker = resolved.site, resolved.worker
        state = self.store.state(event.device) if event.position is None else {}
        lat = event.position.lat if event.position else _float(state.get("lat"))
        lon = event.position.lon if event.position else _float(state.get("lon"))
        if lat is None and site is not None and site.lat is not None:
            lat, lon = site.lat, site.lon
        fields: dict[str, str | int | float] = {
            "device": event.device, "kind": event.kind, "occurred_at": f"{event.ts:.3f}",
            "worker": resolved.device.worker if resolved else event.device,
            "worker_number": worker.number if worker else "",
            "site": site.name if site else (resolved.device.site if resolved else ""),
            "address": site.address if site else "", "escape_routes": site.escape_routes if site else "",
            "alarm_system": site.alarm_system if site else "",
            "timezone": (site.timezone if site and site.timezone else self.settings.timezone),
            "lat": "" if lat is None else lat, "lon": "" if lon is None else lon,
            "policy": policy, "escalate_after_s": after, "max_rounds": self.settings.max_rounds,
            "account": resolved.entry.account if resolved else "",
            **place_fields(self.store, event),  # issue 12: building, floor, room, note of the beacon
        }
        escalate = policy != "arc_only"
        names = ", ".join(c.name for c in contacts) or "nobody"
        detail = (f"{event.kind} from {fields['worker']} at {fields['site'] or '?'}; policy {policy}; "
                  f"contacts in order: {names}" + ("" if escalate else "; contacts only if the ARC fails"))
        if self.alarms.open(event.id, fields, contacts, escalate=escalate, detail=detail) == 1:
            log.info("alarm %s opened (%s, policy %s, %d contact(s))", event.id, event.kind, policy, len(contacts))
            if not contacts and policy == "contacts_only":
                log.error("alarm %s: contacts_only site without contacts: nobody can be told", event.id)

    def arc_outcome(self, event: Event, outcome: object) -> None:
        """Record the ARC's answer for an alarm (``ArcResult``, ``ArcRejectedError`` = DUH,
        another ``ArcError`` = unreachable, or the string ``"no_arc"``). Under ``arc_only``
        a failure starts the escalation; each distinct answer is recorded once."""
        from .arc import ArcRejectedError, ArcResult

        if escalation_action(event) != "open":
            return
        alarm = self.alarms.get(event.id)
        if alarm is None:
            return
        if isinstance(outcome, ArcResult):
            key, what = "acked", "arc_acked"
            detail = f"ARC receiver {outcome.receiver} ACKed (sequence {outcome.sequence:04d})"
        elif isinstance(outcome, ArcRejectedError):
            key, what, detail = "rejected", "arc_rejected", f"ARC refused the alarm (DUH): {outcome}"
        elif outcome == "no_arc":
            key, what, detail = "no_arc", "arc_none", "no ARC receiver configured"
        else:
            key, what, detail = "unreachable", "arc_unreachable", f"ARC not reachable, retrying: {outcome}"
        if alarm.get("arc_state") == key:
            return  # already recorded (a retry round)
        self.alarms.set_fields(event.id, arc_state=key)
        if key == "acked":
            self.alarms.note(event.id, what, detail)
            if alarm.state == "open" and alarm.get("escalating") != "1":
                self.alarms.set_fields(event.id, state="with_arc")
            return
        started = self.alarms.escalate_now(event.id, what, detail + (
            "; telling the contacts" if alarm.get("escalating") != "1" else ""))
        if started == 1:
            log.warning("alarm %s: %s; contacts are told although the site is arc_only", event.id, what)

    # --- acknowledgements ---------------------------------------------------------------

    def ack(self, alarm_id: str, by: str, via: str = "cli") -> tuple[str, str]:
        """Acknowledge ``alarm_id`` on behalf of ``by``. Returns ``("acked", by)``,
        ``("already", first acknowledger)``, ``("closed", state)`` or ``("missing", "")``."""
        return self.alarms.ack(alarm_id, by, via)

    def handle_reply(self, number: str, text: str, received_at: float | None = None) -> str:
        """Act on an inbound SMS: an acknowledgement word (and optionally the alarm's ref)
        from a number that was told about an open alarm acknowledges it; other text is kept
        in those alarms' histories. Returns what was done (also logged in the inbox stream).

        Raises StoreError (the SMS stays on the SIM and is offered again)."""
        try:
            e164 = normalize_phone(number, self.settings.default_region or None)
        except ValueError:
            e164 = number
        told = self.alarms.alarms_for_number(e164)
        is_ack, ref = parse_reply(text)
        open_ = [a for a in told if a.is_open]
        if ref is not None:
            open_ = [a for a in open_ if a.ref == ref]
        result = self._reply(e164, text, told, open_, is_ack, ref)
        self.alarms.log_inbound(e164, text, result)
        log.info("SMS from %s…: %s", e164[:6], result)
        return result

    def _reply(self, e164: str, text: str, told: list[Alarm], open_: list[Alarm], is_ack: bool,
               ref: int | None) -> str:
        def contact_of(alarm: Alarm) -> tuple[int, str]:
            for i, c in enumerate(alarm.contacts):
                if c.phone == e164:
                    return i, c.name
            return -1, e164

        if not told:
            return "no alarm was told to this number"
        if not is_ack:
            for alarm in (open_ or told[:1]):
                self.alarms.note(alarm.id, "reply", text[:300], contact=contact_of(alarm)[1], channel="sms")
            return f"reply kept in the history of {', '.join(a.id for a in (open_ or told[:1]))}"
        if len(open_) == 1:
            alarm = open_[0]
            outcome, who = self.alarms.ack(alarm.id, contact_of(alarm)[1], "sms")
            return f"{alarm.id}: {outcome} ({who})"
        if not open_:
            latest = told[0]
            self.alarms.note(latest.id, "reply", f"{text[:200]!r} (alarm is {latest.state}"
                             + (f" by {latest.get('acked_by')})" if latest.state == "acked" else ")"),
                             contact=contact_of(latest)[1], channel="sms")
            return f"no open alarm{' with ref ' + str(ref) if ref is not None else ''}; reply kept in {latest.id}"
        idx, name = contact_of(open_[0])
        refs = json.dumps([[a.ref, a.get("worker")] for a in open_], ensure_ascii=False)
        for alarm in open_:
            self.alarms.note(alarm.id, "ambiguous_reply", f"{text[:100]!r}: several alarms open, asked for the ref",
                             contact=name, channel="sms")
        if idx >= 0:
            self.alarms.queue_message("sms", open_[0].id, idx, "ambiguous", refs)
        return f"ambiguous: {len(open_)} open alarms; asked for the ref"

    # --- threads ------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Claim every due step once (what the ticker thread does). Returns steps taken."""
        taken = 0
        for alarm_id in self.alarms.due(now):
            idx = self.alarms.step(alarm_id, now)
            if idx is not None:
                taken += 1
                log.info("alarm %s: contact %d told", alarm_id, idx + 1)
            else:
                alarm = self.alarms.get(alarm_id)
                if alarm is not None and alarm.state == "unanswered":
                    log.error("alarm %s from %s: NOBODY ACKNOWLEDGED after every contact was told",
                              alarm_id, alarm.get("worker"))
        return taken

    def _tick_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except StoreError as exc:
                log.error("escalation: redis unavailable (%s); retrying", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("escalation: unexpected error in the ticker")
                self._stop.wait(1.0)
            self._stop.wait(self.settings.poll_s)

    def _send_loop(self, kind: str) -> None:
        consumer = f"{self.name}-{kind}"
        while not self._stop.is_set():
            try:
                jobs = self.alarms.next_jobs(kind, consumer, block_ms=500,
                                             reclaim_idle_ms=int(self.settings.reclaim_idle_s * 1000))
                for job_id, job in jobs:
                    self.run_job(kind, job_id, job)
            except StoreError as exc:
                log.error("notify %s: redis unavailable (%s); retrying", kind, exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("notify %s: unexpected error; job left pending", kind)
                self._stop.wait(1.0)

    def run_job(self, kind: str, job_id: str, job: dict[str, str]) -> list[Delivery]:
        """Send one queued notification on the channels of ``kind`` and record the result."""
        alarm = self.alarms.get(job.get("alarm", ""))
        idx = int(job.get("contact", "-1"))
        if alarm is None or not 0 <= idx < len(alarm.contacts):
            log.error("notify %s: job %s refers to an unknown alarm or contact: %s", kind, job_id, job)
            self.alarms.finish_job(kind, job_id)
            return []
        contact, msg = alarm.contacts[idx], job.get("msg", "alarm")
        if msg == "alarm" and alarm.state != "open":
            self.alarms.note(alarm.id, "skipped", f"{kind} not sent: alarm already {alarm.state}", contact=contact.name)
            self.alarms.finish_job(kind, job_id)
            return []
        if msg in ("acknowledged", "cancelled", "restored") and not self._got_alarm(alarm.id, contact.name):
            self.alarms.note(alarm.id, "skipped", f"{msg}: {contact.name} never got the alarm", contact=contact.name)
            self.alarms.finish_job(kind, job_id)
            return []
        to = contact.phone if kind == "sms" else contact.email
        text = render(msg, contact.language, self._context(alarm, job), channel=kind, map_url=self.settings.map_url)
        deliveries: list[Delivery] = []
        for attempt in range(self.settings.send_attempts):
            for channel in self.channels.get(kind, []):
                result = channel.send(to, text.subject, text.body)
                deliveries.append(result)
                self.alarms.note(alarm.id, "sent" if result.ok else "send_failed",
                                 f"{msg}: {result.detail}", contact=contact.name, channel=result.channel)
                if result.ok:
                    self.alarms.finish_job(kind, job_id)
                    return deliveries
            if attempt + 1 < self.settings.send_attempts and self._stop.wait(self.settings.retry_s):
                return deliveries  # stopping: the job stays pending for another run
        log.error("alarm %s: %s to %s failed on every channel", alarm.id, msg, contact.name)
        self.alarms.note(alarm.id, "undelivered", f"{msg}: every {kind} channel failed "
                         f"{self.settings.send_attempts} time(s)", contact=contact.name)
        self.alarms.finish_job(kind, job_id)
        return deliveries

    def _got_alarm(self, alarm_id: str, name: str) -> bool:
        return any(e.get("what") == "sent" and e.get("contact") == name and e.get("detail", "").startswith("alarm:")
                   for e in self.alarms.history(alarm_id))

    def _context(self, alarm: Alarm, job: dict[str, str]) -> MessageContext:
        refs: tuple[tuple[int, str], ...] = ()
        if job.get("extra"):
            try:
                refs = tuple((int(r), str(w)) for r, w in json.loads(job["extra"]))
            except (ValueError, TypeError):
                refs = ()
        return MessageContext(
            kind=alarm.kind, worker=alarm.get("worker"), site=alarm.get("site"), address=alarm.get("address"),
            occurred_at=float(alarm.get("occurred_at", "0") or 0), lat=alarm.float_or_none("lat"),
            lon=alarm.float_or_none("lon"), escape_routes=alarm.get("escape_routes"),
            alarm_system=alarm.get("alarm_system"), ref=alarm.ref, alarm_id=alarm.id,
            by=alarm.get("acked_by"), timezone=alarm.get("timezone"), refs=refs,
            building=alarm.get("place_building"), floor=alarm.get("place_floor"), room=alarm.get("place_room"),
            note=alarm.get("place_note"), detail=alarm.get("detail"),
        )


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


"""The relay's per-message pipeline (SPEC §3), free of MQTT: validate → dead-letter bad
input with the reason → deduplicate by event id → store (event log + device state +
dispatch job, one atomic step) → ack ``received`` to the device.

Dispatch (ARC, contacts) runs elsewhere (:mod:`relay.dispatch`) from the stored dispatch
jobs, so the pipeline never waits for a receiver and a crash between storing and
dispatching loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from protocol.errors import ValidationError
from protocol.eventdata import salvage_alarm
from protocol.messages import Ack, Alive, Event, Status, decode_for_topic, encode
from protocol.topics import parse_topic

from .clockcheck import flag_clock
from .conflicts import conflicting, note_sequence, resolve_conflict
from .fairshare import RateLimiter
from .faults import RATE_LIMIT, record_fault
from .references import note_reference, reference_problem
from .retention import strip_location_off_shift
from .store import Store

log = logging.getLogger(__name__)

Outcome = Literal["stored", "duplicate", "alive", "status", "dead_letter"]


@dataclass(frozen=True, slots=True)
class Handled:
    """What the pipeline did with one message: ``outcome``, the event (for stored and
    duplicate events), and ``reason`` for a dead letter."""

    outcome: Outcome
    event: Event | None = None
    reason: str = ""


class Pipeline:
    """Handles incoming MQTT messages (one, or a batch of alive messages); thread-safe if
    ``publish_ack`` is.

    Args:
        store: the Redis state.
        publish_ack: ``(device_id, Ack) -> None``, sends an ack to ``lonewatch/<id>/ack``.
        on_stored: optional hook ``(Event, is_new) -> None`` called after storing (the demo
            and tests observe the pipeline through it).
    """

    def __init__(
        self,
        store: Store,
        publish_ack: Callable[[str, Ack], None],
        on_stored: Callable[[Event, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.publish_ack = publish_ack
        self.on_stored = on_stored
        #: Counts per outcome and per dead-letter reason class (operability).
        self.counts: Counter[str] = Counter()
        #: Issue 12: optional ``(Event) -> dict`` for the ``received`` ack's detail (the
        #: readiness round trip: the ARC link state on a ``shift_start``, :mod:`relay.readiness`).
        self.received_detail: Callable[[Event], dict] | None = None
        #: Per-device rate limit for routine kinds (relay/fairshare.py); None = no limit.
        self.limiter: RateLimiter | None = None
        #: device id → (registry entry, expiry on the monotonic clock), for alive messages only.
        self._known: dict[str, tuple[object, float]] = {}

    #: How long an alive message may rely on a cached registry lookup, seconds. Events always
    #: look the registry up afresh.
    REGISTRY_CACHE_S = 5.0

    def _registered(self, device_id: str) -> bool:
        hit = self._known.get(device_id)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return True
        if self.store.device(device_id) is None:
            return False
        if len(self._known) > 200_000:
            self._known.clear()
        self._known[device_id] = (True, now + self.REGISTRY_CACHE_S)
        return True

    def handle_alives(self, items: list[tuple[str, bytes]]) -> list[Handled]:
        """Handle many messages from ``…/alive`` topics with one Redis round trip for the
        valid ones (SPEC §6: ≥ 5 000 alive messages/s per relay). Bad ones are dead-lettered
        one by one exactly as :meth:`handle` does. Returns one :class:`Handled` per item.

        Raises:
            relay.store.StoreError / StoreDataError: as :meth:`handle`; for a data error the
                caller falls back to :meth:`handle` per message, so one bad message cannot
                take the others with it.
        """
        results: list[Handled | None] = [None] * len(items)
        good: list[Alive] = []
        where: list[int] = []
        for i, (topic_name, payload) in enumerate(items):
            try:
                msg = decode_for_topic(topic_name, payload)
            except ValidationError as exc:
                results[i] = self._dead_letter(topic_name, payload, f"invalid: {exc}")
                continue
            if not isinstance(msg, Alive):
                results[i] = self.handle(topic_name, payload)
            elif not self._registered(msg.device):
                results[i] = self._dead_letter(topic_name, payload, f"unknown device {msg.device!r}: not in the registry")
            else:
                good.append(msg)
                where.append(i)
        self.store.update_alives(good)
        for i in where:
            results[i] = Handled("alive")
        self.counts["alive"] += len(where)
        return results  # type: ignore[return-value]

    def handle(self, topic: str, payload: bytes) -> Handled:
        """Run the pipeline for one message.

        Bad input never raises: it is dead-lettered and counted.

        Raises:
            relay.store.StoreError: Redis is unavailable; nothing was acked, so the caller
                must not acknowledge the MQTT message (the broker or the device will send it
                again).
            relay.store.StoreDataError: Redis refused the data; the caller dead-letters the
                message (retrying would block every message behind it).
        """
        if self.limiter is not None and topic.endswith("/event"):  # issue 15: flood fast path
            dev = topic.split("/")[1] if topic.count("/") == 2 else ""
            if dev and self.limiter.fast_reject(dev, payload):
                return self._coalesce(dev, "an event")
        try:
            msg = decode_for_topic(topic, payload)
        except ValidationError as exc:
            salvaged = salvage_alarm(topic, payload, exc)  # issue 15: an alarm stays an alarm
            if salvaged is None:
                return self._dead_letter(topic, payload, f"invalid: {exc}")
            self._dead_letter(topic, payload, f"invalid: {exc} (the alarm itself was delivered, without its data)")
            msg, payload = salvaged, encode(salvaged)
        if isinstance(msg, Ack):
            return self._dead_letter(topic, payload, "invalid: ack messages are relay → device only")
        if isinstance(msg, Event) and self.limiter is not None and not self.limiter.allow(msg):
            return self._coalesce(msg.device, msg.id)  # issue 15: a routine flood costs one decode per message
        if self.store.device(msg.device) is None:
            return self._dead_letter(topic, payload, f"unknown device {msg.device!r}: not in the registry")

        if isinstance(msg, Alive):
            self.store.update_alive(msg)
            self.counts["alive"] += 1
            return Handled("alive")
        if isinstance(msg, Status):
            self.store.update_status(msg)
            self.counts["status"] += 1
            return Handled("status")

        problem = reference_problem(self.store, msg)  # issue 15: cancels only own open alarms
        if problem is not None:
            return self._dead_letter(topic, payload, problem)
        msg, payload = strip_location_off_shift(self.store, msg, payload)  # issue 13: only on shift or with an alarm
        is_new = self.store.store_event(msg, payload)
        if is_new:
            note_reference(self.store, msg)
            note_sequence(self.store, msg)
            flag_clock(self.store, msg)  # issue 15: far-off device clock → kept, flagged
        elif (stored := conflicting(self.store, msg)) is not None:  # issue 15: same id, other content
            return self._conflict(topic, payload, msg, stored)
        # Ack only now that Redis has it; a resend is acked again (the first ack may be lost).
        self.publish_ack(msg.device, Ack(id=msg.id, stage="received", ts=time.time(), detail=self._received_detail(msg)))
        if not is_new:
            rec = self.store.event(msg.id)
            if rec is not None and rec[1].get("arc") == "acked":
                self.publish_ack(msg.device, Ack(id=msg.id, stage="arc", ts=time.time(), detail={"repeat": True}))
        self.counts["stored" if is_new else "duplicate"] += 1
        log.info("event %s (%s) %s", msg.id, msg.kind, "stored" if is_new else "duplicate, acked again")
        if self.on_stored is not None:
            self.on_stored(msg, is_new)
        return Handled("stored" if is_new else "duplicate", event=msg)

    def _received_detail(self, event: Event) -> dict:
        if self.received_detail is None:
            return {}
        try:
            return self.received_detail(event)
        except Exception:  # the ack goes out whatever the hook does
            log.exception("received-ack detail hook failed for %s", event.id)
            return {}
    def _coalesce(self, device: str, what: str) -> Handled:
        """A routine event over its device's rate limit: not stored, not acked (the device
        keeps it and resends later), counted; one fault per device now and then."""
        self.counts["coalesced"] += 1
        reason = f"rate limit: routine events of {device} over its share; {what} not taken (the device resends it)"
        if self.limiter is not None and self.limiter.fault_due(device):
            record_fault(self.store, device, RATE_LIMIT,
                         f"device {device} sends routine events faster than its share "
                         f"({self.limiter.coalesced.get(device, 0)} coalesced so far): check it")
        return Handled("dead_letter", reason=reason)

    def _conflict(self, topic: str, payload: bytes, msg: Event, stored: Event) -> Handled:
        """An event id came again with other content (relay/conflicts.py): fault, derived
        alarm, dead letter of the copy, and the device told in its ``received`` ack."""
        derived, ack, reason = resolve_conflict(self.store, msg, stored)
        self._dead_letter(topic, payload, reason)
        self.publish_ack(msg.device, ack)
        self.counts["conflict"] += 1
        if derived is None:
            return Handled("dead_letter", reason=reason)
        if self.on_stored is not None:
            self.on_stored(derived, True)
        return Handled("stored", event=derived, reason=reason)

    def _dead_letter(self, topic: str, payload: bytes, reason: str) -> Handled:
        device = "?"
        try:
            device = parse_topic(topic)[0]
        except ValidationError:
            pass
        log.warning("dead letter from %s on %r: %s", device, topic[:80], reason)
        self.store.dead_letter(topic, payload, reason)
        self.counts["dead_letter"] += 1
        return Handled("dead_letter", reason=reason)

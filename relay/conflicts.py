"""Same event id, different content (issue 15): never dropped, never silent.

A device's event id is ``<device>:<seq>`` with a persisted sequence (SPEC §2). A device whose
state was lost (SD card restored from an old image) reuses ids. The relay compares the
content of a resend with what it stored:

* the same content is an ordinary resend (acked again, dispatched once);
* other content is a *conflict*: an operator-visible fault names the device
  (:data:`relay.faults.ID_REUSED`, "event ids reused: check its state"); a conflicting
  **alarm** is delivered under a derived id (:func:`derived_seq`: same device, a sequence in a
  range devices never reach, deterministic so its resends are deduplicated); any other
  conflicting event is dead-lettered with the reason. Either way the device is told: its
  ``received`` ack carries ``detail = {"conflict": …, "delivered_as": <id> | None,
  "next_seq": <n>}``.

Device side: the relay keeps each device's highest sequence (:func:`note_sequence`); the
device moves its counter to ``next_seq`` on such an ack (``device.queue.EventQueue.
raise_sequence``), so after one detected reuse no further id is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Final

from protocol.messages import Ack, Event, encode

from .faults import ID_REUSED, record_fault
from .store import Store, device_key

#: Derived sequences live in [2**52, 2**52 + 2**48): far beyond any device counter.
DERIVED_BASE: Final = 2**52

_HIGH_WATER = r"""
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq > cur then redis.call('SET', KEYS[1], ARGV[1]) return seq end
return cur
"""


def derived_seq(event: Event) -> int:
    """The sequence of the derived id for conflicting ``event``: a hash of its id and content."""
    canon = json.dumps([event.id, event.kind, event.ts, event.data,
                        dataclasses.asdict(event.position) if event.position else None],
                       sort_keys=True, separators=(",", ":"))
    return DERIVED_BASE + int.from_bytes(hashlib.sha256(canon.encode()).digest()[:6], "big")


def same_content(a: Event, b: Event) -> bool:
    """Whether two events with the same id say the same thing (kind, time, data, position).

    A position missing on one side does not make a conflict: the relay itself drops the position
    of a routine event that arrives off shift (issue 13, :func:`relay.retention.strip_location_off_shift`),
    so a resend of the same event may carry one that the stored copy lacks, or the other way round.
    """
    same_place = a.position is None or b.position is None or a.position == b.position
    return (a.kind, a.ts, a.data, a.origin) == (b.kind, b.ts, b.data, b.origin) and same_place


def note_sequence(store: Store, event: Event) -> int:
    """Remember the device's highest sequence; returns it. Derived ids are not counted.

    Raises:
        relay.store.StoreError.
    """
    script = getattr(store, "_hw_script", None)
    if script is None:
        script = store._hw_script = store.r.register_script(_HIGH_WATER)  # type: ignore[attr-defined]
    seq = event.seq if event.seq < DERIVED_BASE else 0
    return int(store._call(script, keys=[device_key(event.device, "hwseq")], args=[seq]))


def conflicting(store: Store, event: Event) -> Event | None:
    """The stored event with ``event``'s id if its content differs, else None.

    Raises:
        relay.store.StoreError.
    """
    rec = store.event(event.id)
    if rec is None or same_content(rec[0], event):
        return None
    return rec[0]


def resolve_conflict(store: Store, event: Event, stored: Event) -> tuple[Event | None, Ack, str]:
    """Handle a conflict: record the fault, store the derived alarm (alarms only).

    Returns:
        ``(derived alarm or None, the received ack for the device, a dead-letter reason)``.
    Raises:
        relay.store.StoreError.
    """
    record_fault(store, event.device, ID_REUSED,
                 f"event ids reused: check its state — device {event.device} sent {event.id} again as "
                 f"{event.kind!r} (stored: {stored.kind!r}); its queue or sequence was probably lost")
    next_seq = note_sequence(store, event) + 1
    derived = None
    if event.is_alarm:
        derived = dataclasses.replace(event, seq=derived_seq(event))
        store.store_event(derived, encode(derived))
    reason = (f"event id {event.id} reused with other content ({event.kind!r}, stored {stored.kind!r}); "
              + (f"alarm delivered as {derived.id}" if derived else "not delivered: only alarms are re-issued"))
    ack = Ack(id=event.id, stage="received", ts=time.time(),
              detail={"conflict": "event id reused with other content", "delivered_as": derived.id if derived else None,
                      "next_seq": next_seq})
    return derived, ack, reason

"""Relay-side check of an event's references to other events (issue 15 "every event field
checked"): a ``cancel`` is accepted only for an alarm of the same device that exists in the
event log and is still open; a ``listen_in`` (issue 11) only for a stored alarm of the same
device that no other listen-in announced.

``protocol.eventdata`` already refuses references to other devices' events and any
``restore``/``restores`` field from a device; this module adds what only the relay can know
(the event log, the alarm state). A refused event is dead-lettered with the reason and not
acked ``received``: if the alarm is merely not stored *yet* (two relays, the cancel overtook
its alarm on the other one), the device's resend gets through once it is (SPEC §2: an event
stays in the device queue until ``received``).
"""

from __future__ import annotations

from protocol.messages import ALARM_KINDS, Event

from .store import Store, event_key

#: Alarm states (relay/alarms.py) in which an alarm can no longer be cancelled.
CLOSED_STATES = frozenset({"cancelled", "restored"})
#: Field of the alarm's event record naming the cancel that closed it.
CANCELLED_BY = "cancelled_by"
#: Field of the alarm's event record naming the listen-in that announced its voice call.
LISTEN_IN_BY = "listen_in_by"


def reference_problem(store: Store, event: Event) -> str | None:
    """Why ``event``'s references are not acceptable, or None if they are (or it has none).

    Only device events are checked (relay-raised ones reference what the relay itself did).
    A resend of an event already stored is never refused here.

    Raises:
        relay.store.StoreError: Redis unavailable (the caller keeps the message unacked).
    """
    if event.origin != "device" or event.kind not in ("cancel", "listen_in"):
        return None
    if store.event(event.id) is not None:
        return None  # a resend: accepted the first time
    if event.kind == "listen_in":
        # A listen-in (606, issue 11) announces the voice call of one alarm of its device. It
        # goes to the ARC with the alarms (relay.fairshare.URGENT_EXTRA, never rate-limited),
        # so made-up ones must not get through; its alarm may be closed already (the device
        # rings what it announced).
        taken = "the listen-in of alarm {target!r} was already announced by {by}"
        return _alarm_problem(store, event, "alarm", LISTEN_IN_BY, taken) \
            or _claim(store, event, "alarm", LISTEN_IN_BY, taken)
    taken = "alarm {target!r} was already cancelled by {by}"
    problem = _alarm_problem(store, event, "cancels", CANCELLED_BY, taken)
    if problem is not None:
        return problem
    target = str(event.data.get("cancels", ""))
    state = _alarm_state(store, target)
    if state in CLOSED_STATES:
        return f"reference: alarm {target!r} is closed ({state})"
    return _claim(store, event, "cancels", CANCELLED_BY, taken)


def _alarm_problem(store: Store, event: Event, field: str, marker: str, taken: str) -> str | None:
    """The alarm named by ``event.data[field]`` must be a stored alarm of the same device,
    and not already claimed (``marker`` on its record) by another event; ``taken`` is the
    reason's text then (``{target}`` and ``{by}`` filled in)."""
    target = str(event.data.get(field, ""))
    rec = store.event(target)
    if rec is None:
        return f"reference: data.{field} names {target!r}, which is not a stored alarm (yet)"
    alarm, fields = rec
    if alarm.device != event.device:  # protocol already refuses this; defence in depth
        return f"reference: data.{field} names {target!r}, an event of another device"
    if alarm.kind not in ALARM_KINDS:
        return f"reference: data.{field} names {target!r}, a {alarm.kind!r} event, not an alarm"
    by = fields.get(marker)
    if by and by != event.id:
        return "reference: " + taken.format(target=target, by=by)
    return None


def _claim(store: Store, event: Event, field: str, marker: str, taken: str) -> str | None:
    """Mark the alarm as claimed by ``event`` *before* it is stored, in one atomic step
    (``HSETNX``): two relays handling two different cancels or listen-ins of one alarm at the
    same moment cannot both pass (found by a hostile trial: 39 × 606 for 20 alarms). A resend
    of the claiming event finds its own id and passes."""
    target = str(event.data.get(field, ""))
    key = event_key(target)
    store._call(store.r.hsetnx, key, marker, event.id)
    by = store._call(store.r.hget, key, marker)
    by = by.decode() if isinstance(by, bytes) else by
    if by != event.id:
        return "reference: " + taken.format(target=target, by=by)
    return None


def _alarm_state(store: Store, alarm_id: str) -> str:
    from .alarms import AlarmStore

    alarm = AlarmStore(store).get(alarm_id)
    return alarm.state if alarm is not None else ""


def note_reference(store: Store, event: Event) -> None:
    """After ``event`` (a cancel or a listen-in) was stored: mark its alarm as cancelled or
    announced by it, so a second, different one for the same alarm is refused.

    Raises:
        relay.store.StoreError.
    """
    if event.origin == "device" and event.kind == "cancel":
        target = str(event.data.get("cancels", ""))
        store._call(store.r.hsetnx, event_key(target), CANCELLED_BY, event.id)
    elif event.origin == "device" and event.kind == "listen_in":
        target = str(event.data.get("alarm", ""))
        store._call(store.r.hsetnx, event_key(target), LISTEN_IN_BY, event.id)

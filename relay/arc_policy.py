"""How an alarm is offered to one ARC receiver when it does not simply ACK (issue 14: "ARC
delivery that never abandons an alarm"), and the visible record of alarms no receiver took.

The ladder of one receiver (:func:`plan_steps`), each step one frame:

1. the format the receiver is known to take (learned, :mod:`relay.receiver_caps`), else the
   configured one, with as many extended-data blocks as it is known or configured to take;
2. after a DUH, a format NAK, or an unreadable/absent reply: the same with fewer blocks
   (all → 1 → 0; SPEC §4: "never drop the alarm for its extended data");
3. then the other format (``ADM-CID`` ↔ ``SIA-DCS``) if the receiver allows it
   (``[[arc.receivers]] format_fallback = true``) and the event has a code in it — the same
   block steps again;
4. then the next receiver (:class:`relay.arc.ArcClient`).

SIA DC-09 defines DUH as "unable to process an otherwise correctly received message": the
frame, not the link, is the problem, so re-sending the *same* frame is pointless, while a
simpler frame may pass. A receiver that refuses one Contact ID code in every variant while it
ACKs others does not know that code (e.g. 606 listen-in): that is learned per receiver and code,
and such a receiver is asked last for that code, so it never holds the alarm up at the others.

When every receiver refused, the dispatcher (:mod:`relay.dispatch`) keeps retrying with a
capped back-off while the alarm is open and records it in :class:`ArcFaults` (``/healthz``,
metrics, ``lonewatch status``) — except an informational event (:data:`INFORMATIONAL_KINDS`)
that every receiver refused for its code only: that is final (``arc = "code_refused"``) and no
lost alarm, because nobody's safety waits for it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from protocol.errors import ValidationError

log = logging.getLogger(__name__)

__all__ = ["ArcFaults", "INFORMATIONAL_KINDS", "Step", "other_format", "plan_steps"]

#: Event kinds whose refusal *by code* at every receiver is final (nobody waits for them):
#: listen-in notices (606), manual tests, shift bookkeeping.
INFORMATIONAL_KINDS: Final = frozenset({"listen_in", "test", "shift_start", "shift_end"})
#: Unreadable or absent replies at one step before the next (simpler) step is tried.
SILENT_PER_STEP: Final = 1
#: Redis sorted set of alarms that no receiver took yet: event id → since (Unix s).
FAULTS_KEY: Final = "lw:arcfaults"
#: Redis hash event id → ``kind|reason`` for :data:`FAULTS_KEY`.
FAULTS_INFO_KEY: Final = "lw:arcfaults:info"


@dataclass(frozen=True, slots=True)
class Step:
    """One rung of the ladder: send ``alarm`` (already in the step's format) with at most
    ``xdata`` extended-data blocks. ``trimmed``: fewer blocks than the receiver's plain cap."""

    alarm: Any  # relay.arc.ArcAlarm (no import: relay.arc imports this module)
    xdata: int
    trimmed: bool


def other_format(alarm: Any) -> Any | None:
    """``alarm`` in the other DC-09 format (ADM-CID ↔ SIA-DCS), or None when its Contact ID
    code has no SIA-DCS code (:func:`protocol.sia.sia_code`)."""
    fmt = "SIA-DCS" if alarm.fmt == "ADM-CID" else "ADM-CID"
    try:
        return dataclasses.replace(alarm, fmt=fmt)
    except ValidationError:
        return None


def plan_steps(alarm: Any, receiver: Any, view: Any, planner: Any) -> list[Step]:
    """The ladder for ``alarm`` at ``receiver`` given what is known (``view``, a
    :class:`relay.receiver_caps.CapsView`). ``planner(alarm, limit)`` returns the blocks for a
    limit (:func:`relay.arc.plan_xdata`). Steps with the same frame content are not repeated.
    """
    first = alarm
    if view.fmt and view.fmt != alarm.fmt:
        swapped = other_format(alarm)
        if swapped is not None and getattr(receiver, "format_fallback", False):
            first = swapped
    variants = [first]
    if getattr(receiver, "format_fallback", False):
        second = other_format(first)
        if second is not None:
            variants.append(second)
    steps: list[Step] = []
    for variant in variants:
        full = len(planner(variant, None))
        plain = full if receiver.max_xdata_blocks is None else min(full, receiver.max_xdata_blocks)
        start = min(plain, view.xdata.get(variant.fmt, plain))
        seen: set[tuple[str, ...]] = set()
        for n in [start] + [n for n in (1, 0) if n < start]:
            blocks = planner(variant, n)
            if blocks in seen:
                continue
            seen.add(blocks)
            steps.append(Step(variant, n, len(blocks) < plain))
    return steps


class ArcFaults:
    """Alarms that no ARC receiver took yet (every receiver refused, or none reachable),
    shared by every relay: ``/healthz`` and ``lonewatch status`` read them, the dispatcher
    opens one when a round fails and closes it on the ACK. ``client``: redis-py client.
    Redis errors propagate (the caller is the dispatcher, which handles StoreError-like
    trouble by retrying); readers get them as exceptions too.
    """

    def __init__(self, client: Any) -> None:
        self.r = client

    def open(self, event_id: str, kind: str, reason: str, now: float | None = None) -> None:
        """Record (idempotent: the first time stays) that ``event_id`` is not delivered."""
        now = time.time() if now is None else now
        self.r.zadd(FAULTS_KEY, {event_id: now}, nx=True)
        self.r.hset(FAULTS_INFO_KEY, event_id, f"{kind}|{reason}")

    def close(self, event_id: str) -> None:
        """The alarm was delivered (or is final): no fault any more."""
        self.r.zrem(FAULTS_KEY, event_id)
        self.r.hdel(FAULTS_INFO_KEY, event_id)

    def list(self, count: int = 100) -> list[dict[str, Any]]:
        """Open faults, oldest first: ``{"event", "since", "kind", "reason"}``."""
        rows = self.r.zrange(FAULTS_KEY, 0, count - 1, withscores=True)
        out = []
        for member, since in rows:
            eid = member.decode() if isinstance(member, bytes) else member
            info = self.r.hget(FAULTS_INFO_KEY, eid) or b"|"
            kind, _, reason = (info.decode() if isinstance(info, bytes) else info).partition("|")
            out.append({"event": eid, "since": float(since), "kind": kind, "reason": reason})
        return out

    def count(self) -> int:
        """How many alarms no receiver took yet."""
        return int(self.r.zcard(FAULTS_KEY))

"""What a console user does to an alarm (issue 13 "Take charge", "Resolve").

**Take charge** is the acknowledgement of :mod:`relay.escalation` — the very function an
SMS reply ("OK") and ``lonewatch alarm ack`` call, :meth:`relay.alarms.AlarmStore.ack`, with
``via = "console"`` and the user's display name as who: escalation stops (the alarm leaves
the ``due`` set, so no further contact is told) and every contact told so far is told who
has it. One code path, so the three can never disagree.

**Resolve** closes the case with an outcome (:data:`console.queries.OUTCOMES`: genuine,
false alarm, test, technical) and a note; it takes charge first when nobody had (so the
contacts are told, as above). Stored on the alarm (``outcome``, ``resolved_by``,
``resolved_at``, ``resolve_note``) and in its history, atomically (one Lua script), once.

Every call is also written to the audit trail (:mod:`console.audit`).
"""

from __future__ import annotations

import time

from relay.alarms import AlarmStore
from relay.store import Store, escalation_key

from .audit import Audit
from .errors import Forbidden, UserError
from .queries import OUTCOMES
from .users import User

__all__ = ["add_note", "resolve", "take_charge"]

_RESOLVE = """
-- KEYS: alarm, log ; ARGV: outcome, by, now, note
local state = redis.call('HGET', KEYS[1], 'state')
if not state or redis.call('HGET', KEYS[1], 'kind') == false then return {'missing', ''} end
local had = redis.call('HGET', KEYS[1], 'outcome')
if had and had ~= '' then return {'already', had} end
if state == 'open' or state == 'unanswered' or state == 'with_arc' then return {'open', state} end
redis.call('HSET', KEYS[1], 'outcome', ARGV[1], 'resolved_by', ARGV[2], 'resolved_at', ARGV[3], 'resolve_note', ARGV[4])
local detail = 'outcome: ' .. ARGV[1]
if ARGV[4] ~= '' then detail = detail .. '; note: ' .. ARGV[4] end
redis.call('XADD', KEYS[2], '*', 'at', ARGV[3], 'what', 'resolved', 'contact', ARGV[2], 'channel', 'console', 'detail', detail)
return {'resolved', ARGV[1]}
"""


def _require(user: User, permission: str) -> None:
    if not user.may(permission):
        raise Forbidden(f"role {user.role} may not do this")


def take_charge(store: Store, user: User, alarm_id: str, *, addr: str = "") -> tuple[str, str]:
    """Acknowledge ``alarm_id`` as ``user`` (see the module docstring). Returns what
    :meth:`relay.alarms.AlarmStore.ack` returns: ``("acked", name)``, ``("already", first)``,
    ``("closed", state)`` or ``("missing", "")``.

    Raises:
        Forbidden: the role may not act (a viewer; also audited).
        StoreError: Redis unavailable.
    """
    audit = Audit(store)
    if not user.may("act"):
        audit.record(user.login, user.role, "take_charge", target=alarm_id, outcome="refused", detail="role may not act", addr=addr)
        raise Forbidden(f"role {user.role} may not take charge")
    outcome, who = AlarmStore(store).ack(alarm_id, user.name, "console")
    audit.record(user.login, user.role, "take_charge", target=alarm_id, outcome=outcome, detail=who, addr=addr)
    return outcome, who


def resolve(store: Store, user: User, alarm_id: str, outcome: str, note: str = "", *, addr: str = "",
            now: float | None = None) -> tuple[str, str]:
    """Resolve with ``outcome`` and ``note`` (≤ 500 characters). Returns ``("resolved",
    outcome)``, ``("already", earlier outcome)`` or ``("missing", "")``; ``("closed", state)``
    when taking charge first was refused.

    Raises:
        Forbidden: the role may not act. UserError: unknown outcome. StoreError: Redis.
    """
    audit = Audit(store)
    if not user.may("act"):
        audit.record(user.login, user.role, "resolve", target=alarm_id, outcome="refused", detail="role may not act", addr=addr)
        raise Forbidden(f"role {user.role} may not resolve")
    if outcome not in OUTCOMES:
        raise UserError(f"outcome must be one of {', '.join(OUTCOMES)}")
    note = " ".join(note.split())[:500]
    alarms = AlarmStore(store)
    keys = [escalation_key("alarm", alarm_id), escalation_key("log", alarm_id)]
    script = store.r.register_script(_RESOLVE)
    for _ in range(2):
        stamp = f"{time.time() if now is None else now:.3f}"
        r = store._call(script, keys=keys, args=[outcome, user.name, stamp, note])
        result, value = r[0].decode(), r[1].decode()
        if result != "open":
            break
        acked, who = alarms.ack(alarm_id, user.name, "console")  # take charge first (one code path)
        audit.record(user.login, user.role, "take_charge", target=alarm_id, outcome=acked, detail=who + " (resolving)", addr=addr)
        if acked not in ("acked", "already"):
            result, value = "closed", who
            break
    audit.record(user.login, user.role, "resolve", target=alarm_id, outcome=result, detail=f"{outcome}: {note}"[:500], addr=addr)
    if result == "resolved":
        from .figures import record_fact

        record_fact(store, alarm_id)
    return result, value


def add_note(store: Store, user: User, alarm_id: str, text: str, *, addr: str = "") -> bool:
    """Append a note to the alarm's history. Returns False for an unknown alarm.

    Raises:
        Forbidden: the role may not act. UserError: empty note. StoreError: Redis.
    """
    _require(user, "act")
    text = " ".join(text.split())[:500]
    if not text:
        raise UserError("the note is empty")
    alarms = AlarmStore(store)
    if alarms.get(alarm_id) is None:
        return False
    alarms.note(alarm_id, "note", text, contact=user.name, channel="console")
    Audit(store).record(user.login, user.role, "note", target=alarm_id, detail=text, addr=addr)
    return True

"""Alarms, their escalation state and history, in Redis (issue 4 "Escalation to contacts").

One alarm per alarm event (its id is the event id). Every state change is one Lua script, so
a relay restart or a second relay instance continues an escalation exactly where it was and
each step happens once:

* :meth:`AlarmStore.open` — creates the alarm (idempotent: a dispatch job run twice opens
  it once) with a snapshot of its ordered contacts; escalating alarms enter the ``due`` set.
* :meth:`AlarmStore.step` — claims a due alarm: tells the next contact (a job per channel
  in the ``outbox:sms`` / ``outbox:email`` streams), advances the step and sets the next
  deadline ``escalate_after_s`` later — only if the deadline is really due and the step is
  the one the caller read, so of two relays racing for it exactly one wins.
* :meth:`AlarmStore.ack`, :meth:`AlarmStore.close` (cancel 406 / restore) — end the
  escalation and queue the news for every contact told so far.

Keys (:func:`relay.store.escalation_key`, hash tag ``{esc}``): ``alarm:<id>`` hash,
``log:<id>`` history stream, ``due`` zset (alarm id → deadline, Unix s), ``alarms`` zset
(alarm id → opened at), ``outbox:<channel>`` streams (consumer group ``notifiers``),
``bynumber:<e164>`` set of alarms told to that phone, ``ref`` counter, ``inbox`` stream of
inbound SMS. Alarm records and histories expire after :data:`ALARM_TTL_S`.

States: ``open`` (escalating, or under ``arc_only`` waiting for the ARC's answer),
``with_arc`` (``arc_only`` and the ARC took it), ``acked``, ``unanswered`` (every contact
told ``max_rounds`` times, nobody acknowledged: stays listed), ``cancelled``, ``restored``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Final

import redis

from .registry import Contact
from .store import Store, StoreError, escalation_key

__all__ = ["ALARM_TTL_S", "Alarm", "AlarmStore", "CHANNELS", "GROUP", "OPEN_STATES"]

#: How long alarm records and histories are kept, seconds (30 days, like events).
ALARM_TTL_S: Final = 30 * 24 * 3600
#: Outbox streams, one per kind of channel.
CHANNELS: Final = ("sms", "email")
GROUP: Final = "notifiers"
#: States in which an alarm still needs someone.
OPEN_STATES: Final = frozenset({"open", "unanswered"})

# Lua helpers shared by the scripts. KEYS[1] alarm hash, KEYS[2] log stream, KEYS[3] due zset,
# KEYS[4] outbox:sms, KEYS[5] outbox:email.
_TELL_NOTIFIED = """
local function tell_notified(msg, now)
  local contacts = cjson.decode(redis.call('HGET', KEYS[1], 'contacts') or '[]')
  local told = tonumber(redis.call('HGET', KEYS[1], 'notified') or '0')
  for i = 1, told do
    local c = contacts[i]
    if c['phone'] and c['phone'] ~= '' then
      redis.call('XADD', KEYS[4], '*', 'alarm', ARGV[1], 'contact', i - 1, 'msg', msg, 'at', now)
    end
    if c['email'] and c['email'] ~= '' then
      redis.call('XADD', KEYS[5], '*', 'alarm', ARGV[1], 'contact', i - 1, 'msg', msg, 'at', now)
    end
  end
  return told
end
"""

_OPEN = """
-- KEYS: alarm, log, due, alarms, ref ; ARGV: id, now, fields json, escalate 0/1, ttl, detail
local ttl = tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'early') == '1' and redis.call('HGET', KEYS[1], 'kind') == false then
    for k, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', KEYS[1], k, v) end
    redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
    redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', 'opened', 'detail', 'arrived after its ' .. redis.call('HGET', KEYS[1], 'state'))
    return 2
  end
  return 0
end
local ref = (redis.call('INCR', KEYS[5]) - 1) %% 999 + 1
for k, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'state', 'open', 'step', 0, 'notified', 0, 'escalating', ARGV[4], 'opened_at', ARGV[2], 'ref', ref)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', 'opened', 'detail', ARGV[6])
redis.call('EXPIRE', KEYS[2], ttl)
if ARGV[4] == '1' then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1]) end
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[2]) - ttl)
return 1
"""

_STEP = """
-- KEYS: alarm, log, due, outbox:sms, outbox:email, bynumber ; ARGV: id, now, expected step, ttl
local now = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score or tonumber(score) > now then return {-1} end
if redis.call('HGET', KEYS[1], 'state') ~= 'open' or redis.call('HGET', KEYS[1], 'escalating') ~= '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {-2}
end
local step = tonumber(redis.call('HGET', KEYS[1], 'step'))
if step ~= tonumber(ARGV[3]) then return {-3} end
local contacts = cjson.decode(redis.call('HGET', KEYS[1], 'contacts') or '[]')
local n = #contacts
local rounds = tonumber(redis.call('HGET', KEYS[1], 'max_rounds') or '3')
if n == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'unanswered')
  redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', 'unanswered', 'detail', 'no contacts to tell')
  return {-4}
end
if step >= n * rounds then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'unanswered')
  redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', 'unanswered',
             'detail', 'every contact told ' .. rounds .. ' time(s), nobody acknowledged')
  return {-5}
end
local idx = step % n
local c = contacts[idx + 1]
redis.call('HSET', KEYS[1], 'step', step + 1)
if step + 1 > tonumber(redis.call('HGET', KEYS[1], 'notified')) then
  redis.call('HSET', KEYS[1], 'notified', math.min(step + 1, n))
end
local channels = {}
if c['phone'] and c['phone'] ~= '' then
  redis.call('XADD', KEYS[4], '*', 'alarm', ARGV[1], 'contact', idx, 'msg', 'alarm', 'at', ARGV[2])
  redis.call('SADD', KEYS[6], ARGV[1])
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[4]))
  table.insert(channels, 'sms')
end
if c['email'] and c['email'] ~= '' then
  redis.call('XADD', KEYS[5], '*', 'alarm', ARGV[1], 'contact', idx, 'msg', 'alarm', 'at', ARGV[2])
  table.insert(channels, 'email')
end
local after = tonumber(redis.call('HGET', KEYS[1], 'escalate_after_s'))
redis.call('ZADD', KEYS[3], now + after, ARGV[1])
redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', 'escalated', 'contact', c['name'],
           'detail', 'contact ' .. (idx + 1) .. ' of ' .. n .. ', round ' .. (math.floor(step / n) + 1)
           .. ', by ' .. table.concat(channels, '+') .. '; next in ' .. after .. ' s without acknowledgement')
return {idx}
"""

_ACK = _TELL_NOTIFIED + """
-- KEYS: alarm, log, due, outbox:sms, outbox:email ; ARGV: id, now, by, via
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
if state == 'acked' then return {'already', redis.call('HGET', KEYS[1], 'acked_by') or ''} end
if state ~= 'open' and state ~= 'unanswered' and state ~= 'with_arc' then return {'closed', state} end
redis.call('HSET', KEYS[1], 'state', 'acked', 'acked_by', ARGV[3], 'acked_at', ARGV[2], 'ack_via', ARGV[4], 'escalating', 0)
redis.call('ZREM', KEYS[3], ARGV[1])
local told = tell_notified('acknowledged', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', 'acknowledged', 'contact', ARGV[3],
           'detail', 'by ' .. ARGV[4] .. '; ' .. told .. ' contact(s) told')
return {'acked', ARGV[3]}
"""

_CLOSE = _TELL_NOTIFIED + """
-- KEYS: alarm, log, due, outbox:sms, outbox:email ; ARGV: id, now, new state, detail, ttl
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', ARGV[3], 'early', '1', 'closed_at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
  redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', ARGV[3], 'detail', ARGV[4] .. ' (before the alarm itself arrived)')
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
  return {'early'}
end
if state == 'cancelled' or state == 'restored' then return {'already', state} end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'escalating', 0, 'closed_at', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
local told = tell_notified(ARGV[3], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', ARGV[3], 'detail', ARGV[4] .. '; ' .. told .. ' contact(s) told')
return {'closed', state}
"""

_ESCALATE_NOW = """
-- KEYS: alarm, log, due ; ARGV: id, now, what, detail
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
redis.call('XADD', KEYS[2], '*', 'at', ARGV[2], 'what', ARGV[3], 'detail', ARGV[4])
if (state ~= 'open' and state ~= 'with_arc') or redis.call('HGET', KEYS[1], 'escalating') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'open', 'escalating', 1)
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Alarm:
    """An alarm as stored: ``contacts`` is the snapshot taken when it opened (in order),
    ``step`` how many notifications were queued, ``notified`` how many distinct contacts were
    told, ``ref`` the short number contacts may quote in an SMS reply (1–999). ``fields``
    has every stored field as text (``worker``, ``site``, ``address``, ``lat`` …)."""

    id: str
    state: str
    kind: str
    ref: int
    step: int
    notified: int
    contacts: tuple[Contact, ...]
    fields: dict[str, str]

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)

    def float_or_none(self, key: str) -> float | None:
        value = self.fields.get(key, "")
        try:
            return float(value) if value else None
        except ValueError:
            return None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @classmethod
    def from_hash(cls, alarm_id: str, raw: dict[bytes, bytes]) -> Alarm:
        d = {k.decode(): v.decode() for k, v in raw.items()}
        contacts = tuple(Contact(**c) for c in json.loads(d.get("contacts", "[]")))
        return cls(alarm_id, d.get("state", ""), d.get("kind", ""), int(d.get("ref", 0) or 0),
                   int(d.get("step", 0) or 0), int(d.get("notified", 0) or 0), contacts, d)


def _contact_json(c: Contact) -> dict[str, str]:
    return {"name": c.name, "role": c.role, "phone": c.phone, "email": c.email, "language": c.language}


class AlarmStore:
    """Alarm state in Redis. Thread-safe. Every method raises
    :class:`relay.store.StoreError` when Redis fails (the caller retries later)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.r = store.r
        self._open = self.r.register_script(_OPEN.replace("%%", "%"))
        self._step = self.r.register_script(_STEP)
        self._ack = self.r.register_script(_ACK)
        self._close = self.r.register_script(_CLOSE)
        self._escalate_now = self.r.register_script(_ESCALATE_NOW)

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return self.store._call(fn, *args, **kw)

    @staticmethod
    def _keys(alarm_id: str) -> list[str]:
        return [escalation_key("alarm", alarm_id), escalation_key("log", alarm_id), escalation_key("due"),
                escalation_key("outbox", "sms"), escalation_key("outbox", "email")]

    # --- state changes ------------------------------------------------------------------

    def open(self, alarm_id: str, fields: dict[str, str | int | float], contacts: tuple[Contact, ...], *,
             escalate: bool, detail: str, now: float | None = None) -> int:
        """Create the alarm once. ``fields`` must hold ``escalate_after_s`` and
        ``max_rounds``; ``escalate`` puts it in the due set at once.

        Returns 1 opened, 0 existed already, 2 its cancel/restore had arrived first (the
        alarm is recorded but does not escalate)."""
        now = time.time() if now is None else now
        data = {k: str(v) for k, v in fields.items()}
        data["contacts"] = json.dumps([_contact_json(c) for c in contacts], ensure_ascii=False)
        keys = [escalation_key("alarm", alarm_id), escalation_key("log", alarm_id), escalation_key("due"),
                escalation_key("alarms"), escalation_key("ref")]
        args = [alarm_id, f"{now:.3f}", json.dumps(data, ensure_ascii=False), "1" if escalate else "0",
                ALARM_TTL_S, detail]
        return int(self._call(self._open, keys=keys, args=args))

    def due(self, now: float | None = None, limit: int = 20) -> list[str]:
        """Alarm ids whose next escalation step is due."""
        now = time.time() if now is None else now
        ids = self._call(self.r.zrangebyscore, escalation_key("due"), "-inf", now, start=0, num=limit)
        return [i.decode() for i in ids]

    def step(self, alarm_id: str, now: float | None = None) -> int | None:
        """Claim one due step of ``alarm_id`` (exactly once across relays). Returns the index
        of the contact told, or None if nothing was done (not due, lost the race, closed,
        or the list is exhausted: the alarm is then ``unanswered``)."""
        now = time.time() if now is None else now
        alarm = self.get(alarm_id)
        if alarm is None:
            self._call(self.r.zrem, escalation_key("due"), alarm_id)
            return None
        n = len(alarm.contacts)
        phone = alarm.contacts[alarm.step % n].phone if n else ""
        keys = self._keys(alarm_id) + [escalation_key("bynumber", phone or "-")]
        result = self._call(self._step, keys=keys, args=[alarm_id, f"{now:.3f}", alarm.step, ALARM_TTL_S])
        idx = int(result[0])
        return idx if idx >= 0 else None

    def ack(self, alarm_id: str, by: str, via: str, now: float | None = None) -> tuple[str, str]:
        """Acknowledge. Returns ``("acked", by)``, ``("already", first acknowledger)``,
        ``("closed", state)`` or ``("missing", "")``."""
        now = time.time() if now is None else now
        r = self._call(self._ack, keys=self._keys(alarm_id), args=[alarm_id, f"{now:.3f}", by, via])
        return r[0].decode(), r[1].decode()

    def close(self, alarm_id: str, state: str, detail: str, now: float | None = None) -> str:
        """End the alarm as ``cancelled`` or ``restored`` and queue the news for every contact
        told. Returns ``closed``, ``already`` or ``early`` (the alarm had not arrived yet)."""
        if state not in ("cancelled", "restored"):
            raise ValueError(f"close state must be cancelled or restored, got {state!r}")
        now = time.time() if now is None else now
        r = self._call(self._close, keys=self._keys(alarm_id), args=[alarm_id, f"{now:.3f}", state, detail, ALARM_TTL_S])
        return r[0].decode()

    def escalate_now(self, alarm_id: str, what: str, detail: str, now: float | None = None) -> int:
        """Record ``what`` and start escalating now if the alarm was not (``arc_only`` after
        an ARC failure). Returns 1 started, 0 recorded only, -1 unknown alarm."""
        now = time.time() if now is None else now
        keys = self._keys(alarm_id)[:3]
        return int(self._call(self._escalate_now, keys=keys, args=[alarm_id, f"{now:.3f}", what, detail]))

    def set_fields(self, alarm_id: str, **fields: str) -> None:
        """Update plain fields (e.g. ``arc_state``) of an existing alarm."""
        self._call(self.r.hset, escalation_key("alarm", alarm_id), mapping=fields)

    def note(self, alarm_id: str, what: str, detail: str = "", contact: str = "", channel: str = "",
             now: float | None = None) -> None:
        """Append one entry to the alarm's history."""
        now = time.time() if now is None else now
        entry = {"at": f"{now:.3f}", "what": what, "detail": detail[:500]}
        if contact:
            entry["contact"] = contact
        if channel:
            entry["channel"] = channel
        self._call(self.r.xadd, escalation_key("log", alarm_id), entry)

    # --- reading ------------------------------------------------------------------------

    def get(self, alarm_id: str) -> Alarm | None:
        """The alarm, or None if unknown (or expired)."""
        raw = self._call(self.r.hgetall, escalation_key("alarm", alarm_id))
        if not raw or b"kind" not in raw:
            return None
        return Alarm.from_hash(alarm_id, raw)

    def history(self, alarm_id: str) -> list[dict[str, str]]:
        """Every history entry, oldest first (``at``, ``what``, ``detail``, ``contact``,
        ``channel``)."""
        rows = self._call(self.r.xrange, escalation_key("log", alarm_id))
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows]

    def recent(self, count: int = 100, *, open_only: bool = False) -> list[Alarm]:
        """The newest ``count`` alarms, newest first (only open/unanswered ones if asked)."""
        ids = self._call(self.r.zrevrange, escalation_key("alarms"), 0, -1 if open_only else count - 1)
        out = []
        for raw_id in ids:
            alarm = self.get(raw_id.decode())
            if alarm is not None and (not open_only or alarm.is_open):
                out.append(alarm)
            if len(out) >= count:
                break
        return out

    def alarms_for_number(self, e164: str) -> list[Alarm]:
        """Alarms that were told to this phone number (any state), newest first."""
        ids = self._call(self.r.smembers, escalation_key("bynumber", e164))
        alarms = [a for a in (self.get(i.decode()) for i in ids) if a is not None]
        # Newest first; alarms opened in the same instant by their ref (then id), so the
        # "several alarms are open" SMS lists them in the same order every time.
        return sorted(alarms, key=lambda a: (float(a.get("opened_at", "0") or 0), a.ref or 0, a.id), reverse=True)

    def log_inbound(self, number: str, text: str, result: str) -> None:
        """Keep an inbound SMS and what became of it (``inbox`` stream, capped)."""
        fields = {"at": f"{time.time():.3f}", "from": number, "text": text[:320], "result": result[:200]}
        self._call(self.r.xadd, escalation_key("inbox"), fields, maxlen=10_000, approximate=True)

    # --- outbox (notification jobs) -------------------------------------------------------

    def ensure_groups(self) -> None:
        """Create the outbox consumer groups if missing."""
        for channel in CHANNELS:
            try:
                self.r.xgroup_create(escalation_key("outbox", channel), GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise StoreError(str(exc)) from exc
            except redis.RedisError as exc:
                raise StoreError(str(exc)) from exc

    def next_jobs(self, channel: str, consumer: str, *, block_ms: int, reclaim_idle_ms: int,
                  count: int = 5) -> list[tuple[str, dict[str, str]]]:
        """Notification jobs for ``consumer``: first ones a dead consumer left idle longer than
        ``reclaim_idle_ms``, else new ones (waiting up to ``block_ms``)."""
        key = escalation_key("outbox", channel)
        resp = self._call(self.r.xautoclaim, key, GROUP, consumer, reclaim_idle_ms, start_id="0-0", count=count)
        rows = [(jid, f) for jid, f in resp[1] if f]
        if not rows:
            got = self._call(self.r.xreadgroup, GROUP, consumer, {key: ">"}, count=count, block=block_ms)
            rows = [(jid, f) for _, entries in got or [] for jid, f in entries]
        return [(jid.decode(), {k.decode(): v.decode() for k, v in f.items()}) for jid, f in rows]

    def finish_job(self, channel: str, job_id: str) -> None:
        """XACK a notification job: its outcome is in the history."""
        self._call(self.r.xack, escalation_key("outbox", channel), GROUP, job_id)

    def queue_message(self, channel: str, alarm_id: str, contact: int, msg: str, extra: str = "") -> None:
        """Queue one message (``ambiguous`` …) to one contact of an alarm."""
        fields = {"alarm": alarm_id, "contact": contact, "msg": msg, "at": f"{time.time():.3f}"}
        if extra:
            fields["extra"] = extra
        self._call(self.r.xadd, escalation_key("outbox", channel), fields)

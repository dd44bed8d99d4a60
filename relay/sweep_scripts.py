"""Batched supervision sweep scripts (issue 14: 100 000 devices, deadlines at ≥ 1 700/s, AOF
``appendfsync always``): one sweep of *many* due index members costs three Redis round trips
— claim all (:data:`CLAIM_BATCH`), sweep all (:data:`SWEEP_MANY`, one call per Redis Cluster
slot, pipelined), settle all (:data:`SETTLE_BATCH`) — instead of three per device. Redis
fsyncs once per event-loop turn, so a batch pays one fsync where the per-device protocol
paid three per device.

Atomicity is unchanged (see :mod:`relay.redis_scripts`): claim and settle touch only the
index key, with the same compare-and-set on each member's score as the single-member
scripts; a device's sweep decides from the device's own ``sup`` hash whether anything is due,
so every expiry is raised exactly once whichever relays sweep. :data:`SWEEP_MANY` takes the
keys of devices of **one slot** (Redis Cluster) or of any devices (a single Redis, where
slots do not exist) — the caller groups them.

``hold`` (Unix s): a ``lost`` member due before it is not raised but put back at ``hold``
(the relay's broker link is down, or came back less than one alive interval ago: queued
alives flow in first, issue 14 "No false alarms from our own outages"). Check-ins are not held.
"""

from __future__ import annotations

from typing import Final

from .redis_scripts import _LIB

#: Claim due members: each whose score is still the one seen becomes the lease.
#: KEYS: index; ARGV: lease, member, seen, member, seen … Returns the claimed members.
CLAIM_BATCH: Final = r"""
local out = {}
for i = 2, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    table.insert(out, ARGV[i])
  end
end
return out
"""

#: Settle claimed members. KEYS: index; ARGV: lease, member,
#: next due or '', member, next …
SETTLE_BATCH: Final = r"""
for i = 2, #ARGV, 2 do
  local m, nxt = ARGV[i], ARGV[i + 1]
  local s = redis.call('ZSCORE', KEYS[1], m)
  if s and tonumber(s) == tonumber(ARGV[1]) then
    if nxt == '' then redis.call('ZREM', KEYS[1], m) else redis.call('ZADD', KEYS[1], nxt, m) end
  elseif nxt ~= '' then
    redis.call('ZADD', KEYS[1], 'LT', nxt, m)
  end
end
return 1
"""

#: Sweep many claimed members. KEYS: state, sup, unqueued of each device in ARGV order;
#: ARGV: now, interval, missed, grace, mode, ttl, requeue after, hold, then ``device, what``
#: pairs (what = lost / checkin / queue). Returns per device
#: ``{next due or '', n raised, n triples, [id, kind, json]…}`` concatenated.
SWEEP_MANY: Final = _LIB + r"""
local now, ttl, after, hold = tonumber(ARGV[1]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local res = {}
local k = 0
for a = 9, #ARGV, 2 do
  local dev, what = ARGV[a], ARGV[a + 1]
  local state, sup, unq = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  k = k + 3
  local prefix = 'lw:{' .. dev .. '}:event:'
  local nxt, out = nil, {}
  if what == 'lost' then
    local limit, mode = policy(sup, ARGV[2], ARGV[3], ARGV[4], ARGV[5])
    local h = tonumber(redis.call('HGET', sup, 'heard'))
    if not supervising(sup, mode) or redis.call('HGET', sup, 'lost') == '1' or not h then
      redis.call('HSET', sup, 'lost_idx', '0')
    elseif h + limit > now then
      nxt = h + limit
    elseif hold > now then
      nxt = hold
    else
      local due = h + limit
      redis.call('HSET', sup, 'lost', '1', 'lost_at', fmt(now), 'lost_idx', '0')
      out = raise(dev, prefix, sup, state, unq, 'lost_contact', now,
                  {last_heard = h, deadline = due, limit_s = limit, late_s = tonumber(fmt(now - due))}, ttl)
      redis.call('HSET', sup, 'lost_event', out[1])
    end
  elseif what == 'checkin' then
    if redis.call('HGET', sup, 'checkin_state') == 'armed' then
      local due = tonumber(redis.call('HGET', sup, 'checkin_due')) or now
      if due > now then
        nxt = due
      else
        redis.call('HSET', sup, 'checkin_state', 'raised')
        out = raise(dev, prefix, sup, state, unq, 'missed_checkin', now,
                    {checkin = redis.call('HGET', sup, 'checkin_event') or '', deadline = due, late_s = tonumber(fmt(now - due))}, ttl)
        redis.call('HSET', sup, 'checkin_raised', out[1])
      end
    end
  end
  local raised = out[1]
  for _, id in ipairs(redis.call('SMEMBERS', unq)) do
    local rec = redis.call('HMGET', prefix .. id, 'stored_at', 'json', 'queued')
    if not rec[2] or rec[3] ~= '0' then
      redis.call('SREM', unq, id)
    elseif id ~= raised then
      local at = (tonumber(rec[1]) or 0) + after
      if at <= now then
        table.insert(out, id); table.insert(out, cjson.decode(rec[2])['kind']); table.insert(out, rec[2])
        at = now + after
      end
      if not nxt or at < nxt then nxt = at end
    end
  end
  if raised and (not nxt or now + after < nxt) then nxt = now + after end
  if nxt then table.insert(res, fmt(nxt)) else table.insert(res, '') end
  if raised then table.insert(res, 1) else table.insert(res, 0) end
  table.insert(res, #out / 3)
  for _, v in ipairs(out) do table.insert(res, v) end
end
return res
"""

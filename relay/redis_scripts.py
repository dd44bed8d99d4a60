"""The Lua scripts behind :class:`relay.store.Store` (key layout: see :mod:`relay.store`).

Every script touches the keys of **one device** only (hash tag ``{<device>}``) or the one
supervision index key, so each runs atomically on a single Redis or on Redis Cluster. Keys
of a device's relay-raised events are built inside the scripts from the prefix passed in
``ARGV`` (``lw:{<device>}:event:``): they hash to the same slot as the declared keys.

Times are Unix seconds (relay clock, passed in ``ARGV``; relays need NTP, SPEC §7) and come
back as strings with millisecond precision (Redis truncates Lua numbers to integers).

Supervision state of a device lives in its ``sup`` hash:

==================  ===========================================================================
field               meaning
==================  ===========================================================================
``heard``           last time an alive or event arrived (relay clock)
``on_shift``        ``1`` between ``shift_start`` and ``shift_end``
``lost``            ``1`` while a ``lost_contact`` is raised; ``lost_event``, ``lost_at``
``lost_idx``        ``1`` when the index holds a ``lost:<device>`` member (≤ the true deadline)
``checkin_state``   ``armed`` / ``raised`` (relay raised) / ``device`` (device raised) / ``done``
``checkin_due``     relay-side check-in deadline; ``checkin_event``, ``checkin_raised``
``device_missed_seq``  sequence of the last device-side ``missed_checkin`` (issue 15: the
                    device's order, never its clock, decides)
``rseq``            counter of relay-raised event ids ``<device>:r<n>``
``p_interval`` …    per-device policy overrides (``p_missed``, ``p_grace``, ``p_mode``)
==================  ===========================================================================
"""

from __future__ import annotations

from typing import Final

#: Device state fields that tell where the worker is: stored only while on shift (issue 13).
LOCATION_FIELDS: Final = ("lat", "lon", "accuracy_m", "fixed_at", "place", "beacons",
                          "beacon", "beacon_rssi", "beacon_at")  # last three: issue 12 (relay/places.py)

#: Shared helpers, prepended to the device scripts.
_LIB: Final = "local LOCATION_LIST = {" + ", ".join(f"'{f}'" for f in LOCATION_FIELDS) + "}" + r"""
local LOCATION_FIELDS = {}
for _, f in ipairs(LOCATION_LIST) do LOCATION_FIELDS[f] = true end
local function fmt(t) return string.format('%.3f', t) end

local function policy(sup, d_interval, d_missed, d_grace, d_mode)
  local p = redis.call('HMGET', sup, 'p_interval', 'p_missed', 'p_grace', 'p_mode')
  local interval = tonumber(p[1]) or tonumber(d_interval)
  local missed = tonumber(p[2]) or tonumber(d_missed)
  local grace = tonumber(p[3]) or tonumber(d_grace)
  local mode = p[4] or d_mode
  return interval * missed + grace, mode
end

local function supervising(sup, mode)
  if mode == 'always' then return true end
  if mode == 'on_shift' then return redis.call('HGET', sup, 'on_shift') == '1' end
  return false
end

-- Create a relay-raised event (id <device>:r<n>) with the last known position, not yet
-- queued for dispatch (outbox: the caller XADDs it, a sweep re-queues it if the caller died).
local function raise(dev, prefix, sup, state, unq, kind, now, data, ttl)
  local n = redis.call('HINCRBY', sup, 'rseq', 1)
  local id = dev .. ':r' .. n
  local pos = cjson.null
  local st = redis.call('HMGET', state, 'lat', 'lon', 'accuracy_m', 'fixed_at', 'last_seen')
  if st[1] and st[2] and st[1] ~= '' and st[2] ~= '' then
    pos = {lat = tonumber(st[1]), lon = tonumber(st[2]), accuracy_m = tonumber(st[3]) or cjson.null,
           fixed_at = tonumber(st[4]) or tonumber(st[5]) or now}
  end
  local json = cjson.encode({v = 1, type = 'event', device = dev, seq = n, kind = kind, ts = now,
                             position = pos, data = data, origin = 'relay'})
  local key = prefix .. id
  redis.call('HSET', key, 'json', json, 'stored_at', fmt(now), 'arc', 'pending', 'queued', '0')
  redis.call('EXPIRE', key, ttl)
  redis.call('SADD', unq, id)
  return {id, kind, json}
end

-- The device was heard: remember when, and restore a raised lost contact.
local function heard(dev, prefix, sup, state, unq, now, ttl)
  redis.call('HSET', sup, 'heard', fmt(now))
  if redis.call('HGET', sup, 'lost') == '1' then
    local lost_event = redis.call('HGET', sup, 'lost_event') or ''
    local lost_at = tonumber(redis.call('HGET', sup, 'lost_at')) or now
    redis.call('HSET', sup, 'lost', '0')
    return raise(dev, prefix, sup, state, unq, 'contact_restore', now,
                 {restores = lost_event, lost_for_s = tonumber(fmt(now - lost_at))}, ttl)
  end
  return nil
end

-- The lost-contact deadline to put in the index with a plain ZADD, or '' when the index
-- already holds a member no later than the truth (or the device is not supervised).
local function lost_index(sup, now, limit, mode, force)
  if not supervising(sup, mode) or redis.call('HGET', sup, 'lost') == '1' then return '' end
  if force or redis.call('HGET', sup, 'lost_idx') ~= '1' then
    local h = tonumber(redis.call('HGET', sup, 'heard')) or now
    return fmt(h + limit)
  end
  return ''
end
"""

#: Store one device event (SPEC §3 pipeline): dedupe, record (not yet queued), state,
#: supervision transitions. Returns ``{status, lost_due, checkin_due, [id, kind, json]…}``
#: with status 0 duplicate (queued), 1 new, 2 duplicate not yet queued (queue it again),
#: 3 new but suppressed (device ``missed_checkin`` for a check-in the relay already raised).
STORE_EVENT: Final = _LIB + r"""
-- KEYS: event hash, state hash, sup hash, unqueued set
-- ARGV: json, now, event id, device, kind, event prefix, interval, missed, grace, mode,
--       checkin grace, event seq (0 for derived ids), check-in duration, ttl, [position field, value …]
local now, dev, kind, prefix, ttl = tonumber(ARGV[2]), ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[14])
local limit, mode = policy(KEYS[3], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
local out = {}
local r = heard(dev, prefix, KEYS[3], KEYS[2], KEYS[4], now, ttl)
if redis.call('EXISTS', KEYS[1]) == 1 then
  local status = 0
  if redis.call('HGET', KEYS[1], 'queued') == '0' then status = 2 end
  out = {status, lost_index(KEYS[3], now, limit, mode, false), ''}
  if r then for _, v in ipairs(r) do table.insert(out, v) end end
  return out
end
local status = 1
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'stored_at', fmt(now), 'arc', 'pending', 'queued', '0')
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('HSET', KEYS[2], 'last_seen', fmt(now), 'last_event', ARGV[3])
if #ARGV > 14 then  -- the event's position: the freshest known
  local pos = {}
  for i = 15, #ARGV do table.insert(pos, ARGV[i]) end
  redis.call('HSET', KEYS[2], unpack(pos))
end
local force, checkin_due = false, ''
if kind == 'shift_start' then
  redis.call('HSET', KEYS[3], 'on_shift', '1')
  force = true
elseif kind == 'shift_end' then
  redis.call('HSET', KEYS[3], 'on_shift', '0')
  redis.call('HDEL', KEYS[2], unpack(LOCATION_LIST))  -- off shift: forget where the worker was
elseif kind == 'checkin_start' then
  local last_missed = tonumber(redis.call('HGET', KEYS[3], 'device_missed_seq'))
  local seq = tonumber(ARGV[12])
  -- A check-in the device already reported missed (its alarm overtook this event in the
  -- device's queue: a later sequence) is not armed again: the ARC must not get a second 102.
  -- Sequences, not device timestamps: a device clock a year ahead must not switch
  -- supervision off (issue 15).
  if not (last_missed and seq > 0 and last_missed > seq) then
    local due = now + tonumber(ARGV[13]) + tonumber(ARGV[11])
    redis.call('HSET', KEYS[3], 'checkin_state', 'armed', 'checkin_event', ARGV[3], 'checkin_due', fmt(due))
    checkin_due = fmt(due)
  end
elseif kind == 'checkin_done' then
  redis.call('HSET', KEYS[3], 'checkin_state', 'done')
elseif kind == 'missed_checkin' then
  if tonumber(ARGV[12]) > 0 then redis.call('HSET', KEYS[3], 'device_missed_seq', ARGV[12]) end
  local cs = redis.call('HGET', KEYS[3], 'checkin_state')
  if cs == 'raised' then
    redis.call('HSET', KEYS[1], 'arc', 'suppressed', 'duplicate_of', redis.call('HGET', KEYS[3], 'checkin_raised') or '')
    status = 3
  elseif cs == 'armed' then
    redis.call('HSET', KEYS[3], 'checkin_state', 'device')
  end
end
out = {status, lost_index(KEYS[3], now, limit, mode, force), checkin_due}
if r then for _, v in ipairs(r) do table.insert(out, v) end end
return out
"""

#: Record an alive: state fields, heard, restore. Returns ``{lost_due, [id, kind, json]}``.
UPDATE_ALIVE: Final = _LIB + r"""
-- KEYS: state hash, sup hash, unqueued set
-- ARGV: now, device, event prefix, interval, missed, grace, mode, ttl, field, value, …
local now, dev, prefix, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[8])
local fields = {}
-- Data kept no longer than needed (issue 13): where the worker is, only while on shift.
local on_shift = redis.call('HGET', KEYS[2], 'on_shift') == '1'
for i = 9, #ARGV - 1, 2 do
  if on_shift or not LOCATION_FIELDS[ARGV[i]] then
    table.insert(fields, ARGV[i]); table.insert(fields, ARGV[i + 1])
  end
end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
local limit, mode = policy(KEYS[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
local r = heard(dev, prefix, KEYS[2], KEYS[1], KEYS[3], now, ttl)
local out = {lost_index(KEYS[2], now, limit, mode, false)}
if r then for _, v in ipairs(r) do table.insert(out, v) end end
return out
"""

#: After the events are on the dispatch stream: mark them queued (outbox done).
MARK_QUEUED: Final = r"""
-- KEYS: unqueued set; ARGV: event prefix, id, id, …
for i = 2, #ARGV do
  redis.call('SREM', KEYS[1], ARGV[i])
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 1 then
    redis.call('HSET', ARGV[1] .. ARGV[i], 'queued', '1')
  end
end
return #ARGV - 1
"""

#: Dispatch lease on an event: one dispatcher at a time sends it to the ARC, whatever
#: duplicate jobs exist. Returns ``missing`` / ``done`` (terminal ``arc`` state) / ``busy``
#: (another owner's lease is still valid) / ``ok`` (leased or renewed for ``owner``).
LEASE_EVENT: Final = r"""
-- KEYS: event hash; ARGV: owner, now, lease seconds, terminal state, terminal state, …
local arc = redis.call('HGET', KEYS[1], 'arc')
if not arc then return 'missing' end
for i = 4, #ARGV do if arc == ARGV[i] then return 'done' end end
local o = redis.call('HGET', KEYS[1], 'lease_owner')
local u = tonumber(redis.call('HGET', KEYS[1], 'lease_until'))
local now = tonumber(ARGV[2])
if o and o ~= ARGV[1] and u and u > now then return 'busy' end
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[1], 'lease_until', string.format('%.3f', now + tonumber(ARGV[3])))
return 'ok'
"""

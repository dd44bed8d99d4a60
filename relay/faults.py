"""Operator-visible faults per device (issue 15): conditions an operator must look at that
are not alarms — event ids reused with other content, a device clock far off, a device over
its rate limit. One Redis hash per device (``lw:{<device>}:faults``, hash tag = device id) maps
fault kind → JSON ``{"text", "count", "first", "last"}`` (relay clock, Unix s), so a flood
raises one fault per device and kind, with a count. Shown by ``lonewatch status`` (the
``faults`` column of :mod:`relay.status_report`) and logged at ERROR once per kind.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Final

from .store import Store, device_key

log = logging.getLogger(__name__)

#: Fault kinds (the text says what to do).
ID_REUSED: Final = "event_id_reused"
CLOCK: Final = "clock"
RATE_LIMIT: Final = "rate_limit"

_RECORD = r"""
-- KEYS: faults hash ; ARGV: kind, text, now
local old = redis.call('HGET', KEYS[1], ARGV[1])
local rec
if old then
  rec = cjson.decode(old)
  rec.count = rec.count + 1
  rec.last = tonumber(ARGV[3])
  rec.text = ARGV[2]
else
  rec = {text = ARGV[2], count = 1, first = tonumber(ARGV[3]), last = tonumber(ARGV[3])}
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return rec.count
"""


def record_fault(store: Store, device: str, kind: str, text: str, *, now: float | None = None) -> int:
    """Record (or count again) fault ``kind`` of ``device`` with ``text`` (which names the
    device). Returns how often it happened; the first time is logged at ERROR.

    Raises:
        relay.store.StoreError: Redis unavailable.
    """
    now = time.time() if now is None else now
    script = getattr(store, "_fault_script", None)
    if script is None:
        script = store._fault_script = store.r.register_script(_RECORD)  # type: ignore[attr-defined]
    count = int(store._call(script, keys=[device_key(device, "faults")], args=[kind, text, f"{now:.3f}"]))
    if count == 1:
        log.error("fault on device %s: %s", device, text)
    return count


def faults(store: Store, device: str) -> dict[str, dict]:
    """``{kind: {"text", "count", "first", "last"}}`` of ``device`` (empty if none).

    Raises:
        relay.store.StoreError.
    """
    raw = store._call(store.r.hgetall, device_key(device, "faults"))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def clear_fault(store: Store, device: str, kind: str) -> None:
    """Forget fault ``kind`` of ``device`` (an operator dealt with it)."""
    store._call(store.r.hdel, device_key(device, "faults"), kind)

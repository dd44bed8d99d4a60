"""The supervision part of :class:`relay.store.Store` (SPEC §3 "Supervision"): per-device
supervision settings and the deadline index (``lw:deadlines`` zset) that the sweeper claims,
sweeps and settles (:mod:`relay.supervision`, batched in :mod:`relay.sweep_batch`).

A mixin: it uses the store's Redis client (``self.r``), ``self._call`` and its Lua scripts;
import :class:`relay.store.Store`, never this class alone.
"""

from __future__ import annotations

import time
from typing import Any


from .store_keys import (
    INDEX,
    _s,
    device_key,
)


class SupervisionStore:
    """Supervision state and the deadline index; mixed into :class:`relay.store.Store`."""

    r: Any
    _call: Any

    def supervision_state(self, device_id: str) -> dict[str, str]:
        """The device's supervision hash: ``heard``, ``on_shift``, ``lost``, ``checkin_state`` …"""
        raw = self._call(self.r.hgetall, device_key(device_id, "sup"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def set_supervision(self, device_id: str, *, alive_interval_s: float | None = None, missed_alives: int | None = None,
                        grace_s: float | None = None, mode: str | None = None) -> None:
        """Per-device (or, called for each of its devices, per-site) supervision overrides;
        None removes an override (the relay-wide default applies). Takes effect at the
        device's next alive or event.

        Raises:
            ValueError: a value out of range or an unknown ``mode``.
        """
        if mode is not None and mode not in ("on_shift", "always", "off"):
            raise ValueError(f"supervision mode must be on_shift, always or off, got {mode!r}")
        for name, v in (("alive_interval_s", alive_interval_s), ("missed_alives", missed_alives), ("grace_s", grace_s)):
            if v is not None and (v < 0 or (name != "grace_s" and v <= 0)):
                raise ValueError(f"{name} must be positive, got {v!r}")
        sets = {f: v for f, v in (("p_interval", alive_interval_s), ("p_missed", missed_alives), ("p_grace", grace_s), ("p_mode", mode)) if v is not None}
        dels = [f for f, v in (("p_interval", alive_interval_s), ("p_missed", missed_alives), ("p_grace", grace_s), ("p_mode", mode)) if v is None]
        pipe = self.r.pipeline(transaction=True)
        key = device_key(device_id, "sup")
        if sets:
            pipe.hset(key, mapping=sets)
        pipe.hdel(key, *dels) if dels else None
        pipe.hset(key, "lost_idx", "0")  # re-index at the next alive: the deadline may be earlier now
        self._call(pipe.execute)

    def due_members(self, now: float, count: int = 500) -> list[tuple[str, float]]:
        """Index members due at ``now``: ``(member, score)``, earliest first."""
        rows = self._call(self.r.zrangebyscore, INDEX, "-inf", now, start=0, num=count, withscores=True)
        return [(_s(m), float(sc)) for m, sc in rows]

    def next_due(self) -> float | None:
        """The earliest score in the index, or None when it is empty."""
        rows = self._call(self.r.zrange, INDEX, 0, 0, withscores=True)
        return float(rows[0][1]) if rows else None

    def index_size(self) -> tuple[int, int]:
        """``(members, overdue members)`` of the supervision index (metrics)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(INDEX)
        pipe.zcount(INDEX, "-inf", time.time())
        total, overdue = self._call(pipe.execute)
        return int(total), int(overdue)

"""The console's audit trail: every write, every sign-in (issue 13 "every write in the audit
trail"; BS 8484 asks that operator actions on an alarm be recorded with their times).

Two records for an action on an alarm: one entry in the alarm's own history
(:meth:`relay.alarms.AlarmStore.note`, shown on the alarm page beside the relay's entries),
and one entry here, in ``lw:console:audit`` (Redis stream, capped at :data:`AUDIT_MAXLEN`)
with who, which role, from which address, what, on what, and the outcome. Also written by
``lonewatch console user …`` (``user`` = ``cli:<unix user>``).
"""

from __future__ import annotations

import time
from typing import Final

from relay.store import Store

from .users import console_key

__all__ = ["AUDIT_MAXLEN", "Audit"]

AUDIT_MAXLEN: Final = 100_000


class Audit:
    """Append to and read the audit stream. Raises :class:`relay.store.StoreError` when
    Redis is unavailable (a write that cannot be audited is not done: callers audit first
    where the order matters)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.key = console_key("audit")

    def record(self, user: str, role: str, action: str, *, target: str = "", outcome: str = "ok",
               detail: str = "", addr: str = "") -> None:
        """One entry: ``action`` such as ``login``, ``login_failed``, ``take_charge``,
        ``resolve``, ``note``, ``user_add``; ``outcome`` ``ok``/``refused``/…"""
        fields = {"at": f"{time.time():.3f}", "user": user[:80], "role": role, "action": action, "target": target[:120],
                  "outcome": outcome[:60], "detail": detail[:500], "addr": addr[:64]}
        self.store._call(self.store.r.xadd, self.key, fields, maxlen=AUDIT_MAXLEN, approximate=True)

    def recent(self, count: int = 200, *, target: str | None = None) -> list[dict[str, str]]:
        """The newest ``count`` entries, newest first (only those on ``target`` if given)."""
        rows = self.store._call(self.store.r.xrevrange, self.key, count=count if target is None else 10 * count)
        out = [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows]
        if target is not None:
            out = [e for e in out if e.get("target") == target][:count]
        return out

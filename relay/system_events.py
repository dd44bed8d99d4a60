"""System events of the installation (issue 14): our own faults and summaries — no relay has a
broker path, its restore, a mass loss of contact — kept in Redis (``lw:{sys}:events``, a
stream capped at 10 000 entries, read by ``lonewatch status`` and ``/healthz``), logged, and
sent to the administrators (``[notify] admins``: E.164 numbers by the SMS channels, e-mail
addresses by the e-mail channels of :mod:`relay.notify`), never to the workers' contacts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

log = logging.getLogger(__name__)

__all__ = ["EVENTS_KEY", "SystemEvents", "recent_system_events"]

EVENTS_KEY: Final = "lw:{sys}:events"
_MAXLEN: Final = 10_000


def recent_system_events(r: Any, count: int = 20) -> list[dict[str, str]]:
    """The newest ``count`` system events, oldest first: ``{"at", "kind", "detail", "relay"}``."""
    rows = r.xrevrange(EVENTS_KEY, count=count)
    out = []
    for _id, fields in reversed(rows):
        out.append({(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                    for k, v in fields.items()})  # fmt: skip
    return out


class SystemEvents:
    """Records system events and tells the administrators.

    Args:
        store: :class:`relay.store.Store`.
        instance: the relay's name (recorded with each event).
        admins: addresses: ``+<E.164>`` numbers and e-mail addresses.
        channels: ``{"sms": [...], "email": [...]}`` (:class:`relay.notify.Channel`), e.g.
            the escalation's; sends run in a background thread (a slow modem never holds
            up the caller).
    """

    def __init__(self, store: Any, instance: str, *, admins: Sequence[str] = (),
                 channels: Mapping[str, Sequence[Any]] | None = None) -> None:  # fmt: skip
        self.store, self.instance = store, instance
        self.admins = tuple(admins)
        self.channels = {k: list(v) for k, v in (channels or {}).items()}
        #: What was sent: ``(address, kind, ok)`` (tests, demo).
        self.sent: list[tuple[str, str, bool]] = []

    def record(self, kind: str, detail: str) -> None:
        """Keep the event in Redis, log it, tell the administrators. Never raises."""
        now = time.time()
        try:
            self.store.r.xadd(EVENTS_KEY, {"at": f"{now:.3f}", "kind": kind, "detail": detail, "relay": self.instance},
                              maxlen=_MAXLEN, approximate=True)  # fmt: skip
        except Exception as exc:
            log.error("system event %s not stored (%s): %s", kind, exc, detail)
        log.error("system event %s: %s", kind, detail)
        if self.admins:
            threading.Thread(target=self._tell, args=(kind, detail), name="system-events", daemon=True).start()

    def _tell(self, kind: str, detail: str) -> None:
        subject = f"lonewatch system event: {kind}"
        for to in self.admins:
            chans = self.channels.get("email" if "@" in to else "sms", [])
            ok = False
            for ch in chans:
                try:
                    ok = bool(getattr(ch.send(to, subject, f"{subject}\n{detail}"), "ok", False))
                except Exception:
                    log.exception("channel %s failed for an administrator", getattr(ch, "name", ch))
                if ok:
                    break
            if not chans:
                log.error("no channel to tell administrator %s about %s", to, kind)
            self.sent.append((to, kind, ok))

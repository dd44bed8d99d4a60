"""The installation's faults in one place (issue 14 "raise a visible fault"): alarms no ARC
receiver took (:class:`relay.arc_policy.ArcFaults`), the installation fault "no relay has a
broker subscription" (:mod:`relay.brokerlink`), live broker links and recent system events.
Read by ``/healthz`` (:mod:`relay.health`), ``/metrics`` and ``lonewatch status``.
"""

from __future__ import annotations

import time
from typing import Any

from .arc_policy import ArcFaults
from .brokerlink import LINKS_KEY, installation_fault
from .system_events import recent_system_events

__all__ = ["collect_faults", "render_faults"]


def collect_faults(r: Any, now: float | None = None) -> dict[str, Any]:
    """``{"arc_undelivered": [...], "installation_fault": bool, "installation_fault_since",
    "broker_links": n, "system_events": [...]}`` from redis-py client ``r``.
    Raises redis errors unchanged (callers decide how to show Redis trouble)."""
    now = time.time() if now is None else now
    fault = installation_fault(r)
    return {
        "arc_undelivered": ArcFaults(r).list(),
        "installation_fault": fault.get("state") == "raised",
        "installation_fault_since": float(fault["raised_at"]) if fault.get("state") == "raised" and fault.get("raised_at") else None,
        "broker_links": int(r.zcount(LINKS_KEY, now, "+inf")),
        "system_events": recent_system_events(r, 5),
    }


def render_faults(f: dict[str, Any], now: float | None = None) -> str:
    """Human lines for ``lonewatch status`` ("" when nothing is wrong)."""
    now = time.time() if now is None else now
    lines = []
    if f["installation_fault"]:
        since = f["installation_fault_since"]
        lines.append("FAULT: no relay has a broker subscription" + (f" (for {now - since:.0f} s)" if since else "")
                     + " — devices cannot reach the relays; the ARC was sent Contact ID 350")
    for a in f["arc_undelivered"]:
        lines.append(f"FAULT: {a['kind']} {a['event']} not taken by any ARC receiver for {now - a['since']:.0f} s "
                     f"({a['reason']}); retrying")
    return "".join(line + "\n" for line in lines)

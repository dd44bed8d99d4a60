"""Monthly alarm figures in the spirit of BS 8484 (issue 13 "Monthly figures"): alarms by
kind and by outcome, time to take charge (median and 90th percentile), false-alarm share,
per site; as a table and as CSV.

Alarm records expire after 30 days (:data:`relay.alarms.ALARM_TTL_S`), figures must outlive
them: each alarm leaves an anonymous *fact* — kind, site, state, outcome, opened and taken
times, no worker name, no position — in ``lw:console:facts:<YYYY-MM>`` (hash alarm id →
JSON), kept ``figures_keep_days`` after the month. Facts are written when an alarm is
resolved and refreshed from the live alarms whenever figures are computed and by the
console's live feed every minute (:mod:`console.live`).

Months are calendar months in UTC (the alarm's ``opened_at``, the relay's clock). The 90th
percentile is the nearest-rank percentile (the smallest value with at least 90 % of the
values at or below it). The false-alarm share is false alarms over resolved alarms, and the
worker's own cancels (CID 406) not yet resolved count as false alarms (the worker said so).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Any

from relay.store import Store, escalation_key

from .queries import OUTCOMES
from .users import console_key

__all__ = ["figures_csv", "month_of", "month_range", "monthly", "percentile", "record_fact", "refresh_month"]

DEFAULT_KEEP_DAYS = 400


def month_of(ts: float) -> str:
    """``"2026-12"`` for a Unix time (UTC)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m")


def month_range(month: str) -> tuple[float, float]:
    """``[start, end)`` Unix seconds of ``"YYYY-MM"`` (UTC). Raises ValueError."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=timezone.utc)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.timestamp(), end.timestamp()


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank ``p``-th percentile (0 < p ≤ 100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _fact(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    d = {k.decode(): v.decode() for k, v in raw.items()}
    if "kind" not in d or not d.get("opened_at"):
        return None
    return {"kind": d["kind"], "site": d.get("site", ""), "state": d.get("state", ""), "outcome": d.get("outcome", ""),
            "opened_at": float(d["opened_at"]), "acked_at": float(d["acked_at"]) if d.get("acked_at") else None,
            "ack_via": d.get("ack_via", "")}


def _write_facts(store: Store, facts: dict[str, dict[str, Any]], keep_days: int) -> None:
    by_month: dict[str, dict[str, str]] = defaultdict(dict)
    for alarm_id, f in facts.items():
        by_month[month_of(f["opened_at"])][alarm_id] = json.dumps(f, separators=(",", ":"))
    pipe = store.r.pipeline(transaction=False)
    for month, mapping in by_month.items():
        key = console_key(f"facts:{month}")
        pipe.hset(key, mapping=mapping)
        pipe.expireat(key, int(month_range(month)[1] + keep_days * 86400))
    if by_month:
        store._call(pipe.execute)


def record_fact(store: Store, alarm_id: str, keep_days: int = DEFAULT_KEEP_DAYS) -> None:
    """Write (or update) the fact of one alarm."""
    fact = _fact(store._call(store.r.hgetall, escalation_key("alarm", alarm_id)))
    if fact is not None:
        _write_facts(store, {alarm_id: fact}, keep_days)


def refresh_month(store: Store, month: str, keep_days: int = DEFAULT_KEEP_DAYS) -> int:
    """Update the facts of every live alarm opened in ``month``; returns how many."""
    start, end = month_range(month)
    ids = [i.decode() for i in store._call(store.r.zrangebyscore, escalation_key("alarms"), start, f"({end}")]
    if not ids:
        return 0
    pipe = store.r.pipeline(transaction=False)
    for alarm_id in ids:
        pipe.hgetall(escalation_key("alarm", alarm_id))
    facts = {i: f for i, f in zip(ids, (_fact(r) for r in store._call(pipe.execute))) if f is not None}
    _write_facts(store, facts, keep_days)
    return len(facts)


def _outcome(f: dict[str, Any]) -> str:
    if f["outcome"]:
        return f["outcome"]
    return "cancelled_by_worker" if f["state"] == "cancelled" else "unresolved"


def _summary(facts: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes = Counter(_outcome(f) for f in facts)
    ttc = [f["acked_at"] - f["opened_at"] for f in facts if f["acked_at"] is not None]
    resolved = sum(outcomes[o] for o in OUTCOMES) + outcomes["cancelled_by_worker"]
    false = outcomes["false_alarm"] + outcomes["cancelled_by_worker"]
    return {
        "alarms": len(facts), "by_kind": dict(sorted(Counter(f["kind"] for f in facts).items())),
        "by_outcome": {o: outcomes.get(o, 0) for o in (*OUTCOMES, "cancelled_by_worker", "unresolved")},
        "taken": len(ttc), "ttc_median_s": statistics.median(ttc) if ttc else None, "ttc_p90_s": percentile(ttc, 90),
        "false_alarm_share": (false / resolved) if resolved else None,
    }


def monthly(store: Store, month: str, *, keep_days: int = DEFAULT_KEEP_DAYS, refresh: bool = True) -> dict[str, Any]:
    """The figures of ``month`` (``"YYYY-MM"``): the summary of :func:`_summary` for all
    alarms plus ``sites`` (one summary per site, by name).

    Raises:
        ValueError: ``month`` is not ``YYYY-MM``. StoreError: Redis.
    """
    month_range(month)
    if refresh:
        refresh_month(store, month, keep_days)
    raw = store._call(store.r.hgetall, console_key(f"facts:{month}"))
    facts = [json.loads(v) for v in raw.values()]
    sites: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in facts:
        sites[f["site"] or "?"].append(f)
    out = _summary(facts)
    out["month"] = month
    out["sites"] = {name: _summary(fs) for name, fs in sorted(sites.items())}
    out["computed_at"] = time.time()
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    """A text cell a spreadsheet will not run: a leading ``= + - @`` (or tab/CR) gets a ``'``
    (OWASP "CSV Injection")."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def figures_csv(fig: dict[str, Any]) -> str:
    """One CSV row per site and one ``(all sites)`` row: month, site, alarms, one column per
    kind and per outcome, taken, median/p90 time to take charge (s), false-alarm share (0–1).
    Site names are guarded against formula injection (:func:`_cell`)."""
    kinds = sorted(fig["by_kind"])
    outcome_cols = list(fig["by_outcome"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["month", "site", "alarms", *[f"kind_{k}" for k in kinds], *[f"outcome_{o}" for o in outcome_cols],
                "taken_by_a_person", "take_charge_median_s", "take_charge_p90_s", "false_alarm_share"])
    for name, s in [("(all sites)", fig), *fig["sites"].items()]:
        w.writerow([fig["month"], _cell(name), s["alarms"], *[s["by_kind"].get(k, 0) for k in kinds],
                    *[s["by_outcome"].get(o, 0) for o in outcome_cols], s["taken"], _fmt(s["ttc_median_s"]),
                    _fmt(s["ttc_p90_s"]), _fmt(s["false_alarm_share"], 3)])
    return buf.getvalue()

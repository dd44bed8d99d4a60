"""The relay's side of readiness (issue 12): the ARC link answer in the shift-start round
trip, a record of every self-test result per shift, the ready timeout, and outage spans.

* **Round trip** — the device's ``shift_start`` is acked ``received`` with
  ``detail.arc_link`` (:meth:`ReadinessTracker.ack_detail`): ``none`` (no ARC configured, or
  the device's site is ``contacts_only``), ``up`` (a receiver answered its last NULL poll —
  :class:`relay.linktest.LinkTester` — or, without polls, the last ARC delivery of this
  installation succeeded within :data:`ARC_FRESH_S`), ``down`` (every polled receiver failed,
  or the last delivery failed), else ``unknown`` (the device then waits for the ``arc`` ack
  of its shift start, CID 401).
* **Records** — ``lw:{<dev>}:readiness`` hash: the current shift (``shift``, ``shift_at``),
  the last result (``ready`` 1/0, ``final``, ``failed`` checks, ``at``), ``notified``;
  ``lw:{<dev>}:readiness:log`` stream: every result and outage span (capped).
* **Ready timeout** — a shift start puts the device in ``lw:readiness:due`` at shift start
  + ``ready_timeout_s``; whichever relay removes the member first (``ZREM`` = 1) handles it,
  so it happens once across relays. No ready result by then → a notice of kind
  ``not_ready`` (:class:`relay.alarms.AlarmStore`, id ``<shift event id>/ready``) to the
  **first contact** only, in their language, with the failed checks; it shows in
  ``lonewatch alarm list`` and is closed as ``restored`` (the contact is told) when the
  device reports ready later or the shift ends.
* **Outages** — an ``unprotected`` event (neither MQTT nor SMS possible, with ``since``,
  ``until``, ``span_s``) goes to the readiness log and into the history of every alarm of
  the device opened during the span.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from protocol.messages import Event

from .store import PREFIX, Store, StoreError, device_key

__all__ = ["ARC_FRESH_S", "DUE_KEY", "ReadinessTracker", "notice_id"]

log = logging.getLogger(__name__)

DUE_KEY: Final = PREFIX + "readiness:due"
ARC_STATE_KEY: Final = PREFIX + "readiness:arc"
#: A last ARC delivery older than this says nothing about the link now, seconds.
ARC_FRESH_S: Final = 900.0
LOG_MAXLEN: Final = 500


def notice_id(shift_event_id: str) -> str:
    """Id of the not-ready notice of a shift (an :class:`relay.alarms.AlarmStore` record)."""
    return f"{shift_event_id}/ready"


class ReadinessTracker:
    """Readiness bookkeeping of one relay instance (all state in Redis).

    Args:
        store: Redis state. registry: :class:`relay.registry.RegistryStore` (first contact,
            site policy). alarms: :class:`relay.alarms.AlarmStore` for the notice.
        ready_timeout_s: see the module docstring. enabled: False = record only, tell nobody.
        arc_configured: whether this relay has ARC receivers at all.
        poll_status: ``() -> {receiver: PollStatus}`` of the link tester, or None.
        poll_s: how often due timeouts are looked for, seconds.
    """

    def __init__(self, store: Store, registry: Any, alarms: Any, *, ready_timeout_s: float = 300.0,
                 enabled: bool = True, arc_configured: bool = True,
                 poll_status: Callable[[], dict[str, Any]] | None = None, poll_s: float = 1.0) -> None:
        self.store, self.registry, self.alarms = store, registry, alarms
        self.ready_timeout_s, self.enabled, self.arc_configured = ready_timeout_s, enabled, arc_configured
        self.poll_status, self.poll_s = poll_status, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except StoreError as exc:
                log.error("readiness: redis unavailable (%s); retrying", exc)
            except Exception:
                log.exception("readiness: unexpected error")

    # --- the ARC link answer --------------------------------------------------------------

    def arc_link(self, device: str) -> str:
        """``none`` / ``up`` / ``down`` / ``unknown`` for ``device`` (module docstring)."""
        if not self.arc_configured:
            return "none"
        resolved = self.registry.resolve(device)
        if resolved is not None and resolved.policy == "contacts_only":
            return "none"
        polls = [p for p in (self.poll_status() if self.poll_status else {}).values() if p.ok is not None]
        if any(p.ok for p in polls):
            return "up"
        if polls:
            return "down"
        raw = self.store._call(self.store.r.hgetall, ARC_STATE_KEY)
        st = {k.decode(): float(v) for k, v in raw.items()}
        ok_at, fail_at = st.get("ok_at", 0.0), st.get("fail_at", 0.0)
        if max(ok_at, fail_at) < time.time() - ARC_FRESH_S:
            return "unknown"
        return "up" if ok_at >= fail_at else "down"

    def ack_detail(self, event: Event) -> dict[str, Any]:
        """Detail of the ``received`` ack (the pipeline's hook): ``arc_link`` on a shift start."""
        if event.kind != "shift_start":
            return {}
        return {"arc_link": self.arc_link(event.device)}

    def on_result(self, event: Event, outcome: object) -> None:
        """Dispatch hook: remember the last ARC delivery's success or failure (for
        :meth:`arc_link` when no NULL polls run)."""
        from .arc import ArcError, ArcResult

        field = "ok_at" if isinstance(outcome, ArcResult) else "fail_at" if isinstance(outcome, ArcError) else None
        if field is not None:
            try:
                self.store._call(self.store.r.hset, ARC_STATE_KEY, field, f"{time.time():.3f}")
            except StoreError:
                pass

    # --- events ---------------------------------------------------------------------------

    def on_stored(self, event: Event, is_new: bool) -> None:
        """Pipeline hook for every stored event; never raises (the pipeline goes on)."""
        if not is_new or event.kind not in ("shift_start", "shift_end", "readiness", "unprotected"):
            return
        try:
            getattr(self, "_on_" + event.kind)(event)
        except Exception:
            log.exception("readiness: could not record %s (%s)", event.id, event.kind)

    def _key(self, device: str) -> str:
        return device_key(device, "readiness")

    def _log(self, device: str, fields: dict[str, Any]) -> None:
        entry = {k: str(v) for k, v in fields.items()}
        self.store._call(self.store.r.xadd, device_key(device, "readiness:log"), entry, maxlen=LOG_MAXLEN,
                         approximate=True)

    def _on_shift_start(self, event: Event) -> None:
        now = time.time()
        pipe = self.store.r.pipeline(transaction=True)
        pipe.delete(self._key(event.device))
        pipe.hset(self._key(event.device), mapping={"shift": event.id, "shift_at": f"{now:.3f}"})
        pipe.zadd(DUE_KEY, {f"{event.device}|{event.id}": now + self.ready_timeout_s})
        self.store._call(pipe.execute)
        self._log(event.device, {"what": "shift_start", "shift": event.id, "at": f"{now:.3f}"})

    def _on_shift_end(self, event: Event) -> None:
        shift = self.store._call(self.store.r.hget, self._key(event.device), "shift")
        if shift is None:
            return
        shift = shift.decode()
        self.store._call(self.store.r.zrem, DUE_KEY, f"{event.device}|{shift}")
        self._close_notice(shift, "shift ended")

    def _on_readiness(self, event: Event) -> None:
        d = event.data
        checks = d.get("checks") if isinstance(d.get("checks"), dict) else {}
        failed = sorted(n for n, c in checks.items() if isinstance(c, dict) and c.get("required", True) and not c.get("ok"))
        details = {n: str(c.get("detail", ""))[:80] for n, c in checks.items() if isinstance(c, dict)}
        shift = str(d.get("shift") or "")
        now = time.time()
        fields = {"ready": "1" if d.get("ready") else "0", "final": "1" if d.get("final") else "0",
                  "failed": ",".join(failed), "checks": json.dumps(details, ensure_ascii=False)[:2000],
                  "at": f"{now:.3f}", "result_shift": shift}
        self.store._call(self.store.r.hset, self._key(event.device), mapping=fields)
        self._log(event.device, {"what": "readiness", "shift": shift, **{k: fields[k] for k in ("ready", "final", "failed", "at")}})
        if d.get("ready") and shift:
            self.store._call(self.store.r.zrem, DUE_KEY, f"{event.device}|{shift}")
            self._close_notice(shift, "the device reported ready")

    def _on_unprotected(self, event: Event) -> None:
        d = event.data
        since, until, span = float(d["since"]), float(d["until"]), float(d["span_s"])
        self.store._call(self.store.r.hset, self._key(event.device),
                         mapping={"unprotected_since": f"{since:.3f}", "unprotected_until": f"{until:.3f}",
                                  "unprotected_s": f"{span:.1f}"})
        self._log(event.device, {"what": "unprotected", "since": f"{since:.3f}", "until": f"{until:.3f}",
                                 "span_s": f"{span:.1f}"})
        detail = (f"the device had neither MQTT nor SMS for {span:.0f} s "
                  f"({time.strftime('%H:%M:%S', time.gmtime(since))}–{time.strftime('%H:%M:%S', time.gmtime(until))} UTC)")
        for alarm in self.alarms.recent(200):
            opened = float(alarm.get("occurred_at", "0") or 0)
            if alarm.get("device") == event.device and since - 60 <= opened <= until + 60:
                self.alarms.note(alarm.id, "unprotected", detail)
        log.warning("device %s: %s", event.device, detail)

    # --- the ready timeout ----------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Handle every due ready timeout once (across relays). Returns notices opened."""
        now = time.time() if now is None else now
        opened = 0
        for raw in self.store._call(self.store.r.zrangebyscore, DUE_KEY, "-inf", now, start=0, num=50):
            member = raw.decode()
            if not self.store._call(self.store.r.zrem, DUE_KEY, member):
                continue  # another relay has it
            device, _, shift = member.partition("|")
            opened += self._timeout(device, shift, now)
        return opened

    def _timeout(self, device: str, shift: str, now: float) -> int:
        rec = {k.decode(): v.decode() for k, v in self.store._call(self.store.r.hgetall, self._key(device)).items()}
        if rec.get("shift") != shift or (rec.get("ready") == "1" and rec.get("result_shift") == shift):
            return 0
        failed = rec.get("failed", "") if rec.get("result_shift") == shift else ""
        why = f"not ready: {failed}" if failed else "no self-test result from the device"
        self._log(device, {"what": "ready_timeout", "shift": shift, "detail": why, "at": f"{now:.3f}"})
        log.error("device %s not ready %.0f s after its shift start (%s)", device, self.ready_timeout_s, why)
        if not self.enabled:
            return 0
        resolved = self.registry.resolve(device)
        if resolved is None or not resolved.contacts:
            log.error("device %s not ready, and there is no contact to tell", device)
            return 0
        first = resolved.contacts[0]
        site = resolved.site
        checks = rec.get("checks", "{}")
        try:
            details = json.loads(checks)
        except ValueError:
            details = {}
        reasons = "; ".join(f"{n}: {details.get(n, '')}".rstrip(": ") for n in failed.split(",") if n) or why
        fields: dict[str, str | int | float] = {
            "device": device, "kind": "not_ready", "occurred_at": rec.get("shift_at", f"{now:.3f}"),
            "worker": resolved.device.worker, "site": site.name if site else resolved.device.site,
            "address": site.address if site else "", "timezone": site.timezone if site else "",
            "lat": "", "lon": "", "policy": "first_contact", "escalate_after_s": 86400, "max_rounds": 1,
            "account": resolved.entry.account, "detail": reasons[:300],
        }
        n = self.alarms.open(notice_id(shift), fields, (first,), escalate=True,
                             detail=f"device not ready {self.ready_timeout_s:.0f} s after the shift start: {reasons}; "
                                    f"telling the first contact ({first.name})")
        self.store._call(self.store.r.hset, self._key(device), "notified", f"{now:.3f}")
        return 1 if n == 1 else 0

    def _close_notice(self, shift: str, why: str) -> None:
        nid = notice_id(shift)
        alarm = self.alarms.get(nid)
        if alarm is not None and alarm.is_open:
            self.alarms.close(nid, "restored", why)

    # --- reading (status) -----------------------------------------------------------------

    @staticmethod
    def record(store: Store, device: str) -> dict[str, str]:
        """The device's readiness hash (strings; empty when it never started a shift)."""
        raw = store._call(store.r.hgetall, device_key(device, "readiness"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    @staticmethod
    def history(store: Store, device: str, count: int = 50) -> list[dict[str, str]]:
        """The newest ``count`` readiness log entries, oldest first."""
        rows = store._call(store.r.xrevrange, device_key(device, "readiness:log"), count=count)
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in reversed(rows)]

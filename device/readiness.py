"""Ready or not: the self-test at every shift start, and the unprotected warning (issue 12;
DGUV rule 112-139 asks a lone-worker device to test itself at every start and to warn its
wearer when the network is unavailable).

**Readiness** (:class:`ReadinessCheck`), run when a shift starts. The ``shift_start`` event
itself is the round trip: the relay's ``received`` ack proves device → broker → relay →
Redis → device, and the relay puts its answer about the ARC link into that ack's detail
(``arc_link``: ``up`` = a receiver answered its last NULL poll or took an event lately,
``none`` = this site has no ARC, ``down``, ``unknown``); with ``unknown`` the ``arc`` ack of
the shift start (CID 401 reached the ARC) counts. Then modem registration, signal, battery,
place (GNSS fix or beacon), the button (not stuck pressed) and any further checks plugged in
with :meth:`ReadinessCheck.add_check` (the accelerometer's self-test, issue 10).

Result: one distinct pattern — ``ready`` or ``not_ready`` (:mod:`device.feedback`) — and a
``readiness`` event to the relay with every check (``data``: ``ready``, ``shift``, ``final``,
``checks`` {name: {ok, detail, required}}). Not ready: checked again every ``recheck_s`` until
ready (then ``ready`` is played and sent) or until ``ready_timeout_s`` has passed since the
shift start (NOT ready played and sent once more, ``final``). The relay tells the first contact
when no ready result came within its own ``ready_timeout_s`` (:mod:`relay.readiness`).

**Unprotected** (:class:`UnprotectedWatch`): while on shift, when neither MQTT (no broker
connection) nor SMS (no network registration, or no modem) could work for
``unprotected_after_s``, the ``unprotected`` pattern is played, and again every
``unprotected_repeat_s``, until one is back; then an ``unprotected`` event carries the span
(``since``/``until`` Unix s, ``span_s``) to the relay, which shows it in the device's history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.messages import Ack

from .place_config import ReadinessConfig

__all__ = ["CheckResult", "ReadinessCheck", "UnprotectedWatch", "REGISTERED"]

log = logging.getLogger(__name__)

#: Registration states in which the modem can send an SMS.
REGISTERED = frozenset({"home", "roaming"})


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: ``ok``, a short ``detail`` for the installer and the relay, and whether it
    is ``required`` for "ready" (informational checks are reported, never decide)."""

    ok: bool
    detail: str
    required: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail[:80], "required": self.required}


#: A check: ``() -> CheckResult`` (must return quickly; never raise — an exception is a failed check).
Check = Callable[[], CheckResult]


class ReadinessCheck:
    """The shift-start self-test of one device (see the module docstring).

    Args:
        cfg: ``[readiness]``.
        checks: name → check, run in order after the relay/ARC round trip.
        raise_event: ``(kind, data) -> Event``, the daemon's durable :meth:`raise_event`.
        play: ``(pattern) -> None``, the feedback.
        observer: ``(step, fields)``, the daemon's observer.
    """

    def __init__(self, cfg: ReadinessConfig, checks: dict[str, Check], *, raise_event: Callable[..., Any],
                 play: Callable[[str], None], observer: Callable[[str, dict[str, Any]], None]) -> None:
        self.cfg = cfg
        self.checks = dict(checks)
        self.raise_event, self.play, self.observer = raise_event, play, observer
        self._lock = threading.Condition()
        self._shift: str | None = None
        self._received = False
        self._arc: str | None = None  # up / none / down / unknown / acked / failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The newest acks seen, replayed by :meth:`start`: the relay may ack the shift start
        #: before the daemon has handed its id over.
        self._recent: list[Ack] = []
        self.last: dict[str, Any] | None = None  # the last result sent (``lonewatch device status``)

    def add_check(self, name: str, check: Check) -> None:
        """Plug a further check in (e.g. ``"accelerometer"`` from the man-down module)."""
        self.checks[name] = check

    # --- acks ---------------------------------------------------------------------------

    def on_ack(self, ack: Ack) -> None:
        """Feed every ack from the relay; only those for the current shift start count."""
        with self._lock:
            self._recent = (self._recent + [ack])[-20:]
            if ack.id != self._shift:
                return
            if ack.stage == "received":
                self._received = True
                link = ack.detail.get("arc_link")
                if isinstance(link, str) and self._arc not in ("acked",):
                    self._arc = link
            elif ack.stage == "arc":
                self._arc = "acked"
            elif ack.stage == "arc_failed" and self._arc != "acked":
                self._arc = "failed"
            self._lock.notify_all()

    # --- running ------------------------------------------------------------------------

    def start(self, shift_event_id: str) -> None:
        """Begin the self-test for the shift started by event ``shift_event_id`` (a thread;
        a test still running for an earlier shift is stopped)."""
        self.stop()
        with self._lock:
            self._shift, self._received, self._arc = shift_event_id, False, None
            early = [a for a in self._recent if a.id == shift_event_id]
        for ack in early:
            self.on_ack(ack)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(shift_event_id, self._stop),
                                        name="device-readiness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop a running self-test (shift ended, daemon stopping)."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def evaluate(self) -> dict[str, CheckResult]:
        """Every check now (relay and ARC from the acks so far), in order."""
        with self._lock:
            received, arc = self._received, self._arc
        out = {"relay": CheckResult(received, "relay acknowledged the shift start" if received
                                    else "no answer from the relay (broker or relay unreachable)")}
        arc_ok = arc in ("up", "none", "acked")
        arc_text = {"up": "relay reports the ARC link up", "none": "no ARC for this site",
                    "acked": "the ARC acknowledged the shift start", "down": "relay reports the ARC link DOWN",
                    "failed": "the ARC did not take the shift start", None: "no answer about the ARC link",
                    "unknown": "ARC link state unknown; waiting for the ARC"}.get(arc, f"ARC link {arc}")
        out["arc"] = CheckResult(arc_ok, arc_text)
        for name, check in self.checks.items():
            try:
                out[name] = check()
            except Exception as exc:  # a broken check is a failed check, never a crash
                log.exception("readiness check %s failed", name)
                out[name] = CheckResult(False, f"check failed: {type(exc).__name__}")
        return out

    def _wait_round_trip(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.cfg.ack_wait_s
        with self._lock:
            while not stop.is_set() and time.monotonic() < deadline:
                if self._received and self._arc in ("up", "none", "acked", "down", "failed"):
                    return
                self._lock.wait(max(0.01, min(0.5, deadline - time.monotonic())))

    def _run(self, shift: str, stop: threading.Event) -> None:
        started = time.monotonic()
        final_at = started + self.cfg.ready_timeout_s
        was: bool | None = None
        attempt = 0
        while not stop.is_set():
            self._wait_round_trip(stop)
            if stop.is_set():
                return
            attempt += 1
            results = self.evaluate()
            ready = all(r.ok for r in results.values() if r.required)
            final = ready or time.monotonic() >= final_at
            if ready != was or final:
                self._report(shift, ready, final, attempt, results)
                was = ready
            if final:
                return
            stop.wait(max(0.0, min(self.cfg.recheck_s, final_at - time.monotonic())))

    def _report(self, shift: str, ready: bool, final: bool, attempt: int, results: dict[str, CheckResult]) -> None:
        failed = [n for n, r in results.items() if r.required and not r.ok]
        try:
            self.play("ready" if ready else "not_ready")
        except Exception:  # the result must reach the relay whatever the pins do
            log.exception("could not play the readiness pattern")
        data = {"ready": ready, "final": final, "shift": shift, "attempt": attempt,
                "checks": {n: r.as_dict() for n, r in results.items()}}
        self.last = data
        if ready:
            log.info("shift start self-test: READY (attempt %d)", attempt)
        else:
            log.warning("shift start self-test: NOT ready (attempt %d%s): %s", attempt,
                        ", final" if final else "", "; ".join(f"{n}: {results[n].detail}" for n in failed))
        try:
            self.raise_event("readiness", data)
        except Exception:
            log.exception("could not queue the readiness result")
        self.observer("readiness", {"ready": ready, "final": final, "attempt": attempt, "failed": failed})


class UnprotectedWatch:
    """Warns the wearer while neither MQTT nor SMS could carry an alarm (module docstring).

    Args:
        cfg: ``[readiness]`` (``unprotected_after_s``, ``unprotected_repeat_s``).
        play: ``(pattern) -> None``. report: ``(kind, data) -> Event`` for the span.
        observer: ``(step, fields)``.
        clock: monotonic seconds; wall: Unix seconds (both injectable).
    """

    def __init__(self, cfg: ReadinessConfig, *, play: Callable[[str], None], report: Callable[..., Any],
                 observer: Callable[[str, dict[str, Any]], None], clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg, self.play, self.report, self.observer = cfg, play, report, observer
        self.clock, self.wall = clock, wall
        self._since: tuple[float, float] | None = None  # (monotonic, Unix) when both were lost
        self._next_warn: float | None = None
        self.warnings = 0

    @property
    def unprotected(self) -> bool:
        """True while the warning is on."""
        return self._next_warn is not None

    def tick(self, on_shift: bool, mqtt_ok: bool, sms_ok: bool) -> None:
        """Call about once a second with the current state."""
        now = self.clock()
        if on_shift and not mqtt_ok and not sms_ok:
            if self._since is None:
                self._since = (now, self.wall())
            if self._next_warn is None and now - self._since[0] >= self.cfg.unprotected_after_s:
                self._next_warn = now
                log.error("UNPROTECTED: neither MQTT nor SMS has worked for %.0f s", now - self._since[0])
            if self._next_warn is not None and now >= self._next_warn:
                self.warnings += 1
                self.play("unprotected")
                self.observer("unprotected_warning", {"since_s": round(now - self._since[0], 1), "n": self.warnings})
                self._next_warn = now + self.cfg.unprotected_repeat_s
            return
        if self._since is None:
            return
        since, warned = self._since, self._next_warn is not None
        self._since = self._next_warn = None
        if not warned:
            return  # a short gap: nothing to tell
        until = self.wall()
        span = max(0.0, until - since[1])
        log.warning("protected again (%s) after %.0f s without MQTT and SMS", "MQTT" if mqtt_ok else "SMS", span)
        self.observer("unprotected_over", {"span_s": round(span, 1)})
        try:
            self.report("unprotected", {"since": round(since[1], 3), "until": round(until, 3), "span_s": round(span, 1)})
        except Exception:
            log.exception("could not queue the unprotected span")

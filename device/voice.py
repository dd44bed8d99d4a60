"""Listen-in after an alarm, and call-back (issue 11; SPEC §5b "Voice"; config ``[voice]``,
:mod:`device.voiceconfig`).

Why: an ARC working to BS 8484 verifies an alarm by listening in; the DGUV rule for personal
emergency devices asks for a voice link that opens by itself with the alarm.

Order (never otherwise): the alarm is stored in the durable queue (fsync) → the daemon tells
:meth:`VoiceService.alarm_stored` → a ``listen_in`` event (Contact ID 606 "listen-in to
follow", ``data["alarm"]`` = the alarm's id) is stored → the voice thread dials ``[voice]
numbers`` in order. The alarm itself is sent by the sender thread as always, before and
independent of the call: a call never holds an alarm back, and an alarm raised during a call
is stored and sent at once (on LTE data runs alongside the call; on a 2G circuit-switched call
data may pause, and the alarm goes out when the call ends — the queue keeps it).

The call: silent alarms (``muted_kinds``) open with the speaker muted and the microphone on —
the ARC hears, an attacker hears nothing from the device; other kinds open two-way. The
operator's DTMF keys (``talk_key`` 1: two-way, ``listen_key`` 0: listen-in again, ``end_key``
#: end) switch it. Busy, not answered, or refused → the next number; after a round through
all numbers, ``retry_pause_s`` and another round while the alarm is open, up to
``max_attempts`` rounds. A dropped call (lost after the answer, 24.008 cause other than normal
clearing) is dialled again. The far end hanging up normally, or the end key, ends listen-in
for that alarm. A cancelled alarm (or a newer alarm, which gets its own call) stops retries.
A restart (power cut, crash) while an alarm's listen-in is unfinished calls again while that
alarm is still open (device state ``voice_pending``, in the same SQLite file as the queue).

Call-back: while an alarm is open and ``callback_window_s`` after it closed, calls from the
ARC's numbers, ``callback_numbers`` (the contacts) and the ``[sms]`` fallback numbers are
answered at once in listen-in mode (speaker muted); every other caller (and a withheld
number) is rejected. Outside alarms ``[voice] answer`` decides: ``reject`` (default),
``known`` (those numbers, two-way), ``any``. Caller ids are compared in E.164; a national
caller id (no ``+``) matches a listed number that ends with its digits (at least 7).

Verified against the modem simulator and the AT manuals only, not on a real SIM7600/EC25.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from modem.errors import ModemError, ModemGone, ModemTimeout
from modem.voice import CallController, CallEnd, CallStateError, VoiceUnavailable

log = logging.getLogger(__name__)

__all__ = ["PENDING_KEY", "VoiceService", "number_matches"]

#: Device state key of the alarm whose listen-in calls are not finished (survives restarts).
PENDING_KEY = "voice_pending"


def number_matches(caller: str, allowed: frozenset[str] | set[str]) -> bool:
    """Whether caller id ``caller`` is one of ``allowed`` (E.164). Exact match, or a national
    caller id (no ``+``, leading zeros dropped, ≥ 7 digits) that ends a listed number.
    ``""`` (withheld) never matches."""
    if not caller:
        return False
    if caller in allowed:
        return True
    if caller.startswith("+"):
        return False
    digits = caller.lstrip("0")
    return len(digits) >= 7 and digits.isdigit() and any(a.endswith(digits) for a in allowed)


class VoiceService:
    """The device's voice side. Made by the daemon when ``[voice] enabled`` and a modem exist.

    Args:
        daemon: the :class:`device.daemon.DeviceDaemon` (uses ``cfg``, ``supervisor``,
            ``open_alarm``, ``raise_event``, ``observer``).
        controller: the :class:`modem.voice.CallController` (default: on the daemon's modem).
        clock: monotonic clock, seconds.
    """

    def __init__(self, daemon: Any, controller: CallController | None = None, *,
                 clock: Any = time.monotonic) -> None:
        self.daemon = daemon
        self.cfg = daemon.cfg.voice
        self.supervisor = daemon.supervisor
        self.observer = daemon.observer
        self.clock = clock
        self.controller = controller or CallController(daemon.supervisor.modem, observer=self.observer)
        self._jobs: queue.Queue[tuple[str, str]] = queue.Queue()
        self._was_ready = False
        self._stop = threading.Event()
        self._last_alarm_at: float | None = None
        #: Set while a call (outgoing or answered) is up.
        self.in_call = threading.Event()
        sms = tuple(r.number for r in daemon.cfg.sms.recipients)
        #: Numbers whose calls are answered during an alarm (and for ``known``).
        self.allowed = frozenset(self.cfg.numbers) | frozenset(self.cfg.callback_numbers) | frozenset(sms)

    @classmethod
    def for_daemon(cls, daemon: Any) -> VoiceService | None:
        """The service for ``daemon``, or None when voice is off or there is no modem."""
        if not daemon.cfg.voice.enabled or daemon.supervisor is None:
            return None
        return cls(daemon)

    # -- from the daemon (any thread) -----------------------------------------------------

    def alarm_stored(self, event: Any) -> None:
        """Called by the daemon after ``event`` is in the durable queue. For an alarm of
        ``[voice] kinds``: store the ``listen_in`` event, then hand the call to the voice
        thread. Never raises for voice trouble (the alarm is stored and goes out anyway)."""
        if event.kind not in self.cfg.kinds:
            return
        self._last_alarm_at = self.clock()
        if not self.cfg.numbers:
            log.warning("alarm %s: no [voice] numbers, so no listen-in call", event.id)
            self.observer("voice_skipped", {"alarm": event.id, "reason": "no [voice] numbers"})
            return
        try:
            li = self.daemon.raise_event("listen_in", {"alarm": event.id, "numbers": len(self.cfg.numbers)})
        except Exception:
            log.exception("could not queue listen_in for %s; calling anyway", event.id)
            li = None
        self.observer("listen_in_queued", {"alarm": event.id, "id": li.id if li else None})
        self._remember(event.id, event.kind)
        self._jobs.put((event.id, event.kind))
        self.controller.wake()

    # -- the voice thread -----------------------------------------------------------------

    def run(self, stop: threading.Event, beat: Any = lambda: None) -> None:
        """The voice thread: alarm calls first, otherwise wait for incoming calls."""
        self._stop = stop
        self.controller.attach()
        pending = self.daemon.queue.get_state(PENDING_KEY)
        if isinstance(pending, dict) and pending.get("id") == self.daemon.open_alarm and pending.get("id"):
            # Restarted (power cut, crash) while an alarm's listen-in was not done: call again.
            self.observer("voice_resumed", {"alarm": pending["id"]})
            self._jobs.put((pending["id"], str(pending.get("kind", ""))))
        elif pending is not None:
            self._remember(None, None)
        while not stop.is_set():
            beat()
            try:
                if self.daemon.open_alarm is not None:
                    self._last_alarm_at = self.clock()
                self._keep_setup()
                try:
                    alarm_id, kind = self._jobs.get_nowait()
                except queue.Empty:
                    incoming = self.controller.wait_incoming(0.5)
                    if incoming is not None:
                        self._incoming(incoming.number, stop)
                    continue
                self._alarm_calls(alarm_id, kind, stop)
                if not stop.is_set():
                    self._remember(None, None, only_if=alarm_id)
            except Exception:
                log.exception("voice loop error; going on")
                stop.wait(1.0)
        self.controller.detach()

    def _remember(self, alarm_id: str | None, kind: str | None, only_if: str | None = None) -> None:
        """Keep the alarm whose listen-in is not done in the durable device state, so a restart
        calls again while it is open; None clears it (``only_if``: only if it is that alarm)."""
        try:
            if only_if is not None:
                current = self.daemon.queue.get_state(PENDING_KEY)
                if not isinstance(current, dict) or current.get("id") != only_if:
                    return
            self.daemon.queue.set_state(PENDING_KEY, None if alarm_id is None else {"id": alarm_id, "kind": kind})
        except Exception:
            log.exception("could not record the pending listen-in")

    def _keep_setup(self) -> None:
        ready = bool(self.supervisor.ready)
        if ready and not self._was_ready:
            try:
                self.controller.setup()
            except ModemError as exc:
                self.supervisor.note(exc)
                log.warning("voice set-up failed: %s", exc)
                return
            self.observer("voice_ready", {})  # caller id and call URCs are on (tests wait for it)
        self._was_ready = ready

    def _alarm_open(self, alarm_id: str) -> bool:
        return self.daemon.open_alarm == alarm_id

    def _alarm_calls(self, alarm_id: str, kind: str, stop: threading.Event) -> None:
        cfg = self.cfg
        muted = kind in cfg.muted_kinds
        drops = 0
        for round_no in range(1, cfg.max_attempts + 1):
            for number in cfg.numbers:
                while True:
                    if stop.is_set():
                        return
                    if not self._alarm_open(alarm_id):
                        self.observer("voice_stopped", {"alarm": alarm_id, "reason": "alarm no longer open"})
                        return
                    end = self._call(number, muted=muted, alarm_id=alarm_id, attempt=round_no)
                    if end is not None and end.answered and end.reason in ("remote_hangup", "local_hangup"):
                        self.observer("voice_done", {"alarm": alarm_id, "number": number, "reason": end.reason,
                                                     "duration_s": end.duration_s})
                        return
                    if end is not None and end.answered and end.reason == "dropped" and drops < cfg.max_attempts:
                        drops += 1
                        self.observer("voice_redial", {"alarm": alarm_id, "number": number, "drops": drops})
                        continue
                    break  # busy / no answer / failed → next number
            if round_no < cfg.max_attempts:
                self.observer("voice_retry", {"alarm": alarm_id, "round": round_no + 1,
                                              "pause_s": cfg.retry_pause_s})
                if stop.wait(cfg.retry_pause_s):
                    return
        self.observer("voice_gave_up", {"alarm": alarm_id, "rounds": cfg.max_attempts})
        log.error("alarm %s: no listen-in call got through in %d round(s)", alarm_id, cfg.max_attempts)

    def _call(self, number: str, *, muted: bool, alarm_id: str, attempt: int) -> CallEnd | None:
        """One outgoing call; None if the modem could not dial at all."""
        cc = self.controller
        try:
            self.supervisor.ensure_ready()
            cc.setup()
        except ModemError as exc:
            self.supervisor.note(exc)
            self.observer("voice_failed", {"alarm": alarm_id, "number": number, "error": str(exc)})
            return None
        self.observer("voice_calling", {"alarm": alarm_id, "number": number, "attempt": attempt,
                                        "muted": muted})
        self.in_call.set()
        try:
            return cc.dial(number, ring_timeout_s=self.cfg.ring_timeout_s,
                           on_answer=lambda: self._open_audio(muted), on_key=self._key,
                           stop=self._stop, max_call_s=self.cfg.max_call_s)
        except (VoiceUnavailable, ValueError) as exc:
            self.observer("voice_failed", {"alarm": alarm_id, "number": number, "error": str(exc)})
            return None
        except (ModemTimeout, ModemGone) as exc:
            self.supervisor.note(exc)
            self.observer("voice_failed", {"alarm": alarm_id, "number": number, "error": str(exc)})
            return None
        finally:
            self.in_call.clear()

    def _open_audio(self, muted: bool) -> None:
        """Audio at the answer: microphone on; speaker muted (listen-in) or at the level."""
        cc = self.controller
        for step in (lambda: cc.set_audio_path(self.cfg.audio_path),
                     lambda: cc.set_microphone(False),
                     lambda: cc.set_speaker(True) if muted else cc.set_speaker(False, self.cfg.speaker_level)):
            try:
                step()
            except ModemError as exc:  # listening is still worth it: go on, loudly
                log.error("voice audio set-up failed: %s", exc)
                self.observer("voice_audio_failed", {"error": str(exc)})
        self.observer("voice_mode", {"mode": "listen_in" if muted else "two_way"})

    def _key(self, key: str) -> bool:
        """A DTMF key from the operator; True ends the call."""
        cc, cfg = self.controller, self.cfg
        try:
            if key == cfg.talk_key:
                cc.set_speaker(False, cfg.speaker_level)
                self.observer("voice_mode", {"mode": "two_way", "key": key})
            elif key == cfg.listen_key:
                cc.set_speaker(True)
                self.observer("voice_mode", {"mode": "listen_in", "key": key})
            elif key == cfg.end_key:
                self.observer("voice_mode", {"mode": "end", "key": key})
                return True
        except ModemError as exc:
            log.error("could not switch audio for key %s: %s", key, exc)
            self.observer("voice_audio_failed", {"error": str(exc), "key": key})
        return False

    # -- incoming calls -------------------------------------------------------------------

    def _incoming(self, number: str, stop: threading.Event) -> None:
        cfg = self.cfg
        known = number_matches(number, self.allowed)
        last = self._last_alarm_at
        in_alarm = self.daemon.open_alarm is not None or (
            last is not None and self.clock() - last <= cfg.callback_window_s)
        if in_alarm and known:
            mode = "callback"
        elif not in_alarm and (cfg.answer == "any" or (cfg.answer == "known" and known)):
            mode = "answer"
        else:
            why = "unknown caller" if not known else f"answer = {cfg.answer}"
            self.observer("voice_rejected", {"number": number or "withheld", "reason": why, "in_alarm": in_alarm})
            try:
                self.controller.reject()
            except ModemError as exc:
                self.supervisor.note(exc)
            return
        muted = mode == "callback"
        self.observer("voice_incoming", {"number": number, "mode": mode})
        self.in_call.set()
        try:
            self.controller.answer()
            self._open_audio(muted)
            end = self.controller.converse(number, on_key=self._key, stop=stop, max_call_s=cfg.max_call_s)
            self.observer("voice_done", {"number": number, "reason": end.reason, "duration_s": end.duration_s,
                                         "mode": mode})
        except CallStateError as exc:
            self.observer("voice_ended", {"number": number, "reason": "caller_gone", "detail": str(exc)})
        except ModemError as exc:
            self.supervisor.note(exc)
            log.warning("incoming call from %s failed: %s", number, exc)
        finally:
            self.in_call.clear()

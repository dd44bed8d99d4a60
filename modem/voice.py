"""Voice calls on the AT modem (issue 11): dial, answer, reject, hang up, caller id, call state,
DTMF keys from the far end, microphone mute, speaker mute/level and audio path.

Built on :class:`modem.at.Modem` only through its public primitives — :meth:`Modem.command`
and a URC listener (``Modem.urc_listeners``) — so the driver's threading rules hold: the
listener runs in the reader thread and only parses the line (:func:`modem.calls.call_signal`)
and puts the signal on a queue; every command is sent from the caller's thread.

Commands (3GPP TS 27.007 unless noted; SIM7600 and Quectel EC25 AT manuals):

=====================  ==========================  =========================================
what                   SIM7600                     Quectel EC25
=====================  ==========================  =========================================
dial (voice: ``;``)    ``ATD<number>;``            ``ATD<number>;``
answer / hang up       ``ATA`` / ``AT+CHUP``       ``ATA`` / ``AT+CHUP`` (``ATH`` fallback)
caller id              ``AT+CLIP=1`` → ``+CLIP``   ``AT+CLIP=1`` → ``+CLIP``
call state             ``AT+CLCC`` (polled), URCs  ``AT+CLCC`` (polled), ``NO CARRIER`` …
                       ``AT+CLCC=1``, ``VOICE
                       CALL: BEGIN/END``
why it ended           ``AT+CEER``                 ``AT+CEER``
far-end DTMF           ``AT+DDET=1`` → ``+RXDTMF``  ``AT+QTONEDET=1`` → ``+QTONEDET: <ascii>``
microphone mute        ``AT+CMUT=1``               ``AT+CMUT=1``
speaker mute           ``AT+VMUTE=1``              ``AT+QRXGAIN=0`` (gain restored after)
speaker level          ``AT+CLVL=<0-5>``           ``AT+CLVL=<0-5>``
audio path             ``AT+CSDVC=1|3``            ``AT+QAUDMOD=0|2``
                       (handset | speaker phone)   (handset | loudspeaker)
=====================  ==========================  =========================================

Call state is taken from every source at once and in any order — URCs before the ``OK`` of
``ATD``, ``VOICE CALL: END`` after or before ``NO CARRIER``, a DTMF key before ``VOICE CALL:
BEGIN`` (a key proves the call is up), garbled or lost URCs — and checked by polling ``AT+CLCC``
every ``poll_s`` seconds: a call that ``AT+CLCC`` no longer lists is over, whatever URCs said.
Why a call ended comes from ``AT+CEER`` (:func:`modem.calls.ceer_reason`): normal clearing after
the answer is the far end hanging up; anything else after the answer is a dropped call.

Quectel sends no URC when the far end answers: the answer is seen by the next ``AT+CLCC`` poll
(up to ``poll_s`` later; a DTMF key is seen at once). A call dropped within that time counts
as not answered (``failed``): the caller moves to the next number instead of redialling.

Verified against the modem simulator (:mod:`modem.sim_calls`) and the AT manuals only, not on
real hardware.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .calls import DTMF_KEYS, CallInfo, CallSignal, call_signal, ceer_reason, parse_clcc
from .errors import CmeError, ModemError, ModemGone, ModemTimeout

__all__ = [
    "AUDIO_PATHS",
    "CallController",
    "CallEnd",
    "CallStateError",
    "Incoming",
    "VoiceError",
    "VoiceUnavailable",
]

log = logging.getLogger(__name__)

AUDIO_PATHS = ("handset", "speaker")
_CSDVC = {"handset": 1, "speaker": 3}  # SIM7600 AT+CSDVC
_QAUDMOD = {"handset": 0, "speaker": 2}  # Quectel AT+QAUDMOD
#: How long ``ATD`` may take to answer (SIM7600/Quectel answer OK at once for voice unless
#: ``+COLP`` is on; then only when the far end answers), seconds.
DIAL_TIMEOUT_S = 30.0
#: After ``RING``, how long to wait for the ``+CLIP`` that names the caller, seconds.
CLIP_WAIT_S = 1.5


class VoiceError(ModemError):
    """Root of voice-call errors (a :class:`modem.errors.ModemError`)."""


class VoiceUnavailable(VoiceError):
    """The modem refused to dial or answer (no network service, emergency calls only, no
    voice on this SIM/network…). ``reason`` is the modem's answer."""

    def __init__(self, what: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class CallStateError(VoiceError, RuntimeError):
    """A call request that does not fit the call state (answer with no incoming call…)."""


@dataclass(frozen=True)
class CallEnd:
    """How a call ended. ``reason``: ``busy``, ``no_answer`` (not answered in time, or
    ``NO ANSWER``), ``remote_hangup`` (normal clearing after the answer), ``dropped`` (lost
    after the answer for any other cause), ``local_hangup`` (we hung up: key, stop, time
    limit), ``failed`` (ended before the answer for another cause), ``caller_gone`` (an incoming
    call ended before it was answered). ``answered`` whether it was ever connected;
    ``duration_s`` seconds connected; ``number`` the other party; ``detail`` free text."""

    reason: str
    answered: bool
    duration_s: float = 0.0
    number: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Incoming:
    """An incoming call: ``number`` from ``+CLIP`` ("" = withheld or no caller id)."""

    number: str


class CallController:
    """Voice calls on one :class:`modem.at.Modem` (or anything with ``command``, ``flavour``
    and ``urc_listeners``).

    Args:
        modem: the modem.
        poll_s: seconds between ``AT+CLCC`` checks while a call is up or being set up.
        observer: optional ``(step, fields)`` hook: ``voice_dial``, ``voice_answered``,
            ``voice_key``, ``voice_audio``, ``voice_ended``, ``voice_garbled``.
        clock: monotonic clock (seconds), injectable for tests.
    """

    def __init__(self, modem: Any, *, poll_s: float = 1.0,
                 observer: Callable[[str, dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.modem = modem
        self.poll_s = poll_s
        self.observer = observer or (lambda step, fields: None)
        self.clock = clock
        self.signals: queue.Queue[CallSignal] = queue.Queue()
        #: Garbled call URCs seen (each one triggers an ``AT+CLCC`` check).
        self.garbled = 0
        #: Last audio state set: ``mic_muted``, ``speaker_muted``, ``level``, ``path``.
        self.audio: dict[str, Any] = {"mic_muted": False, "speaker_muted": False, "level": None,
                                      "path": None}
        self._rx_gain: int | None = None
        self._lock = threading.Lock()
        self._attached = False

    # -- URC side (reader thread) ---------------------------------------------------------

    def attach(self) -> None:
        """Start listening to the modem's URCs (idempotent)."""
        with self._lock:
            if not self._attached:
                self.modem.urc_listeners.append(self._on_urc)
                self._attached = True

    def detach(self) -> None:
        """Stop listening."""
        with self._lock:
            if self._attached:
                try:
                    self.modem.urc_listeners.remove(self._on_urc)
                except ValueError:
                    pass
                self._attached = False

    def _on_urc(self, line: str) -> None:
        sig = call_signal(line)
        if sig is not None:
            self.signals.put(sig)

    # -- set-up and audio -----------------------------------------------------------------

    def setup(self) -> list[str]:
        """Switch on caller id (``AT+CLIP=1``), far-end DTMF detection and, on SIM7600, call
        state URCs (``AT+CLCC=1``). Run after every modem (re)initialisation. Returns the
        optional commands the modem refused (logged; polling still finds the call state).

        Raises ModemTimeout / ModemGone (the modem is not usable)."""
        self.attach()
        refused = []
        cmds = ["AT+CLIP=1"]
        cmds += ["AT+DDET=1", "AT+CLCC=1"] if self.modem.flavour == "sim7600" else ["AT+QTONEDET=1"]
        for cmd in cmds:
            try:
                self.modem.command(cmd)
            except (ModemTimeout, ModemGone):
                raise
            except ModemError as exc:
                log.warning("modem refused %s (%s): that part of voice support is missing", cmd, exc)
                refused.append(cmd)
        return refused

    def set_microphone(self, muted: bool) -> None:
        """Mute (True) or open the microphone (``AT+CMUT``). Raises ModemError."""
        self.modem.command(f"AT+CMUT={int(muted)}")
        self._audio(mic_muted=muted)

    def set_speaker(self, muted: bool, level: int | None = None) -> None:
        """Mute the speaker/earpiece, or open it at ``level`` (``AT+CLVL``, 0–5). SIM7600:
        ``AT+VMUTE``; Quectel: downlink gain ``AT+QRXGAIN`` 0 (the gain read before is put
        back on unmute). Raises ModemError, ValueError for a level outside 0–5."""
        if level is not None and not 0 <= level <= 5:
            raise ValueError("speaker level must be 0-5")
        if self.modem.flavour == "sim7600":
            self.modem.command(f"AT+VMUTE={int(muted)}")
        elif muted:
            if self._rx_gain is None:
                try:
                    lines = self.modem.command("AT+QRXGAIN?")
                    self._rx_gain = int(lines[0].partition(":")[2].strip()) if lines else None
                except (ModemError, ValueError):
                    self._rx_gain = None
            self.modem.command("AT+QRXGAIN=0")
        else:
            if self._rx_gain is not None:
                self.modem.command(f"AT+QRXGAIN={self._rx_gain}")
        if level is not None and not muted:
            self.modem.command(f"AT+CLVL={level}")
            self._audio(level=level)
        self._audio(speaker_muted=muted)

    def set_audio_path(self, path: str) -> None:
        """``"handset"`` (earpiece + microphone lines) or ``"speaker"`` (loudspeaker)."""
        if path not in AUDIO_PATHS:
            raise ValueError(f"audio path must be one of {AUDIO_PATHS}")
        if self.modem.flavour == "sim7600":
            self.modem.command(f"AT+CSDVC={_CSDVC[path]}")
        else:
            self.modem.command(f"AT+QAUDMOD={_QAUDMOD[path]}")
        self._audio(path=path)

    def _audio(self, **fields: Any) -> None:
        self.audio.update(fields)
        self.observer("voice_audio", dict(self.audio))

    # -- queries --------------------------------------------------------------------------

    def current_calls(self) -> list[CallInfo]:
        """``AT+CLCC`` → the voice calls the modem has now (garbled lines skipped, counted).
        Raises ModemError."""
        calls = []
        for line in self.modem.command("AT+CLCC"):
            if not line.upper().startswith("+CLCC"):
                continue
            try:
                info = parse_clcc(line)
            except ModemError:
                self.garbled += 1
                continue
            if info.voice:
                calls.append(info)
        return calls

    def end_reason(self) -> str:
        """``AT+CEER`` → :func:`modem.calls.ceer_reason` (``"dropped"`` if it fails)."""
        try:
            return ceer_reason(self.modem.command("AT+CEER"))
        except (ModemTimeout, ModemGone):
            raise
        except ModemError:
            return "dropped"

    # -- calls ----------------------------------------------------------------------------

    def hang_up(self) -> None:
        """End every call (``AT+CHUP``; ``ATH`` if the modem lacks it). A ``NO CARRIER``
        instead of ``OK`` means it ended anyway. Raises ModemTimeout / ModemGone."""
        try:
            self.modem.command("AT+CHUP")
        except (ModemTimeout, ModemGone):
            raise
        except ModemError:
            try:
                self.modem.command("ATH")
            except (ModemTimeout, ModemGone):
                raise
            except ModemError as exc:
                log.info("ATH answered %s", exc)

    def reject(self) -> None:
        """Reject the ringing incoming call (hang up before answering)."""
        self.hang_up()
        self._drain(0.2)

    def wait_incoming(self, timeout_s: float) -> Incoming | None:
        """Wait up to ``timeout_s`` seconds for an incoming call; other call signals seen
        meanwhile are stale (no call of ours is up) and dropped. After ``RING`` the ``+CLIP``
        that names the caller is awaited up to :data:`CLIP_WAIT_S`."""
        deadline = self.clock() + timeout_s
        while True:
            left = deadline - self.clock()
            if left <= 0:
                return None
            try:
                sig = self.signals.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if sig.kind == "wake":  # put by :meth:`wake`
                return None
            if sig.kind == "clip":
                return Incoming(sig.number)
            if sig.kind == "ring":
                clip_by = self.clock() + CLIP_WAIT_S
                while self.clock() < clip_by:
                    try:
                        nxt = self.signals.get(timeout=max(0.01, clip_by - self.clock()))
                    except queue.Empty:
                        break
                    if nxt.kind == "clip":
                        return Incoming(nxt.number)
                return Incoming("")
            if sig.kind == "garbled":
                self._garbled(sig)

    def wake(self) -> None:
        """Make a waiting :meth:`wait_incoming` return None now (there is work to do)."""
        self.signals.put(CallSignal("wake"))

    def answer(self) -> None:
        """Answer the ringing call (``ATA``).

        Raises:
            CallStateError: no call is ringing any more (``NO CARRIER``: the caller hung up).
            VoiceUnavailable: the modem refused (``ERROR`` / ``+CME ERROR``).
            ModemTimeout / ModemGone."""
        try:
            self.modem.command("ATA", timeout_s=DIAL_TIMEOUT_S)
        except (ModemTimeout, ModemGone):
            raise
        except CmeError as exc:
            raise VoiceUnavailable("ATA", exc.meaning) from exc
        except ModemError as exc:
            final = str(exc).rsplit(": ", 1)[-1]
            if final in ("NO CARRIER", "NO ANSWER", "BUSY"):
                raise CallStateError(f"no call to answer ({final})") from exc
            raise VoiceUnavailable("ATA", final) from exc

    def dial(self, number: str, *, ring_timeout_s: float, on_answer: Callable[[], None] = lambda: None,
             on_key: Callable[[str], bool] = lambda key: False, stop: threading.Event | None = None,
             max_call_s: float = 3600.0) -> CallEnd:
        """Call ``number`` (``ATD<number>;``) and stay with the call until it ends.

        ``on_answer()`` runs once when the far end answers (set the audio there);
        ``on_key(key)`` for each DTMF key from the far end — True hangs up. ``stop`` set →
        hang up. Unanswered after ``ring_timeout_s`` → hang up, ``no_answer``; connected longer
        than ``max_call_s`` → hang up.

        Raises:
            ValueError: ``number`` is not a dialable number.
            VoiceUnavailable: the modem refused to dial (``ERROR``, ``+CME ERROR: 30`` …).
            ModemTimeout / ModemGone: the modem stopped answering (the call may be up:
                the caller should try :meth:`hang_up` after recovery).
        """
        if not number or not all(c.isdigit() or c in "+*#" for c in number) or len(number) > 32:
            raise ValueError(f"not a dialable number: {number!r}")
        self._drain(0.0)
        self.observer("voice_dial", {"number": number})
        try:
            self.modem.command(f"ATD{number};", timeout_s=DIAL_TIMEOUT_S)
        except (ModemTimeout, ModemGone):
            raise
        except CmeError as exc:
            raise VoiceUnavailable(f"ATD{number};", exc.meaning) from exc
        except ModemError as exc:
            final = str(exc).rsplit(": ", 1)[-1]
            reasons = {"BUSY": "busy", "NO ANSWER": "no_answer", "NO CARRIER": "failed",
                       "NO DIALTONE": "failed"}
            if final not in reasons:
                raise VoiceUnavailable(f"ATD{number};", final) from exc
            end = CallEnd(reasons[final], False, number=number, detail=final)
            self.observer("voice_ended", {"number": number, "reason": end.reason, "answered": False})
            return end
        return self._follow(number, answered=False, ring_timeout_s=ring_timeout_s,
                            on_answer=on_answer, on_key=on_key, stop=stop, max_call_s=max_call_s)

    def converse(self, number: str, *, on_key: Callable[[str], bool] = lambda key: False,
                 stop: threading.Event | None = None, max_call_s: float = 3600.0) -> CallEnd:
        """Stay with an answered call (after :meth:`answer`) until it ends; keys as in
        :meth:`dial`. Raises ModemTimeout / ModemGone."""
        return self._follow(number, answered=True, ring_timeout_s=0.0, on_answer=lambda: None,
                            on_key=on_key, stop=stop, max_call_s=max_call_s)

    # -- the call loop --------------------------------------------------------------------

    def _follow(self, number: str, *, answered: bool, ring_timeout_s: float,
                on_answer: Callable[[], None], on_key: Callable[[str], bool],
                stop: threading.Event | None, max_call_s: float) -> CallEnd:
        started = self.clock()
        connected_at: float | None = started if answered else None
        next_poll = started + self.poll_s
        seen_listed = False

        def connect(how: str) -> None:
            nonlocal connected_at
            if connected_at is None:
                connected_at = self.clock()
                self.observer("voice_answered", {"number": number, "how": how})
                on_answer()

        def finish(reason: str, detail: str = "") -> CallEnd:
            duration = 0.0 if connected_at is None else self.clock() - connected_at
            end = CallEnd(reason, connected_at is not None, round(duration, 3), number, detail)
            self.observer("voice_ended", {"number": number, "reason": reason,
                                          "answered": end.answered, "detail": detail})
            self._drain(0.3)
            return end

        def ended_by_network(detail: str) -> CallEnd:
            why = self.end_reason()
            if connected_at is None:
                why = why if why in ("busy", "no_answer") else "failed"
            elif why in ("busy", "no_answer"):
                why = "dropped"
            return finish(why, detail)

        while True:
            now = self.clock()
            if stop is not None and stop.is_set():
                self.hang_up()
                return finish("local_hangup", "stopped")
            if connected_at is None and now - started >= ring_timeout_s:
                self.hang_up()
                return finish("no_answer", f"not answered within {ring_timeout_s:g} s")
            if connected_at is not None and now - connected_at >= max_call_s:
                self.hang_up()
                return finish("local_hangup", f"call longer than {max_call_s:g} s")
            if now >= next_poll:
                next_poll = now + self.poll_s
                calls = self.current_calls()
                if not calls:
                    if seen_listed or connected_at is not None or now - started >= self.poll_s:
                        return ended_by_network("AT+CLCC lists no call")
                else:
                    seen_listed = True
                    if any(c.state == "active" for c in calls):
                        connect("AT+CLCC")
            try:
                sig = self.signals.get(timeout=max(0.01, min(0.2, next_poll - self.clock())))
            except queue.Empty:
                continue
            kind = sig.kind
            if kind == "begin":
                connect("VOICE CALL: BEGIN")
            elif kind == "clcc" and sig.info is not None:
                if sig.info.state == "active":
                    connect("+CLCC")
                elif sig.info.state == "disconnect":
                    return ended_by_network(sig.line)
            elif kind == "dtmf":
                connect("DTMF")  # a key from the far end proves the call is up
                self.observer("voice_key", {"number": number, "key": sig.key})
                if sig.key in DTMF_KEYS and on_key(sig.key):
                    self.hang_up()
                    return finish("local_hangup", f"key {sig.key}")
            elif kind == "end":
                # A stale or stray NO CARRIER / VOICE CALL: END must not end a call the modem
                # still has: ask AT+CLCC before believing it.
                if any(c.state in ("active", "held", "dialing", "alerting") for c in self.current_calls()):
                    log.info("ignored %r: AT+CLCC still lists the call", sig.line)
                    continue
                return ended_by_network(sig.line)
            elif kind in ("busy", "no_answer"):
                if connected_at is None:
                    return finish("busy" if kind == "busy" else "no_answer", sig.line)
                log.info("ignored %r during a connected call (stale or out of order)", sig.line)
            elif kind == "garbled":
                self._garbled(sig)
                next_poll = self.clock()  # ask AT+CLCC for the truth now

    def _garbled(self, sig: CallSignal) -> None:
        self.garbled += 1
        log.warning("garbled call URC %r: checking with AT+CLCC", sig.line)
        self.observer("voice_garbled", {"line": sig.line[:80]})

    def _drain(self, settle_s: float) -> None:
        """Drop stale call signals (the tail of an ended call: ``NO CARRIER`` after ``VOICE
        CALL: END``…), waiting ``settle_s`` seconds for late ones. Rings are kept."""
        keep = []
        deadline = self.clock() + settle_s
        while True:
            left = deadline - self.clock()
            try:
                sig = self.signals.get(timeout=left) if left > 0 else self.signals.get_nowait()
            except queue.Empty:
                break
            if sig.kind in ("ring", "clip"):
                keep.append(sig)
        for sig in keep:
            self.signals.put(sig)

"""The modem simulator's call model (issue 11): a far end that answers after a delay, is busy,
does not answer, hangs up, drops, sends DTMF keys; incoming calls with caller id.

Attached to every :class:`modem.simulator.ModemSimulator` as ``sim.calls``; it answers the call
and audio commands of :mod:`modem.voice` over the same pty as everything else, in the style of
the flavour (SIM7600: ``VOICE CALL: BEGIN`` / ``VOICE CALL: END: <hhmmss>`` / ``MISSED_CALL``,
``+RXDTMF: <key>``, ``AT+CLCC=1`` URCs; Quectel: only ``NO CARRIER`` / ``BUSY`` / ``NO ANSWER``
and ``+QTONEDET: <ascii>``). Commands: ``ATD<n>;``, ``ATA``, ``ATH``, ``AT+CHUP``, ``AT+CLCC``,
``AT+CLCC=<n>``, ``AT+CLIP=<n>``/``?``, ``AT+CEER``, ``AT+CMUT``, ``AT+CLVL``, ``AT+VMUTE``,
``AT+CSDVC``, ``AT+DDET``, ``AT+QTONEDET``, ``AT+QRXGAIN``, ``AT+QAUDMOD``, ``AT+VTS``,
``AT+CIREG?``, ``AT+QCFG="ims"``.

Far-end control (thread-safe): :meth:`SimCalls.plan` per number (``answer`` after N s,
``busy``, ``no_answer``, ``unreachable``), :meth:`far_end_dtmf`, :meth:`far_end_hangup`,
:meth:`drop`, :meth:`incoming`. ``events`` records what happened (with the audio state at
that moment), :meth:`wait_for` waits for a call state. Timed actions run on daemon timers and
never hold the model's lock while writing to the pty.

Test-only: never used on the device.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Plan", "SimCalls"]

_STAT = {"active": 0, "held": 1, "dialing": 2, "alerting": 3, "incoming": 4}
_CAUSES = {"normal": "Normal call clearing", "busy": "User busy",
           "no_answer": "User alerting, no answer", "dropped": "Temporary failure"}
_OUTCOMES = ("answer", "busy", "no_answer", "unreachable")


@dataclass(frozen=True)
class Plan:
    """What the far end of ``number`` does when called: ``outcome`` one of ``answer``,
    ``busy``, ``no_answer`` (``NO ANSWER`` after ``after_s``; 0 = rings until hung up),
    ``unreachable`` (``NO CARRIER`` after ``after_s``); ``after_s`` seconds after the dial."""

    outcome: str = "answer"
    after_s: float = 0.3


class SimCalls:
    """The call state of one simulated modem (``sim.calls``). See the module docstring."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._plans: dict[str, list[Plan]] = {}
        self._sticky: dict[str, Plan] = {}  # the last plan used per number, used again
        #: Plan for numbers without one.
        self.default_plan = Plan("answer", 0.3)
        self._call: dict[str, Any] | None = None
        self._gen = 0
        self.cause = "Normal call clearing"
        self.clip = False
        self.clcc_urc = False
        self.dtmf_detect = False
        #: Whether the network gives this SIM voice service (False: ATD → +CME ERROR: 30).
        self.voice_service = True
        #: ``AT+CIREG?`` / ``AT+QCFG="ims"``: registered on IMS (VoLTE).
        self.ims_registered = False
        #: SIM7600 order at a far-end hang-up: ``"end_first"`` (``VOICE CALL: END`` then
        #: ``NO CARRIER``, as the manual shows) or ``"no_carrier_first"``.
        self.end_order = "end_first"
        self.ring_interval_s = 1.0
        #: Rings before an unanswered incoming caller gives up.
        self.incoming_rings = 8
        self.audio: dict[str, Any] = {"mic_muted": False, "speaker_muted": False, "level": 4,
                                      "path": "handset", "rx_gain": 20000}
        #: ``{"event", "t", "number", audio…}`` per call event, in order.
        self.events: list[dict[str, Any]] = []

    # -- far-end control ------------------------------------------------------------------

    def plan(self, number: str, outcome: str = "answer", after_s: float = 0.3) -> None:
        """Queue what ``number`` does the next time it is called (queued plans are used in
        order; once they are used up, the last one is used again)."""
        if outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {_OUTCOMES}")
        with self._lock:
            self._plans.setdefault(number, []).append(Plan(outcome, after_s))

    @property
    def state(self) -> str:
        """``idle``, ``dialing``, ``alerting``, ``active`` or ``incoming``."""
        with self._lock:
            return self._call["state"] if self._call else "idle"

    @property
    def number(self) -> str:
        with self._lock:
            return self._call["number"] if self._call else ""

    def wait_for(self, state: str, timeout_s: float = 5.0) -> bool:
        """Wait until the call is in ``state``; returns whether it got there in time."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while (self._call["state"] if self._call else "idle") != state:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def far_end_dtmf(self, key: str) -> None:
        """The far end presses ``key`` (0-9 * # A-D) during the active call."""
        with self._lock:
            if not self._call or self._call["state"] != "active":
                raise RuntimeError("no active call to send DTMF on")
            self._record("far_dtmf", key=key)
            detect = self.dtmf_detect
        if detect:
            flavour = self.sim.flavour
            self.sim.inject_urc(f"+RXDTMF: {key}" if flavour == "sim7600" else f"+QTONEDET: {ord(key)}")

    def far_end_hangup(self, *, silent: bool = False) -> None:
        """The far end hangs up (normal call clearing). ``silent``: no URC at all reaches the
        host (lost on the line): only ``AT+CLCC`` shows the call is gone."""
        self._network_end("normal", "far_hangup", silent)

    def drop(self, *, silent: bool = False) -> None:
        """The network loses the call (radio link, cell change …)."""
        self._network_end("dropped", "dropped", silent)

    def incoming(self, number: str, *, withheld: bool = False) -> None:
        """A call from ``number`` rings: ``RING`` and (with ``AT+CLIP=1``) ``+CLIP`` every
        ``ring_interval_s`` until answered, rejected, or ``incoming_rings`` rings."""
        with self._lock:
            if self._call is not None:
                raise RuntimeError("a call is up already")
            self._gen += 1
            self._call = {"number": number, "outgoing": False, "state": "incoming",
                          "gen": self._gen, "since": time.monotonic(), "withheld": withheld}
            self._record("incoming", number=number)
            self._changed.notify_all()
            gen = self._gen
        self._ring(gen, 1)

    # -- internals ------------------------------------------------------------------------

    def _record(self, event: str, **fields: Any) -> None:
        """Lock held."""
        self.events.append({"event": event, "t": time.monotonic(),
                            "number": self._call["number"] if self._call else "", **fields,
                            **{k: v for k, v in self.audio.items()}})

    def _later(self, seconds: float, fn: Any, *args: Any) -> None:
        timer = threading.Timer(seconds, fn, args)
        timer.daemon = True
        timer.start()

    def _clcc_line(self, call: dict[str, Any], stat: int | None = None) -> str:
        number = call["number"]
        ntype = 145 if number.startswith("+") else 129
        shown = "" if call.get("withheld") else number
        return (f'+CLCC: 1,{0 if call["outgoing"] else 1},{_STAT[call["state"]] if stat is None else stat},'
                f'0,0,"{shown}",{ntype}')

    def _set_state(self, gen: int, state: str) -> list[str]:
        """Move call ``gen`` to ``state``; returns the URCs to send (lock held)."""
        if not self._call or self._call["gen"] != gen:
            return []
        self._call["state"] = state
        if state == "active":
            self._call["active_since"] = time.monotonic()
        self._record(state)
        self._changed.notify_all()
        urcs = []
        if state == "active" and self.sim.flavour == "sim7600":
            urcs.append("VOICE CALL: BEGIN")
        if self.clcc_urc:
            urcs.append(self._clcc_line(self._call))
        return urcs

    def _end(self, cause_key: str, event: str) -> list[str]:
        """End the call (lock held); returns the SIM7600 END URC list for a network end."""
        call = self._call
        if call is None:
            return []
        self.cause = _CAUSES[cause_key]
        since = call.get("active_since")
        seconds = int(time.monotonic() - since) if since else 0
        self._record(event, cause=self.cause)
        self._call = None
        self._changed.notify_all()
        urcs = []
        if self.clcc_urc:
            urcs.append(self._clcc_line(call, stat=6))
        if self.sim.flavour == "sim7600" and since:
            urcs.append(f"VOICE CALL: END: {seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}")
        return urcs

    def _network_end(self, cause_key: str, event: str, silent: bool = False) -> None:
        with self._lock:
            if not self._call or self._call["state"] != "active":
                raise RuntimeError("no active call")
            urcs = self._end(cause_key, event)
            order = self.end_order
        if silent:
            return
        if order == "no_carrier_first":
            urcs = ["NO CARRIER"] + urcs
        else:
            urcs = urcs + ["NO CARRIER"]
        for line in urcs:
            self.sim.inject_urc(line)

    def _send(self, urcs: list[str]) -> None:
        for line in urcs:
            self.sim.inject_urc(line)

    def _progress(self, gen: int, plan: Plan) -> None:
        """The far end's reaction, ``plan.after_s`` after the dial."""
        with self._lock:
            if not self._call or self._call["gen"] != gen:
                return
            if plan.outcome == "answer":
                urcs = self._set_state(gen, "active")
            elif plan.outcome == "no_answer" and plan.after_s == 0:
                return
            else:
                word = {"busy": "BUSY", "no_answer": "NO ANSWER", "unreachable": "NO CARRIER"}[plan.outcome]
                self._end({"busy": "busy", "no_answer": "no_answer", "unreachable": "dropped"}[plan.outcome],
                          plan.outcome)
                urcs = [word]
        self._send(urcs)

    def _alerting(self, gen: int) -> None:
        with self._lock:
            urcs = self._set_state(gen, "alerting") if self._call and self._call["state"] == "dialing" else []
        self._send(urcs)

    def _ring(self, gen: int, count: int) -> None:
        with self._lock:
            call = self._call
            if not call or call["gen"] != gen or call["state"] != "incoming":
                return
            if count > self.incoming_rings:
                number = call["number"]
                self._end("no_answer", "caller_gave_up")
                urcs = ([f"MISSED_CALL: {datetime.now():%I:%M%p} {number}"]
                        if self.sim.flavour == "sim7600" else ["NO CARRIER"])
            else:
                urcs = ["RING"]
                if self.clip:
                    shown = "" if call.get("withheld") else call["number"]
                    ntype = 145 if shown.startswith("+") else 129
                    validity = 1 if call.get("withheld") else 0
                    urcs.append(f'+CLIP: "{shown}",{ntype},"",0,"",{validity}')
        self._send(urcs)
        if count <= self.incoming_rings:
            self._later(self.ring_interval_s, self._ring, gen, count + 1)

    # -- commands (called by the simulator with its lock held) ----------------------------

    def handle(self, cmd: str, up: str) -> tuple[list[str], str, list[str]] | None:
        """(info, final, after) for a call/audio command, or None if it is not one."""
        flavour = self.sim.flavour
        if up.startswith("ATD") and up.endswith(";"):
            return self._dial(cmd[3:-1].strip())
        if up == "ATA":
            with self._lock:
                if not self._call or self._call["state"] != "incoming":
                    return [], "NO CARRIER", []
                urcs = self._set_state(self._call["gen"], "active")
            return [], "OK", urcs
        if up in ("ATH", "ATH0", "AT+CHUP"):
            with self._lock:
                local = self._call is not None
                urcs = self._end("normal", "local_hangup") if local else []
            return [], "OK", urcs
        if up == "AT+CLCC":
            with self._lock:
                return ([self._clcc_line(self._call)] if self._call else []), "OK", []
        if up == "AT+CEER":
            with self._lock:
                cause = self.cause
            return [f"+CEER: {cause}" if flavour == "sim7600" else f'+CEER: "CC INFO","{cause}"'], "OK", []
        if up == "AT+CIREG?":
            return [f"+CIREG: 0,{int(self.ims_registered)}"], "OK", []
        if up == 'AT+QCFG="IMS"':
            if flavour != "quectel":
                return [], "ERROR", []
            return [f'+QCFG: "ims",1,{int(self.ims_registered)}'], "OK", []
        if up.startswith("AT+VTS="):
            with self._lock:
                if not self._call or self._call["state"] != "active":
                    return [], "ERROR", []
                self._record("sent_dtmf", keys=cmd[7:])
            return [], "OK", []
        flags = {"AT+CLIP=": "clip", "AT+DDET=": "dtmf_detect", "AT+QTONEDET=": "dtmf_detect",
                 "AT+CLCC=": "clcc_urc"}
        only = {"AT+DDET=": "sim7600", "AT+CLCC=": "sim7600", "AT+QTONEDET=": "quectel"}
        for prefix, attr in flags.items():
            if up.startswith(prefix):
                value = up[len(prefix):].split(",")[0]
                if only.get(prefix, flavour) != flavour or value not in ("0", "1"):
                    return [], "ERROR", []
                setattr(self, attr, value == "1")
                return [], "OK", []
        if up == "AT+CLIP?":
            return [f"+CLIP: {int(self.clip)},1"], "OK", []
        audio = {"AT+CMUT": ("mic_muted", (0, 1), None), "AT+CLVL": ("level", range(6), None),
                 "AT+VMUTE": ("speaker_muted", (0, 1), "sim7600"),
                 "AT+CSDVC": ("path", (1, 3), "sim7600"), "AT+QAUDMOD": ("path", (0, 2), "quectel"),
                 "AT+QRXGAIN": ("rx_gain", range(65536), "quectel")}
        name = up.partition("=")[0].rstrip("?")
        if name in audio:
            key, allowed, only_for = audio[name]
            if only_for and only_for != flavour:
                return [], "ERROR", []
            if up.endswith("?"):
                value = self.audio[key]
                shown = {"handset": 1 if flavour == "sim7600" else 0,
                         "speaker": 3 if flavour == "sim7600" else 2}.get(value, value)
                return [f"{name[2:]}: {int(shown)}"], "OK", []
            arg = up.partition("=")[2]
            if not arg.isdigit() or int(arg) not in allowed:
                return [], "ERROR", []
            with self._lock:
                if key == "path":
                    self.audio[key] = "handset" if int(arg) in (0, 1) else "speaker"
                elif key in ("mic_muted", "speaker_muted"):
                    self.audio[key] = arg == "1"
                else:
                    self.audio[key] = int(arg)
                if key == "rx_gain":
                    self.audio["speaker_muted"] = int(arg) == 0
                self._record("audio", command=cmd)
            return [], "OK", []
        return None

    def _dial(self, number: str) -> tuple[list[str], str, list[str]]:
        if not number or not all(c.isdigit() or c in "+*#" for c in number):
            return [], "ERROR", []
        if not self.voice_service:
            return [], ("+CME ERROR: 30" if self.sim._cmee == 1 else
                        "+CME ERROR: no network service" if self.sim._cmee == 2 else "ERROR"), []
        with self._lock:
            if self._call is not None:
                return [], "ERROR", []
            plans = self._plans.get(number)
            if plans:
                self._sticky[number] = plans.pop(0)
            plan = self._sticky.get(number, self.default_plan)
            self._gen += 1
            self._call = {"number": number, "outgoing": True, "state": "dialing", "gen": self._gen,
                          "since": time.monotonic()}
            self._record("dial", plan=plan.outcome)
            self._changed.notify_all()
            gen = self._gen
        self._later(min(0.1, plan.after_s / 2), self._alerting, gen)
        if not (plan.outcome == "no_answer" and plan.after_s == 0):
            self._later(plan.after_s, self._progress, gen, plan)
        return [], "OK", []

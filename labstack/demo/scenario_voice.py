"""Demo scenario ``voice`` (issue 11): listen-in after an alarm.

Hold the button → the silent panic (122) and then ``listen_in`` (606) reach the pysiaalarm ARC
(what pysiaalarm decoded for 606 is shown: it ACKs it but, having no 606 in its ADM table,
reports SIA code ``YN``) → the device's modem dials the ARC's voice line through the driver's
serial path into the modem simulator → the far end answers → listen-in (speaker muted,
microphone on) → the far end sends the talk key ``1`` → two-way → the far end hangs up.

Exit 0 only if all of it happened, and in the right order: alarm stored → 606 stored → the
simulator received ``ATD<number>;`` on its pty.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .scenario_device import fail, restart_device
from .scenarios import expect_arc, scenario
from .stack import DemoStack

#: The ARC's voice line (what `lonewatch provision` writes into [voice] numbers).
ARC_VOICE = "+4570101010"
ANSWER_AFTER_S = 1.5
_SHOWN = ("listen_in_queued", "voice_calling", "voice_answered", "voice_mode", "voice_key", "voice_done",
          "voice_ended", "voice_failed", "voice_redial", "voice_gave_up")


def _show_voice_steps(stack: DemoStack) -> None:
    """Put the device's voice steps on the timeline too (the stack shows only its own list)."""
    voice = stack.device.voice
    if voice is None:
        return
    inner = voice.observer

    def observe(step: str, fields: dict[str, Any]) -> None:
        inner(step, fields)
        if step in _SHOWN:
            stack.tl.add(step, **fields)

    voice.observer = observe
    voice.controller.observer = observe


def _watch_dial(stack: DemoStack, offset_s: float, stop: threading.Event) -> None:
    """Record ``modem_dial`` when the simulator's call model saw ``ATD…;`` on its pty."""
    def run() -> None:
        while not stop.wait(0.02):
            for ev in list(stack.sim.calls.events):
                if ev["event"] == "dial":
                    stack.tl.add("modem_dial", number=ev["number"], via="pty ATD;",
                                 at_ms=round((ev["t"] - offset_s) * 1000, 1))
                    return

    threading.Thread(target=run, name="demo-voice-dial", daemon=True).start()


@scenario("voice", "alarm → 122 then 606 (listen-in to follow) at the ARC → the modem calls the ARC: "
          "listen-in, talk key, hang-up")
def voice(stack: DemoStack) -> bool:
    if not restart_device(stack, {"voice": {"numbers": [ARC_VOICE], "ring_timeout_s": 20}},
                          voice_numbers=[ARC_VOICE], silent=True):
        return False
    _show_voice_steps(stack)
    mark = stack.tl.add("far_end_ready", number=ARC_VOICE, answers_after_s=ANSWER_AFTER_S)
    offset_s = time.monotonic() - mark["t_ms"] / 1000
    stop = threading.Event()
    _watch_dial(stack, offset_s, stop)
    sim = stack.sim
    sim.calls.plan(ARC_VOICE, "answer", ANSWER_AFTER_S)
    try:
        return _run(stack, sim)
    finally:
        stop.set()


def _run(stack: DemoStack, sim: Any) -> bool:
    stack.hold(2.5)
    alarm = stack.tl.wait_for("queued", 5, kind="silent_panic")
    listen = stack.tl.wait_for("queued", 5, kind="listen_in")
    if alarm is None or listen is None:
        return fail(stack, "the alarm or its listen_in event was not queued")
    if not expect_arc(stack, stack.tl.wait_for("arc_ack", stack.timeout_s, id=alarm["id"]), "122"):
        return False
    li_ack = stack.tl.wait_for("arc_ack", stack.timeout_s, id=listen["id"])
    if not expect_arc(stack, li_ack, "606"):
        return False
    if stack.local_arc is not None:
        stack.tl.add("arc_decoded_606", code=li_ack.get("code"), qualifier=li_ack.get("qualifier"),
                     zone=li_ack.get("zone"), sia_code=li_ack.get("sia_code"),
                     note="pysiaalarm 3.2.2 ACKs 606 but has no SIA code for it: YN = invalid report")
    dial = stack.tl.wait_for("modem_dial", 10)
    if dial is None:
        return fail(stack, "the modem simulator never received ATD for the ARC's voice line")
    if f"ATD{ARC_VOICE};" not in sim.commands():
        return fail(stack, "ATD did not come through the serial path")
    if not (alarm["t_ms"] < listen["t_ms"] < dial["at_ms"]):
        return fail(stack, "wrong order: the alarm must be stored, then 606 queued, then the dial")
    stack.tl.add("order_ok", alarm_stored_ms=alarm["t_ms"], listen_in_queued_ms=listen["t_ms"], dial_ms=dial["at_ms"])
    if not sim.calls.wait_for("active", ANSWER_AFTER_S + 10):
        return fail(stack, "the call was not answered")
    if stack.tl.wait_for("voice_mode", 5, mode="listen_in") is None:
        return fail(stack, "the call did not open in listen-in mode")
    audio = dict(sim.calls.audio)
    stack.tl.add("far_end_hears", speaker_muted=audio["speaker_muted"], mic_muted=audio["mic_muted"])
    if not audio["speaker_muted"] or audio["mic_muted"]:
        return fail(stack, "listen-in must have the speaker muted and the microphone on")
    time.sleep(1.0)  # the operator listens
    stack.tl.add("far_end_key", key="1", meaning="talk")
    sim.calls.far_end_dtmf("1")
    if stack.tl.wait_for("voice_mode", 5, mode="two_way") is None:
        return fail(stack, "the talk key did not switch to two-way")
    deadline = time.monotonic() + 5
    while sim.calls.audio["speaker_muted"] and time.monotonic() < deadline:
        time.sleep(0.02)
    if sim.calls.audio["speaker_muted"]:
        return fail(stack, "two-way but the speaker is still muted at the modem")
    stack.tl.add("far_end_hears", speaker_muted=False, mic_muted=sim.calls.audio["mic_muted"], mode="two_way")
    time.sleep(1.0)
    stack.tl.add("far_end_hangs_up")
    sim.calls.far_end_hangup()
    done = stack.tl.wait_for("voice_done", 10)
    if done is None or done.get("reason") != "remote_hangup":
        return fail(stack, f"the call did not end as a far-end hang-up: {done}")
    return True

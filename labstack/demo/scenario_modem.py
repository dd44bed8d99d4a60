"""Demo scenario of the modem driver (issue 14): ``modem-restart``.

The demo device's modem restarts on its UART mid-shift (a brown-out on a HAT: the port stays,
echo is on again, GNSS off, and the SIM asks for its PIN again, announced by ``RDY`` /
``+CPIN: SIM PIN`` as the SIM7600 manual's power-on sequence has it). With the broker down,
the next alarm must still go out by SMS through that modem: the driver sees the restart,
initialises the modem again (echo off, verbose errors, PIN, GNSS on) and sends. The scenario
exits 0 only if the SMS reached the modem simulator, the modem was re-initialised exactly
for that restart, GNSS was switched on again, and the alarm then reached the ARC once.
"""

from __future__ import annotations

import time

from modem.replies import redact

from .scenario_device import FALLBACK, FALLBACK_AFTER_S, _wait, fail, restart_device
from .scenarios import expect_arc, scenario
from .stack import DemoStack

DEMO_PIN = "9075"  # the demo SIM's PIN (simulator only)


@scenario("modem-restart", "the modem restarts on its UART (SIM locked again, GNSS off): the next alarm "
                           "still goes out by SMS, then reaches the ARC")
def modem_restart(stack: DemoStack) -> bool:
    if not restart_device(stack, {"sms": {"fallback": FALLBACK},
                                  "timing": {"sms_fallback_after_s": FALLBACK_AFTER_S},
                                  "modem": {"sim_pin": DEMO_PIN}},
                          sms_fallback=[f["number"] for f in FALLBACK], sms_fallback_after_s=FALLBACK_AFTER_S,
                          sim_pin="(set)"):
        return False
    sim, modem = stack.sim, stack.device.modem
    if modem is None:
        return fail(stack, "the demo device has no modem")
    stack.mq.stop()
    stack.tl.add("broker_stopped", port=stack.mq.port)
    if not _wait(lambda: not stack.device.link.connected.is_set(), 15):
        return fail(stack, "the device did not notice the broker was gone")
    sim.pin, sim.pin_lock = DEMO_PIN, True
    before = len(sim.commands())
    sim.reset()  # RDY, +CPIN: SIM PIN — the port stays open
    stack.tl.add("modem_restarted", port=sim.port, sim_state=sim.sim_state, boot_urcs=["RDY", "+CPIN: SIM PIN"])
    stack.hold(2.5)
    queued = stack.tl.wait_for("queued", 5, kind="silent_panic")
    if queued is None:
        return fail(stack, "the alarm was not queued")
    deadline = FALLBACK_AFTER_S + 30
    for recipient in FALLBACK:
        if stack.tl.wait_for("sms_sent", deadline, id=queued["id"], recipient=recipient["number"]) is None:
            return fail(stack, f"no SMS to {recipient['number']} within {deadline} s after the modem restart")
    after = sim.commands()[before:]
    if modem.reinits != 1 or f'AT+CPIN="{DEMO_PIN}"' not in after or "ATE0" not in after:
        return fail(stack, f"the modem was not initialised again exactly once (reinits={modem.reinits})")
    if not _wait(lambda: "AT+CGPS=1" in sim.commands()[before:], 15):
        return fail(stack, "GNSS was not switched on again after the restart")
    if sim.sim_state != "READY":
        return fail(stack, f"the SIM is still {sim.sim_state!r}")
    stack.tl.add("modem_reinitialised", reason=modem.last_reset, commands=[redact(c) for c in after[:5]], gnss_on=True)
    stack.mq.start()
    stack.tl.add("broker_started", port=stack.mq.port)
    ack = stack.tl.wait_for("arc_ack", stack.timeout_s + 30, id=queued["id"])
    if not expect_arc(stack, ack, "122"):
        return False
    time.sleep(1.0)  # a duplicate would reach the ARC within milliseconds
    if stack.local_arc is not None and len([e for e in stack.local_arc.events if e["code"] == "122"]) != 1:
        return fail(stack, "the ARC receiver decoded the alarm more than once")
    return True

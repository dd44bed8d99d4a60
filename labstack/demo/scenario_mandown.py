"""Demo scenarios of man-down (issue 10): ``man-down`` and ``man-down-cancel``.

A recorded forward fall (``mandown_fall.csv``, made by ``python -m tests.traces`` from body
mechanics: 3 s walking, a fall, then lying motionless) is replayed in real time into the
simulated accelerometer, which raises its interrupts on the device's MockFactory pins, exactly
as the LIS3DH does on a Pi. The worker's shift is started first (man-down is paused off shift),
then the device restarts with ``[mandown]`` on — the ``guard`` profile with a shorter
stillness after the impact and a shorter pre-alarm, so the demo takes ~20 s instead of ~45 s
(shown on the timeline as ``device_config``).

* ``man-down``: impact → still → pre-alarm vibration → ``man_down`` → the ARC decodes Contact
  ID 101 with the position; the site's contacts get the man-down text in their language.
* ``man-down-cancel``: the worker presses the button during the pre-alarm: ``cancelled``,
  and nothing reaches the ARC.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .scenario_device import fail, restart_device
from .scenarios import expect_arc, scenario
from .stack import DemoStack

TRACE = Path(__file__).with_name("mandown_fall.csv")
#: The ``[mandown]`` of the demo device.
MANDOWN: dict[str, Any] = {"enabled": True, "sensor": "sim", "sim_trace": str(TRACE), "profile": "guard",
                           "impact_still_s": 5.0, "prealarm_s": 10.0}
#: A 101 that was wrongly sent would reach the local ARC within this, seconds.
QUIET_S = 4.0


def start_mandown(stack: DemoStack, **overrides: Any) -> bool:
    """Start the worker's shift, then restart the demo device with man-down on (the fall
    trace starts playing as the device starts)."""
    if not stack.device.on_shift:
        stack.device.shift(True, source="demo")
    stack.tl.add("shift_started", device=stack.device.device_id)
    mandown = {**MANDOWN, **overrides}
    return restart_device(stack, {"mandown": mandown}, mandown_profile=mandown["profile"],
                          impact_still_s=mandown["impact_still_s"], prealarm_s=mandown["prealarm_s"],
                          trace=TRACE.name)


def _state(stack: DemoStack, state: str, timeout_s: float) -> dict[str, Any] | None:
    return stack.tl.wait_for("mandown", timeout_s, state=state)


@scenario("man-down", "a fall replayed into the accelerometer: pre-alarm vibration, then man-down (CID 101) at the ARC")
def man_down(stack: DemoStack) -> bool:
    if not start_mandown(stack):
        return False
    if _state(stack, "impact", 20) is None:
        return fail(stack, "the fall's impact was not detected")
    pre = _state(stack, "prealarm", 30)
    if pre is None:
        return fail(stack, "no pre-alarm after the worker lay still")
    if stack.tl.wait_for("feedback", 5, pattern="mandown_prealarm") is None:
        return fail(stack, "the pre-alarm vibration did not play")
    down = _state(stack, "man_down", MANDOWN["prealarm_s"] + 5)
    if down is None:
        return fail(stack, "the pre-alarm ran out without a man_down")
    queued = stack.tl.wait_for("queued", 5, kind="man_down")
    if queued is None:
        return fail(stack, "man_down was not queued")
    ack = stack.tl.wait_for("arc_ack", stack.timeout_s, id=queued["id"])
    if not expect_arc(stack, ack, "101"):
        return False
    if stack.local_arc is not None and (ack.get("lat") is None or ack.get("lon") is None):
        return fail(stack, "the ARC got the man-down without a position")
    stack.tl.add("prealarm_to_man_down", seconds=round((down["t_ms"] - pre["t_ms"]) / 1000, 1),
                 prealarm_s=MANDOWN["prealarm_s"])
    return True


@scenario("man-down-cancel", "a fall, then the worker presses the button in the pre-alarm: nothing reaches the ARC")
def man_down_cancel(stack: DemoStack) -> bool:
    if not start_mandown(stack):
        return False
    if _state(stack, "prealarm", 40) is None:
        return fail(stack, "no pre-alarm after the fall")
    time.sleep(1.0)
    stack.tap(1)  # "I'm all right"
    cancelled = _state(stack, "cancelled", 5)
    if cancelled is None or cancelled.get("reason") != "button":
        return fail(stack, "the button press did not cancel the pre-alarm")
    if stack.tl.wait_for("feedback", 5, pattern="mandown_cancelled") is None:
        return fail(stack, "no 'cancelled' vibration")
    # Past the moment the pre-alarm would have run out, plus time for a frame to travel.
    time.sleep(MANDOWN["prealarm_s"] + QUIET_S)
    if stack.tl.first("queued") and any(e["step"] == "queued" and e.get("kind") == "man_down" for e in stack.tl.steps):
        return fail(stack, "man_down was raised although the worker cancelled")
    if any(e["step"] == "arc_ack" and e.get("kind") == "man_down" for e in stack.tl.steps):
        return fail(stack, "the ARC got a man-down")
    if stack.local_arc is not None and any(e["code"] == "101" for e in stack.local_arc.events):
        return fail(stack, "the ARC receiver decoded a 101")
    stack.tl.add("nothing_at_arc", waited_s=MANDOWN["prealarm_s"] + QUIET_S)
    return True

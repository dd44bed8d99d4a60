"""Demo scenarios of the device side (issue 3): ``broker-down``, ``checkin`` and ``cancel``.

Each presses the simulated device's button like a finger (MockFactory pin driven low/high
with real sleeps) and checks on the timeline that what it shows really happened; the device's
SMS go through the real serial path into the modem simulator.

``broker-down`` and ``checkin`` restart the demo device with a few demo settings (SMS fallback
numbers and a short fallback time; a short check-in in ``[timing] test_mode``): the timeline
shows a ``device_config`` step saying which.
"""

from __future__ import annotations

import time
from typing import Any

from .scenarios import expect_arc, scenario
from .stack import DemoStack, _deep_merge, device_dict

#: Who gets the demo alarm by SMS: an ARC SMS line (Danish) and a Polish-speaking colleague.
FALLBACK = [{"number": "+4570101010", "language": "da"}, {"number": "+48601234567", "language": "pl"}]
FALLBACK_AFTER_S = 6
CHECKIN_S = 8
CHECKIN_WARN_S = 4


def restart_device(stack: DemoStack, overrides: dict[str, Any], **shown: Any) -> bool:
    """Stop the demo device and start it again (same pins, modem simulator and state) with
    ``overrides`` merged into its config; ``shown`` goes on the timeline."""
    stack.device.stop()
    base = device_dict(stack.mq.port, stack.workdir / "device-state", stack.sim.port, stack.device_password)
    from device.config import DeviceConfig

    stack.device_config = DeviceConfig.from_dict(_deep_merge(_deep_merge(base, stack.device_overrides), overrides))
    stack.device = stack.start_device()
    stack.tl.add("device_config", **shown)
    if not stack.device.link.connected.wait(15):
        stack.tl.add("error", reason="the restarted device did not connect to the broker")
        return False
    deadline = time.monotonic() + 10
    while stack.device.modem_state.position is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def arc_acks(stack: DemoStack, code: str) -> list[dict[str, Any]]:
    """``arc_ack`` steps whose decoded Contact ID code is ``code`` (local receiver) or, for an
    external receiver, all of them."""
    return [e for e in list(stack.tl.steps) if e["step"] == "arc_ack"
            and (stack.local_arc is None or e.get("code") == code)]


def fail(stack: DemoStack, reason: str) -> bool:
    stack.tl.add("error", reason=reason)
    return False


@scenario("broker-down", "broker stopped before the press: the alarm goes out by SMS, then reaches the ARC once")
def broker_down(stack: DemoStack) -> bool:
    if not restart_device(stack, {"sms": {"fallback": FALLBACK},
                                  "timing": {"sms_fallback_after_s": FALLBACK_AFTER_S}},
                          sms_fallback=[f["number"] for f in FALLBACK], sms_fallback_after_s=FALLBACK_AFTER_S):
        return False
    stack.mq.stop()
    stack.tl.add("broker_stopped", port=stack.mq.port)
    if not _wait(lambda: not stack.device.link.connected.is_set(), 15):
        return fail(stack, "the device did not notice the broker was gone")
    stack.hold(2.5)
    queued = stack.tl.wait_for("queued", 5, kind="silent_panic")
    if queued is None:
        return fail(stack, "the alarm was not queued")
    alarm_id = queued["id"]
    deadline = FALLBACK_AFTER_S + 20  # the fallback time plus two SMS over a slow network
    for recipient in FALLBACK:
        step = stack.tl.wait_for("sms_sent", deadline, id=alarm_id, recipient=recipient["number"])
        if step is None:
            return fail(stack, f"no SMS to {recipient['number']} within {deadline} s")
    numbers = {n for n, _ in stack.sim.sent_sms}
    if not all(f["number"] in numbers for f in FALLBACK):
        return fail(stack, "the modem simulator did not receive the SMS")
    if stack.tl.first("relay_received") is not None:
        return fail(stack, "the relay got the alarm while the broker was down?")
    stack.mq.start()
    stack.tl.add("broker_started", port=stack.mq.port)
    ack = stack.tl.wait_for("arc_ack", stack.timeout_s + 30, id=alarm_id)
    if not expect_arc(stack, ack, "122"):
        return False
    time.sleep(1.0)  # a duplicate would reach the ARC within milliseconds
    same = [e for e in arc_acks(stack, "122") if e.get("id") == alarm_id]
    if len(same) != 1:
        return fail(stack, f"the ARC got the alarm {len(same)} times")
    if stack.local_arc is not None and len([e for e in stack.local_arc.events if e["code"] == "122"]) != 1:
        return fail(stack, "the ARC receiver decoded the alarm more than once")
    stack.tl.add("delivered_once", id=alarm_id, by=["sms", "mqtt"])
    return True


@scenario("checkin", "a started check-in expires: the ARC receives a missed check-in (CID 102)")
def checkin(stack: DemoStack) -> bool:
    if not restart_device(stack, {"timing": {"test_mode": True, "checkin_default_s": CHECKIN_S,
                                             "checkin_warn_before_s": CHECKIN_WARN_S}},
                          checkin_default_s=CHECKIN_S, checkin_warn_before_s=CHECKIN_WARN_S, test_mode=True):
        return False
    stack.tap(2)
    started = stack.tl.wait_for("checkin_started", 5)
    if started is None:
        return fail(stack, "two short presses did not start a check-in")
    if stack.tl.wait_for("checkin_expiring", CHECKIN_S + 5) is None:
        return fail(stack, "no warning vibration before the check-in expired")
    missed = stack.tl.wait_for("queued", CHECKIN_S + 5, kind="missed_checkin")
    if missed is None:
        return fail(stack, "the device did not raise missed_checkin")
    return expect_arc(stack, stack.tl.wait_for("arc_ack", stack.timeout_s, code="102")
                      if stack.local_arc else stack.tl.wait_for("arc_ack", stack.timeout_s, id=missed["id"]), "102")


@scenario("cancel", "hold for an alarm, then 3 short presses: the ARC gets the alarm (122) then the cancel (406)")
def cancel(stack: DemoStack) -> bool:
    stack.hold(2.5)
    alarm = stack.tl.wait_for("arc_ack", stack.timeout_s)
    if not expect_arc(stack, alarm, "122"):
        return False
    time.sleep(0.3)
    stack.tap(3)
    if stack.tl.wait_for("cancel_recognised", 5) is None:
        return fail(stack, "three short presses were not recognised as a cancel")
    queued = stack.tl.wait_for("queued", 5, kind="cancel")
    if queued is None:
        return fail(stack, "the cancel was not queued")
    ack = stack.tl.wait_for("arc_ack", stack.timeout_s, id=queued["id"])
    if not expect_arc(stack, ack, "406"):
        return False
    if ack["t_ms"] <= alarm["t_ms"]:
        return fail(stack, "the cancel reached the ARC before the alarm")
    return True


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())

"""Demo scenarios of escalation to contacts (issue 4): ``escalation`` and ``arc-down``.

Both change the demo site's escalation policy at run time through the registry in Redis (as
``lonewatch registry add site … --policy …`` would), press the button like a finger, and
follow the alarm through the relay's modem (a simulator on its own pty) to the contacts'
phones and back.
"""

from __future__ import annotations

import time
from typing import Any

from relay.alarms import AlarmStore
from relay.registry import RegistryStore
from .scenarios import expect_arc, scenario
from .stack import ARC_NAMES, CONTACTS, SITE, DemoStack


def set_site(stack: DemoStack, **fields: Any) -> None:
    """Change the demo site in the relay's registry (validated like any registry change)."""

    def edit(doc: dict[str, Any]) -> None:
        for site in doc["sites"]:
            if site["name"] == SITE:
                site.update(fields)

    RegistryStore(stack.relay.store).change(edit)
    stack.tl.add("registry_changed", site=SITE, **fields)


def wait_sms(stack: DemoStack, phone: str, timeout_s: float, *, after: int = 0, starts: str = "") -> dict | None:
    """The ``after``-th (0-based) ``contact_sms`` step to ``phone`` whose first line starts
    with ``starts``, waiting up to ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        hits = [e for e in list(stack.tl.steps) if e["step"] == "contact_sms" and e["to"] == phone
                and e["first_line"].startswith(starts)]
        if len(hits) > after:
            return hits[after]
        time.sleep(0.05)
    return None


def wait_alarm(stack: DemoStack, alarm_id: str, states: set[str], timeout_s: float):
    """The alarm once its state is one of ``states`` (None after ``timeout_s`` seconds)."""
    alarms = AlarmStore(stack.relay.store)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alarm = alarms.get(alarm_id)
        if alarm is not None and alarm.state in states:
            return alarm
        time.sleep(0.05)
    return None


def raised_alarm(stack: DemoStack, count: int, timeout_s: float) -> str | None:
    """The id of the ``count``-th alarm the relay received (1-based)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ids = [e["id"] for e in list(stack.tl.steps) if e["step"] == "relay_received" and e["new"]
               and e["kind"] in ("panic", "silent_panic")]
        if len(ids) >= count:
            return ids[count - 1]
        time.sleep(0.05)
    return None


def show_history(stack: DemoStack, alarm_id: str) -> None:
    """Put the alarm's history on the timeline."""
    for entry in AlarmStore(stack.relay.store).history(alarm_id):
        stack.tl.add("history", alarm=alarm_id, what=entry.get("what"), contact=entry.get("contact", ""),
                     channel=entry.get("channel", ""), detail=entry.get("detail", "")[:120])


def fail(stack: DemoStack, reason: str) -> bool:
    stack.tl.add("error", reason=reason)
    return False


@scenario("escalation", "contacts_only site: the first contact does not answer, the second gets the SMS "
          "after the timeout and acknowledges by SMS reply")
def escalation(stack: DemoStack) -> bool:
    (first, _, first_phone, _), (second, _, second_phone, _) = CONTACTS
    escalate_after_s = 4
    set_site(stack, policy="contacts_only", escalate_after_s=escalate_after_s)
    stack.hold(2.5)
    alarm_id = raised_alarm(stack, 1, stack.timeout_s)
    if alarm_id is None:
        return fail(stack, "the relay did not receive the alarm")
    if wait_sms(stack, first_phone, stack.timeout_s, starts="ALARM") is None:
        return fail(stack, f"{first} got no alarm SMS")
    stack.tl.add("waiting", note=f"{first} does not answer; {second} is next after {escalate_after_s} s")
    if wait_sms(stack, second_phone, escalate_after_s + stack.timeout_s) is None:
        return fail(stack, f"{second} got no alarm SMS after {first} did not answer")
    stack.contact_reply(second_phone, "نعم")  # "yes" in Arabic
    alarm = wait_alarm(stack, alarm_id, {"acked"}, stack.timeout_s)
    if alarm is None or alarm.get("acked_by") != second or alarm.get("ack_via") != "sms":
        return fail(stack, f"the alarm was not acknowledged by {second} by SMS")
    stack.tl.add("alarm_acknowledged", alarm=alarm_id, by=alarm.get("acked_by"), via="sms", ref=alarm.ref)
    confirmed = [wait_sms(stack, phone, stack.timeout_s, after=1) for phone in (first_phone, second_phone)]
    if None in confirmed:
        return fail(stack, "the contacts were not told who acknowledged")
    show_history(stack, alarm_id)
    record = stack.relay.store.event(alarm_id)
    if record is None or record[1].get("arc") != "no_arc" or stack.tl.first("arc_ack") is not None:
        return fail(stack, "a contacts_only alarm went to the ARC")
    return True


@scenario("arc-down", "arc_only site: primary receiver down → the secondary takes the alarm; both down → "
          "the contacts are told, and the ARC gets it once it returns")
def arc_down(stack: DemoStack) -> bool:
    primary, secondary = ARC_NAMES
    first, _, first_phone, _ = CONTACTS[0]
    if stack.local_arc is None:
        return fail(stack, "arc-down needs the demo's own receivers (no --arc)")
    set_site(stack, policy="arc_only", escalate_after_s=30)

    stack.arc_down(primary)
    stack.hold(2.5)
    ack = stack.tl.wait_for("arc_ack", stack.timeout_s, receiver=secondary)
    if not expect_arc(stack, ack, "122"):
        return False
    one = raised_alarm(stack, 1, 1)
    if one is None or wait_alarm(stack, one, {"with_arc"}, stack.timeout_s) is None:
        return fail(stack, "the first alarm is not recorded as taken by the ARC")

    stack.arc_down(secondary)
    stack.hold(2.5)
    two = raised_alarm(stack, 2, stack.timeout_s)
    if two is None:
        return fail(stack, "the relay did not receive the second alarm")
    if wait_sms(stack, first_phone, stack.timeout_s, starts="ALARM") is None:
        return fail(stack, f"with both receivers down {first} got no alarm SMS")
    stack.arc_up(primary)
    ack2 = stack.tl.wait_for("arc_ack", 40, id=two)
    if not expect_arc(stack, ack2, "122"):
        return False
    stack.contact_reply(first_phone, "OK")
    if wait_alarm(stack, two, {"acked"}, stack.timeout_s) is None:
        return fail(stack, f"{first}'s OK did not acknowledge the alarm")
    show_history(stack, two)
    whats = [e["what"] for e in AlarmStore(stack.relay.store).history(two)]
    if "arc_unreachable" not in whats or "arc_acked" not in whats:
        return fail(stack, "the history lacks the ARC outage or the late ARC ACK")
    if any(e["step"] == "contact_sms" and e["to"] == first_phone for e in stack.tl.steps
           if e["t_ms"] < (ack or {}).get("t_ms", 0)):
        return fail(stack, "contacts were told although the ARC took the first alarm")
    return True

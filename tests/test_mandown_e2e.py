"""Man-down end to end in real time (issue 10 "Done means"): a fall trace replayed into the
simulated accelerometer (interrupts on the device's MockFactory pins) → pre-alarm vibration →
``man_down`` → durable queue → real Mosquitto → relay → Redis → SIA DC-09 → pysiaalarm decodes
Contact ID 101 with the position; contacts get the man-down text in their language; a press
in the pre-alarm → nothing at the ARC; the open man-down cancelled with 3 presses → 406."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labstack.demo.scenario_contacts import set_site, wait_sms
from labstack.demo.scenario_mandown import man_down
from labstack.demo.stack import ACCOUNT, CONTACTS, LAT, LON, ZONE, DemoStack
from labstack.timeline import Timeline
from relay.notify.templates import KIND_NAMES

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DemoStack]:
    with DemoStack(Timeline(live=False), tmp_path) as s:
        yield s


def test_a_fall_reaches_the_arc_as_101_with_position_and_contacts_in_their_language(stack: DemoStack) -> None:
    escalate_after_s = 3
    set_site(stack, escalate_after_s=escalate_after_s)  # the 2nd contact (Arabic) is told soon
    assert man_down(stack), [e for e in stack.tl.steps if e["step"] in ("error", "mandown")]
    steps = [e["state"] if e["step"] == "mandown" else e["step"] for e in stack.tl.steps
             if e["step"] == "mandown" or e.get("kind") == "man_down"]
    assert steps[:7] == ["impact", "still", "prealarm", "man_down", "alarm_recognised", "queued", "relay_received"], steps
    assert "arc_ack" in steps
    ack = next(e for e in stack.tl.steps if e["step"] == "arc_ack" and e.get("kind") == "man_down")
    assert (ack["account"], ack["code"], ack["qualifier"], ack["zone"]) == (ACCOUNT, "101", 1, ZONE)
    assert ack["lat"] == pytest.approx(LAT, abs=1e-5) and ack["lon"] == pytest.approx(LON, abs=1e-5)
    assert [e["code"] for e in stack.local_arc.events].count("101") == 1
    # the relay stored it as man_down, with what the device saw
    stored, record = stack.relay.store.event(ack["id"])
    assert stored.kind == "man_down" and stored.data["trigger"] == "fall" and record["arc"] == "acked"
    # contacts: the Danish manager at once, the Arabic-speaking guard after the escalation time
    for _, _, phone, language in CONTACTS:
        sms = wait_sms(stack, phone, escalate_after_s + 20)
        assert sms is not None, (phone, stack.contact_sms)
        text = next(t for n, t in stack.contact_sms if n == phone)
        assert KIND_NAMES[language]["man_down"] in text


def test_the_open_man_down_cancelled_with_three_presses_sends_406(stack: DemoStack) -> None:
    assert man_down(stack)
    stack.tap(3)
    cancel = stack.tl.wait_for("queued", 10, kind="cancel")
    assert cancel is not None
    ack = stack.tl.wait_for("arc_ack", 30, id=cancel["id"])
    assert ack is not None and ack["code"] == "406"


def test_demo_man_down_cancel_nothing_reaches_the_arc() -> None:
    proc = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "demo", "--scenario",
                           "man-down-cancel", "--json"], capture_output=True, text=True, timeout=110)
    steps = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, steps[-5:]
    seen = [s.get("state") for s in steps if s["step"] == "mandown"]
    assert "prealarm" in seen and "cancelled" in seen and "man_down" not in seen
    assert not any(s["step"] == "arc_ack" and s.get("code") == "101" for s in steps)
    assert any(s["step"] == "feedback" and s["pattern"] == "mandown_prealarm" for s in steps)
    assert any(s["step"] == "nothing_at_arc" for s in steps)

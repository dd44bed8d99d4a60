"""``lonewatch demo --scenario broker-down|checkin|cancel`` (issue 3): each runs the whole chain
(real Mosquitto, Redis, relay, pysiaalarm, device on MockFactory pins, modem simulator) and
exits 0 only if what it shows happened; ``--json`` prints one JSON object per step."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labstack.demo import scenario_names

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name,must_show", [
    ("cancel", {"cancel_recognised", "arc_ack"}),
    ("checkin", {"checkin_started", "checkin_expiring", "arc_ack"}),
    ("broker-down", {"broker_stopped", "sms_sent", "broker_started", "arc_ack", "delivered_once"}),
])
def test_device_scenarios_exit_zero_and_show_their_steps(name: str, must_show: set[str]) -> None:
    assert name in scenario_names()
    proc = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "demo", "--scenario", name,
                           "--json"], capture_output=True, text=True, timeout=110)
    steps = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, steps[-5:]
    seen = {s["step"] for s in steps}
    assert must_show <= seen and "error" not in seen
    codes = [s.get("code") for s in steps if s["step"] == "arc_ack"]
    if name == "cancel":
        assert codes.index("122") < codes.index("406")
    elif name == "checkin":
        assert "102" in codes
    else:
        sms = [s for s in steps if s["step"] == "sms_sent"]
        assert {(s["language"], s["encoding"]) for s in sms} == {("da", "gsm7"), ("pl", "ucs2")}
        assert all(s["parts"] >= 1 and len(s["refs"]) == s["parts"] for s in sms)
        assert codes.count("122") == 1

"""``lonewatch demo --scenario voice`` (issue 11): the whole chain (Mosquitto, Redis, relay,
pysiaalarm, the device on MockFactory pins, the modem simulator on a pty) exits 0 only if the
alarm (122) and the listen-in (606) reached the ARC and the call went through the driver's
serial path in the right order: alarm stored → 606 queued → dial → listen-in → talk → hang-up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labstack.demo import scenario_names

pytestmark = pytest.mark.integration


def test_voice_scenario_exits_zero_in_order() -> None:
    assert "voice" in scenario_names()
    proc = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "demo", "--scenario", "voice",
                           "--json"], capture_output=True, text=True, timeout=110)
    steps = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, steps[-5:]
    names = [s["step"] for s in steps]
    assert "error" not in names
    codes = [s.get("code") for s in steps if s["step"] == "arc_ack"]
    assert codes.index("122") < codes.index("606")
    decoded = next(s for s in steps if s["step"] == "arc_decoded_606")
    assert (decoded["code"], decoded["sia_code"]) == ("606", "YN")
    order = [names.index(n) for n in ("order_ok", "voice_answered", "far_end_key", "far_end_hangs_up", "voice_done")]
    assert order == sorted(order)
    modes = [s["mode"] for s in steps if s["step"] == "voice_mode"]
    assert modes[:2] == ["listen_in", "two_way"]

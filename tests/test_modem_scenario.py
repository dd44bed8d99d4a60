"""``lonewatch demo --scenario modem-restart`` (issue 14, modem driver): the whole chain (real
Mosquitto, Redis, relay, pysiaalarm, device on MockFactory pins, modem simulator on a pty);
the modem restarts on its UART with the SIM locked again, the next alarm still goes out by
SMS, and then reaches the ARC once. Exit 0 only if that happened."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labstack.demo import scenario_names

pytestmark = pytest.mark.integration


def test_modem_restart_scenario_exits_zero_and_shows_its_steps() -> None:
    assert "modem-restart" in scenario_names()
    proc = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "demo", "--scenario",
                           "modem-restart", "--json"], capture_output=True, text=True, timeout=150)
    steps = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, steps[-5:]
    seen = [s["step"] for s in steps]
    assert "error" not in seen
    order = ["modem_restarted", "sms_sent", "modem_reinitialised", "broker_started", "arc_ack"]
    assert all(step in seen for step in order)
    assert [seen.index(step) for step in order] == sorted(seen.index(step) for step in order)
    reinit = next(s for s in steps if s["step"] == "modem_reinitialised")
    assert reinit["reason"] in ("RDY", "+CPIN: SIM PIN") and reinit["gnss_on"] is True
    assert "AT+CPIN=***" in reinit["commands"] and "9075" not in proc.stdout + proc.stderr  # the demo PIN
    assert [s.get("code") for s in steps if s["step"] == "arc_ack"].count("122") == 1

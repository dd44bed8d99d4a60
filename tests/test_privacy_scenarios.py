"""``lonewatch demo --scenario card|data-protection`` (issue 13) on the whole demo chain: each
exits 0 only if what it shows happened."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labstack.demo import scenario_names

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name,must_show", [
    ("card", {"card"}),
    ("data-protection", {"alive_off_shift", "alive_on_shift", "shift_ended", "export", "purge", "erase"}),
])
def test_privacy_scenarios_exit_zero_and_show_their_steps(name: str, must_show: set[str]) -> None:
    assert name in scenario_names()
    proc = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "demo", "--scenario", name,
                           "--json"], capture_output=True, text=True, timeout=110)
    steps = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, steps[-5:]
    seen = {s["step"] for s in steps}
    assert must_show <= seen and "error" not in seen
    if name == "card":
        assert [(s["language"], s["pages"]) for s in steps if s["step"] == "card"] == [("da", 1), ("ar", 1)]
    else:
        by = {s["step"]: s for s in steps}
        assert by["alive_off_shift"]["position_stored"] is False and by["alive_on_shift"]["position_stored"] is True
        assert by["purge"]["left"] == [] and by["erase"]["devices_removed"] == ["lw-demo-0001"]

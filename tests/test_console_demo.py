"""``lonewatch demo --scenario console`` and ``lonewatch demo --console`` (issue 13)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from labstack.demo import run_demo

pytestmark = pytest.mark.integration


def _steps(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_console_scenario(capsys) -> None:
    assert run_demo(scenario="console", as_json=True, timeout_s=30) == 0
    steps = {s["step"]: s for s in _steps(capsys.readouterr().out)}
    for step in ("console_up", "console_shown", "console_take_charge", "second_contact_not_told", "console_resolved", "done"):
        assert step in steps, step
    assert steps["console_take_charge"]["by"] == "Lise Operator"


def test_demo_console_prints_url_and_login(capsys) -> None:
    assert run_demo(scenario="panic", as_json=True, console=True, console_hold_s=0) == 0
    steps = {s["step"]: s for s in _steps(capsys.readouterr().out)}
    shown = steps["console"]
    assert shown["url"].startswith("http://127.0.0.1:") and shown["login"] == "operator" and len(shown["password"]) >= 10
    assert steps["console_open"]["url"] == shown["url"]
    # It is gone with the demo.
    with pytest.raises(OSError):
        urllib.request.urlopen(shown["url"] + "/healthz", timeout=2)

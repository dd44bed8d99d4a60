"""``lonewatch doctor`` voice checks (issue 11) against the modem simulator: registered for voice
circuit-switched or on IMS/VoLTE, a clear warning when neither, the optional test call."""

from __future__ import annotations

from dataclasses import replace

import pytest

from device.config import DeviceConfig
from device.doctor import Doctor
from modem.simulator import ModemSimulator

SKIP = frozenset({"button", "broker", "clock"})


def run(flavour: str = "sim7600", *, creg: str = "home", ims: bool = False, voice: dict | None = None,
        setup=lambda sim: None) -> dict:
    cfg = DeviceConfig.from_dict({"device": {"id": "lw-0042"}, "modem": {"flavour": flavour, "gnss": False},
                                  "voice": {"numbers": ["+4570101010"], **(voice or {})}})
    with ModemSimulator(flavour) as sim:
        sim.set_registration(creg=creg)
        sim.calls.ims_registered = ims
        setup(sim)
        checks = Doctor(replace(cfg, modem=replace(cfg.modem, port=sim.port))).run(SKIP)
        commands = sim.commands()
    out = {c.name: c for c in checks}
    out["_commands"] = commands  # type: ignore[assignment]
    return out


@pytest.mark.parametrize("flavour", ["sim7600", "quectel"])
def test_cs_registration_is_voice(flavour) -> None:
    c = run(flavour)["modem.voice"]
    assert c.status == "pass" and "circuit-switched" in c.detail and c.data["cs"] is True


@pytest.mark.parametrize("flavour", ["sim7600", "quectel"])
def test_volte_only_is_voice(flavour) -> None:
    c = run(flavour, creg="not_registered", ims=True)["modem.voice"]
    assert c.status == "pass" and "IMS/VoLTE" in c.detail and c.data == {"cs": False, "ims": True, "numbers": 1}


def test_neither_cs_nor_ims_warns_clearly() -> None:
    c = run(creg="searching")["modem.voice"]
    assert c.status == "warn" and "NO VOICE SERVICE" in c.detail and "VoLTE" in c.fix


def test_voice_off_is_skipped() -> None:
    out = run(voice={"enabled": False})
    assert out["modem.voice"].status == "skip" and "modem.voice_call" not in out


def test_short_test_call_answered_and_hung_up() -> None:
    out = run(voice={"test_number": "+4570909090"})
    assert out["modem.voice_call"].status == "pass"
    assert "ATD+4570909090;" in out["_commands"] and "AT+CHUP" in out["_commands"]


def test_test_call_busy_warns_and_refused_fails() -> None:
    busy = run(voice={"test_number": "+4570909090"}, setup=lambda sim: sim.calls.plan("+4570909090", "busy", 0.2))
    assert busy["modem.voice_call"].status == "warn" and "busy" in busy["modem.voice_call"].detail

    def no_voice(sim) -> None:
        sim.calls.voice_service = False

    refused = run(voice={"test_number": "+4570909090"}, setup=no_voice)
    assert refused["modem.voice_call"].status == "fail"

"""Listen-in and call-back on the device (issue 11): the daemon on MockFactory pins with the modem
simulator on a pty (real serial.Serial path), a finger on the button, the simulator's far end.

Order checked: the alarm is stored → the ``listen_in`` event (CID 606) is stored → the modem
dials. Busy → next number; no answer → next round; dropped → redial; call-back from the ARC
answered in listen-in mode during an alarm; unknown callers rejected; a hold during a call
raises a new alarm; voice disabled; an alarm raised during a call still goes out (broker)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from device.config import DeviceConfig
from device.daemon import DeviceDaemon
from device.voice import number_matches
from modem.at import Modem
from modem.simulator import ModemSimulator
from protocol.messages import decode
from tests.test_device_daemon import Steps, make_cfg

ARC1, ARC2 = "+4570101010", "+4570202020"
CONTACT = "+4520110001"


class Rig:
    def __init__(self, tmp_path: Path, voice: dict[str, Any], mqtt: dict[str, Any] | None = None,
                 flavour: str = "sim7600") -> None:
        self.flavour = flavour
        cfg = make_cfg(tmp_path / "state", modem={"enabled": True, "gnss": False, "flavour": flavour},
                       voice={"numbers": [ARC1], "ring_timeout_s": 3, "retry_pause_s": 0.2, **voice},
                       **({"mqtt": mqtt} if mqtt else {}))
        self.cfg = DeviceConfig.from_dict(cfg)
        self.sim = ModemSimulator(flavour).start()
        self.sim.calls.ring_interval_s = 0.3
        self.factory = MockFactory()
        self.start()

    def start(self) -> None:
        self.steps = Steps()
        self.modem = Modem(self.sim.port, flavour=self.flavour, default_timeout_s=3.0)
        self.daemon = DeviceDaemon(self.cfg, pin_factory=self.factory, modem=self.modem,
                                   observer=self.steps, control=False)
        self.daemon.start()
        self.steps.wait("modem_ready")
        if self.daemon.voice is not None:
            self.daemon.voice.controller.poll_s = 0.3

    def hold(self, seconds: float = 1.0) -> None:
        pin = self.factory.pin(self.cfg.gpio.button_pin)
        pin.drive_low()
        time.sleep(seconds)
        pin.drive_high()

    def index(self, step: str, **match: Any) -> int:
        for i, (s, f) in enumerate(self.steps.items):
            if s == step and all(f.get(k) == v for k, v in match.items()):
                return i
        raise AssertionError(f"no {step} {match}")

    def dials(self) -> list[str]:
        return [c for c in self.sim.commands() if c.startswith("ATD")]

    def close(self) -> None:
        self.daemon.stop()
        self.sim.stop()


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[Any]:
    made: list[Rig] = []

    def make(**voice: Any) -> Rig:
        mqtt = voice.pop("mqtt", None)
        flavour = voice.pop("flavour", "sim7600")
        rig = Rig(tmp_path / f"r{len(made)}", voice, mqtt, flavour)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


@pytest.mark.parametrize("flavour", ["sim7600", "quectel"])
def test_alarm_stored_then_listen_in_then_dial_muted_then_talk_and_hang_up(rigs, flavour) -> None:
    rig = rigs(flavour=flavour)
    sim = rig.sim
    rig.hold()
    alarm = rig.steps.wait("queued", kind="silent_panic")
    li = rig.steps.wait("queued", kind="listen_in")
    rig.steps.wait("voice_calling", number=ARC1, muted=True)
    assert sim.calls.wait_for("active", 5)
    rig.steps.wait("voice_mode", mode="listen_in")
    # Stored first, then listen_in, then the dial — in that order, and the dial on the pty.
    assert rig.index("queued", kind="silent_panic") < rig.index("queued", kind="listen_in") < rig.index("voice_calling")
    assert rig.dials() == [f"ATD{ARC1};"]
    event = decode(rig.daemon.queue.get(li["id"]).payload)
    assert event.kind == "listen_in" and event.data["alarm"] == alarm["id"]
    assert sim.calls.audio["speaker_muted"] is True and sim.calls.audio["mic_muted"] is False
    sim.calls.far_end_dtmf("1")
    rig.steps.wait("voice_mode", mode="two_way", key="1")
    assert sim.calls.audio["speaker_muted"] is False
    sim.calls.far_end_dtmf("0")
    rig.steps.wait("voice_mode", mode="listen_in", key="0")
    sim.calls.far_end_hangup()
    done = rig.steps.wait("voice_done")
    assert done["reason"] == "remote_hangup"
    assert rig.dials() == [f"ATD{ARC1};"]  # a normal hang-up is not redialled


def test_busy_goes_to_the_second_number(rigs) -> None:
    rig = rigs(numbers=[ARC1, ARC2])
    rig.sim.calls.plan(ARC1, "busy", 0.2)
    rig.hold()
    rig.steps.wait("voice_calling", number=ARC2)
    assert rig.sim.calls.wait_for("active", 5)
    rig.sim.calls.far_end_dtmf("#")
    rig.steps.wait("voice_done", reason="local_hangup")
    assert rig.dials() == [f"ATD{ARC1};", f"ATD{ARC2};"]


def test_no_answer_retried_in_the_next_round(rigs) -> None:
    rig = rigs(max_attempts=2, ring_timeout_s=1)
    rig.sim.calls.plan(ARC1, "no_answer", 0)
    rig.sim.calls.plan(ARC1, "answer", 0.2)
    rig.hold()
    rig.steps.wait("voice_retry", round=2)
    assert rig.sim.calls.wait_for("active", 8)
    rig.sim.calls.far_end_hangup()
    rig.steps.wait("voice_done", reason="remote_hangup")
    assert rig.dials() == [f"ATD{ARC1};"] * 2


def test_gives_up_after_max_attempts(rigs) -> None:
    rig = rigs(max_attempts=2, numbers=[ARC1, ARC2])
    rig.sim.calls.plan(ARC1, "busy", 0.1)
    rig.sim.calls.plan(ARC2, "busy", 0.1)
    rig.hold()
    rig.steps.wait("voice_gave_up", rounds=2)
    assert rig.dials() == [f"ATD{ARC1};", f"ATD{ARC2};"] * 2


def test_dropped_call_is_redialled(rigs) -> None:
    rig = rigs()
    rig.hold()
    assert rig.sim.calls.wait_for("active", 5)
    rig.sim.calls.drop()
    rig.steps.wait("voice_redial", number=ARC1, drops=1)
    deadline = time.monotonic() + 5
    while len(rig.dials()) < 2 or rig.sim.calls.state != "active":
        assert time.monotonic() < deadline, rig.sim.commands()
        time.sleep(0.02)
    rig.sim.calls.far_end_hangup()
    rig.steps.wait("voice_done", reason="remote_hangup")
    assert rig.dials() == [f"ATD{ARC1};"] * 2


def test_callback_from_the_arc_answered_in_listen_in_during_an_alarm_unknown_rejected(rigs) -> None:
    rig = rigs(max_attempts=1, callback_numbers=[CONTACT])
    rig.sim.calls.plan(ARC1, "busy", 0.1)
    rig.hold()
    rig.steps.wait("voice_gave_up")
    rig.sim.calls.incoming("+4599999999")
    rejected = rig.steps.wait("voice_rejected")
    assert rejected["number"] == "+4599999999" and rejected["in_alarm"] is True
    assert rig.sim.calls.wait_for("idle", 5)
    rig.sim.calls.incoming(ARC1)
    inc = rig.steps.wait("voice_incoming", number=ARC1)
    assert inc["mode"] == "callback"
    assert rig.sim.calls.wait_for("active", 5)
    rig.steps.wait("voice_mode", mode="listen_in")
    assert rig.sim.calls.audio["speaker_muted"] is True and rig.sim.calls.audio["mic_muted"] is False
    rig.sim.calls.far_end_hangup()
    rig.steps.wait("voice_done", mode="callback")
    rig.sim.calls.incoming("20110001")  # a contact, caller id in national format
    rig.steps.wait("voice_incoming", number="20110001", mode="callback")
    assert rig.sim.calls.wait_for("active", 5)
    rig.sim.calls.far_end_hangup()


def test_outside_alarms_calls_are_rejected_by_default(rigs) -> None:
    rig = rigs()
    rig.steps.wait("voice_ready")  # caller id is on
    rig.sim.calls.incoming(ARC1)
    rejected = rig.steps.wait("voice_rejected", number=ARC1)
    assert rejected["in_alarm"] is False and rejected["reason"] == "answer = reject"
    assert rig.sim.calls.wait_for("idle", 5) and "ATA" not in rig.sim.commands()


def test_answer_known_outside_alarms_is_two_way(rigs) -> None:
    rig = rigs(answer="known")
    rig.steps.wait("voice_ready")
    rig.sim.calls.incoming(ARC1)
    rig.steps.wait("voice_incoming", number=ARC1, mode="answer")
    rig.steps.wait("voice_mode", mode="two_way")
    assert rig.sim.calls.audio["speaker_muted"] is False
    rig.sim.calls.far_end_hangup()


def test_hold_during_a_call_raises_a_new_alarm_that_gets_its_own_call(rigs) -> None:
    rig = rigs()
    rig.hold()
    first = rig.steps.wait("queued", kind="silent_panic")
    assert rig.sim.calls.wait_for("active", 5)
    rig.hold()  # the call does not block the button
    deadline = time.monotonic() + 5
    while rig.steps.kinds().count("silent_panic") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert rig.daemon.open_alarm not in (None, first["id"])
    assert rig.steps.kinds().count("listen_in") == 2
    rig.sim.calls.far_end_hangup()
    # After the first call the newer alarm gets its listen-in call.
    while len(rig.dials()) < 2 or rig.sim.calls.state != "active":
        assert time.monotonic() < deadline + 5, rig.sim.commands()
        time.sleep(0.02)
    rig.sim.calls.far_end_hangup()


def test_restart_during_an_unfinished_listen_in_calls_again(rigs) -> None:
    rig = rigs(ring_timeout_s=20)
    rig.sim.calls.plan(ARC1, "no_answer", 0)
    rig.hold()
    alarm = rig.steps.wait("queued", kind="silent_panic")
    assert rig.sim.calls.wait_for("alerting", 5)
    rig.daemon.stop()  # power cut / restart while the ARC's line rings
    assert rig.sim.calls.wait_for("idle", 5)
    rig.sim.calls.plan(ARC1, "answer", 0.2)
    rig.start()
    assert rig.steps.wait("voice_resumed")["alarm"] == alarm["id"]
    assert rig.sim.calls.wait_for("active", 10)
    rig.sim.calls.far_end_hangup()
    rig.steps.wait("voice_done", reason="remote_hangup")
    deadline = time.monotonic() + 5  # cleared right after the last call of the alarm
    while rig.daemon.queue.get_state("voice_pending") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert rig.dials() == [f"ATD{ARC1};"] * 2


def test_cancel_stops_the_retries(rigs) -> None:
    rig = rigs(max_attempts=5, ring_timeout_s=1)
    rig.sim.calls.plan(ARC1, "no_answer", 0)
    rig.hold()
    rig.steps.wait("voice_calling")
    rig.daemon.cancel_alarm()
    rig.steps.wait("voice_stopped", reason="alarm no longer open")
    assert len(rig.dials()) <= 2


def test_voice_disabled(rigs) -> None:
    rig = rigs(enabled=False)
    assert rig.daemon.voice is None
    rig.hold()
    rig.steps.wait("queued", kind="silent_panic")
    rig.sim.calls.incoming(ARC1)
    time.sleep(1.0)  # nothing may dial or answer in this time
    assert "listen_in" not in rig.steps.kinds()
    assert rig.dials() == [] and "ATA" not in rig.sim.commands()


def test_kinds_not_listed_get_no_call(rigs) -> None:
    rig = rigs(kinds=["man_down"])
    rig.hold()
    rig.steps.wait("queued", kind="silent_panic")
    time.sleep(0.5)
    assert "listen_in" not in rig.steps.kinds() and rig.dials() == []


def test_alarm_raised_during_a_call_still_goes_out(rigs, mosquitto, broker_users) -> None:
    from tests.mqtt_probe import Probe

    probe = Probe(mosquitto.port, "relay", broker_users["relay"])
    assert probe.connect() == "Success"
    probe.subscribe("lonewatch/+/event")
    rig = rigs(mqtt={"port": mosquitto.port, "password": broker_users["lw-0001"]})
    rig.hold()
    assert rig.sim.calls.wait_for("active", 5)
    rig.hold()
    deadline = time.monotonic() + 10
    while True:
        kinds = [json.loads(p)["kind"] for _t, p in list(probe.messages)]
        if kinds.count("silent_panic") >= 2 and "listen_in" in kinds:
            break
        assert time.monotonic() < deadline, kinds
        time.sleep(0.05)
    assert rig.sim.calls.state == "active"  # sent while the call is still up
    rig.sim.calls.far_end_hangup()
    probe.close()


@pytest.mark.parametrize("caller,ok", [
    (ARC1, True), ("70101010", True), ("004570101010", True), ("0101010", False), ("10101", False),
    ("", False), ("+4570101011", False), ("+14570101010", False),
])
def test_number_matches(caller: str, ok: bool) -> None:
    assert number_matches(caller, {ARC1}) is ok


def test_alarm_during_a_call_with_data_paused_goes_out_after_the_call(rigs, mosquitto, broker_users) -> None:
    """2G circuit-switched call: data may pause for the call. Modelled by the broker being away
    for the call's duration: the second alarm waits in the queue and goes out after the call."""
    rig = rigs(mqtt={"port": mosquitto.port, "password": broker_users["lw-0001"]})
    assert rig.daemon.link.connected.wait(10)
    rig.hold()
    assert rig.sim.calls.wait_for("active", 5)
    mosquitto.stop()  # data pauses during the call
    deadline = time.monotonic() + 10
    while rig.daemon.link.connected.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rig.hold()
    deadline = time.monotonic() + 5
    while rig.steps.kinds().count("silent_panic") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = [f for s, f in rig.steps.items if s == "queued" and f["kind"] == "silent_panic"][1]
    rig.sim.calls.far_end_hangup()
    rig.steps.wait("voice_done", reason="remote_hangup")
    assert rig.daemon.queue.get(second["id"]) is not None  # kept while data was away
    mosquitto.start()  # the call is over: data again
    published = rig.steps.wait("published", 30, id=second["id"])
    assert rig.index("voice_done") < rig.steps.items.index(("published", published))

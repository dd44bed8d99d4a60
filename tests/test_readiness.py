"""Readiness at shift start and the unprotected warning (issue 12), on real parts: Mosquitto,
Redis, the relay in-process, pysiaalarm as the ARC, the modem simulator on a pty and gpiozero
MockFactory pins. Cases: ready; no broker; no ARC; low battery; the relay's ready timeout
telling the first contact (and the restore when ready comes later); the unprotected warning
repeated on the vibration pin while neither MQTT nor SMS works, and the outage span reaching
the relay."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from device.battery import FakeBattery
from device.config import DeviceConfig
from device.daemon import DeviceDaemon
from labstack.demo.stack import LocalArc
from labstack.servers import free_port
from modem.at import Modem
from modem.simulator import ModemSimulator
from protocol.messages import Event
from relay.readiness import ReadinessTracker, notice_id
from relay.registry import RegistryDoc, RegistryStore
from relay.status_report import collect, render_table
from relay.store import Store
from tests.relayrig import ACCOUNT, relay_dict, running_relay
from tests.test_device_daemon import Steps
from tests.test_escalation import FakeChannel, drain, engine, registry

DEV = "lw-0001"


def device_cfg(tmp_path: Path, mq_port: int, password: str, modem_port: str | None, **sections: Any) -> DeviceConfig:
    d: dict[str, Any] = {
        "device": {"id": DEV, "state_dir": str(tmp_path / "dev")},
        "mqtt": {"host": "127.0.0.1", "port": mq_port, "password": password, "tls": False, "keepalive_s": 5},
        "timing": {"test_mode": True, "alive_interval_s": 5},
        "modem": {"port": modem_port, "flavour": "sim7600"} if modem_port else {"enabled": False},
        "battery": {"source": "none", "poll_s": 1},
        "readiness": {"ack_wait_s": 3, "ready_timeout_s": 4, "recheck_s": 0.5, "min_battery_pct": 30},
    }
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return DeviceConfig.from_dict(d)


class Rig:
    """A relay, an ARC, a modem simulator and one device with its pins."""

    def __init__(self, tmp_path: Path, mosquitto, redis_server, broker_users) -> None:
        self.tmp_path, self.mq, self.redis, self.users = tmp_path, mosquitto, redis_server, broker_users
        self.store = Store.from_url(redis_server.url)
        reg = registry()
        reg["sites"][0]["account"] = ACCOUNT
        RegistryStore(self.store).save(RegistryDoc.from_dict(reg), replace=True)
        self.factory = MockFactory()
        self.steps = Steps()
        self.daemon: DeviceDaemon | None = None

    def start_device(self, *, battery: float | None = 90.0, modem_port: str | None = None, mq_port: int | None = None,
                     **sections: Any) -> DeviceDaemon:
        cfg = device_cfg(self.tmp_path, mq_port or self.mq.port, self.users[DEV], modem_port, **sections)
        self.daemon = DeviceDaemon(cfg, pin_factory=self.factory, observer=self.steps, control=False,
                                   modem=Modem(modem_port, flavour="sim7600") if modem_port else None,
                                   battery=FakeBattery(battery) if battery is not None else None)
        self.daemon.start()
        return self.daemon

    def readiness(self, final: bool | None = None, ready: bool | None = None, timeout_s: float = 15.0) -> dict[str, Any]:
        match = {k: v for k, v in (("final", final), ("ready", ready)) if v is not None}
        return self.steps.wait("readiness", timeout_s, **match)

    def played(self) -> list[str]:
        assert self.daemon is not None and self.daemon.feedback is not None
        return list(self.daemon.feedback.played)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


@pytest.fixture
def rig(tmp_path: Path, mosquitto, redis_server, broker_users) -> Iterator[Rig]:
    r = Rig(tmp_path, mosquitto, redis_server, broker_users)
    yield r
    r.stop()


@pytest.fixture
def modem() -> Iterator[ModemSimulator]:
    with ModemSimulator(flavour="sim7600") as sim:
        yield sim


def wait_modem(d: DeviceDaemon, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (d.modem_state.modem_ready and d.modem_state.signal_dbm is not None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.modem_state.modem_ready


def test_ready_when_every_check_passes(rig: Rig, modem: ModemSimulator, broker_users) -> None:
    port = free_port()
    cfg = relay_dict(rig.mq.port, broker_users["relay"], rig.redis.url, port, receiver={"poll_interval_s": 0.2})
    with LocalArc(ACCOUNT, port), running_relay(cfg) as relay:
        d = rig.start_device(modem_port=modem.port)
        assert d.link.connected.wait(15)
        wait_modem(d)
        deadline = time.monotonic() + 10
        while not any(s.ok for s in relay.linktester.status().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        shift = d.shift(True)
        step = rig.readiness()
        assert step["ready"] is True and step["final"] is True and step["failed"] == []
        assert "ready" in rig.played() and "not_ready" not in rig.played()
        result = d.place.readiness.last
        assert result["checks"]["arc"]["detail"] == "relay reports the ARC link up"
        assert result["checks"]["relay"]["ok"] and result["checks"]["modem"]["ok"]
        assert result["shift"] == shift.id
        # the relay recorded the result for this shift, and `lonewatch status` shows it
        deadline = time.monotonic() + 10
        while ReadinessTracker.record(rig.store, DEV).get("ready") != "1" and time.monotonic() < deadline:
            time.sleep(0.05)
        rec = ReadinessTracker.record(rig.store, DEV)
        assert rec["shift"] == shift.id and rec["result_shift"] == shift.id and rec["ready"] == "1"
        row = collect(rig.store, [DEV])[0]
        assert row.ready == "ready"
        assert "ready" in render_table([row]).splitlines()[1]
        log = ReadinessTracker.history(rig.store, DEV)
        assert [e["what"] for e in log] == ["shift_start", "readiness"]


def test_not_ready_without_broker(rig: Rig, modem: ModemSimulator) -> None:
    d = rig.start_device(modem_port=modem.port, mq_port=free_port())  # nothing listens there
    wait_modem(d)
    d.shift(True)
    first = rig.readiness(final=False)
    assert first["ready"] is False and {"relay", "arc"} <= set(first["failed"])
    final = rig.readiness(final=True)
    assert final["ready"] is False
    assert rig.played().count("not_ready") == 2  # at once, and again when it is final
    assert "ready" not in rig.played()
    queued = [q.kind for q in d.queue.due(time.time() + 3600, 0)]
    assert queued.count("readiness") == 2  # both results wait in the queue for the relay


def test_not_ready_without_arc(rig: Rig, modem: ModemSimulator, broker_users) -> None:
    port = free_port()  # no receiver listens: the NULL polls fail
    cfg = relay_dict(rig.mq.port, broker_users["relay"], rig.redis.url, port, receiver={"poll_interval_s": 0.2})
    with running_relay(cfg) as relay:
        deadline = time.monotonic() + 10
        while not any(s.ok is False for s in relay.linktester.status().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        d = rig.start_device(modem_port=modem.port)
        assert d.link.connected.wait(15)
        wait_modem(d)
        d.shift(True)
        step = rig.readiness(final=True)
        assert step["ready"] is False and step["failed"] == ["arc"]
        # the relay's answer ("down", from its failing NULL polls), or the 401 it could not deliver
        assert d.place.readiness.last["checks"]["arc"]["detail"] in ("relay reports the ARC link DOWN",
                                                                       "the ARC did not take the shift start")
        assert d.place.readiness.last["checks"]["relay"]["ok"] is True
        deadline = time.monotonic() + 10
        while ReadinessTracker.record(rig.store, DEV).get("final") != "1" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collect(rig.store, [DEV])[0].ready == "NOT ready: arc"


def test_not_ready_on_low_battery(rig: Rig, modem: ModemSimulator, broker_users) -> None:
    cfg = relay_dict(rig.mq.port, broker_users["relay"], rig.redis.url, None)  # no ARC contract: "none"
    with running_relay(cfg):
        d = rig.start_device(modem_port=modem.port, battery=12.0)
        assert d.link.connected.wait(15)
        wait_modem(d)
        d.shift(True)
        step = rig.readiness(final=True)
        assert step["ready"] is False and step["failed"] == ["battery"]
        checks = d.place.readiness.last["checks"]
        assert checks["battery"]["detail"] == "12 % (need >= 30 %)"
        assert checks["arc"] == {"ok": True, "detail": "no ARC for this site", "required": True}


def test_a_stuck_button_and_a_plugged_check_count(rig: Rig, broker_users) -> None:
    cfg = relay_dict(rig.mq.port, broker_users["relay"], rig.redis.url, None)
    with running_relay(cfg):
        d = rig.start_device()
        from device.readiness import CheckResult

        d.place.readiness.add_check("accelerometer", lambda: CheckResult(False, "WHO_AM_I 0x00, expected 0x33"))
        assert d.link.connected.wait(15)
        d.shift(True)
        step = rig.readiness(final=True)
        assert step["failed"] == ["accelerometer"]  # no modem: modem/signal only reported


# --------------------------------------------------------------------------- relay side


def test_ready_timeout_tells_the_first_contact_once_and_restores(redis_server) -> None:
    store = Store.from_url(redis_server.url)
    sms = FakeChannel("sms-modem")
    esc = engine(store, registry(), sms=[sms])
    tracker = ReadinessTracker(store, esc.registry, esc.alarms, ready_timeout_s=60, poll_s=0.05)
    other = ReadinessTracker(store, esc.registry, esc.alarms, ready_timeout_s=60)  # a second relay
    t0 = time.time()
    shift = Event(DEV, 5, "shift_start", t0, data={"source": "cli"})
    tracker.on_stored(shift, True)
    bad = Event(DEV, 6, "readiness", t0 + 1, data={"ready": False, "final": False, "shift": shift.id, "checks": {
        "relay": {"ok": True, "detail": "ok", "required": True},
        "battery": {"ok": False, "detail": "12 % (need >= 30 %)", "required": True}}})
    tracker.on_stored(bad, True)
    assert tracker.tick(t0 + 30) == 0  # not due yet
    assert tracker.tick(t0 + 61) + other.tick(t0 + 61) == 1  # once, whichever relay
    notice = esc.alarms.get(notice_id(shift.id))
    assert notice is not None and notice.kind == "not_ready" and [c.name for c in notice.contacts] == ["Contact 1"]
    esc.tick()
    drain(esc)
    assert len(sms.sent) == 1
    to, _subject, body = sms.sent[0]
    assert to == "+4520110001"
    assert body.startswith("IKKE KLAR: Anna Hansens lonewatch-enhed") and "battery: 12 % (need >= 30 %)" in body
    # ready after all: the notice is closed and the contact is told
    tracker.on_stored(Event(DEV, 7, "readiness", t0 + 70, data={"ready": True, "final": True, "shift": shift.id,
                                                                 "checks": {}}), True)
    drain(esc)
    assert esc.alarms.get(notice_id(shift.id)).state == "restored"
    assert sms.sent[-1][2].startswith("GENOPRETTET")
    assert ReadinessTracker.record(store, DEV)["ready"] == "1"


def test_ready_in_time_tells_nobody(redis_server) -> None:
    store = Store.from_url(redis_server.url)
    sms = FakeChannel("sms-modem")
    esc = engine(store, registry(), sms=[sms])
    tracker = ReadinessTracker(store, esc.registry, esc.alarms, ready_timeout_s=60)
    t0 = time.time()
    shift = Event(DEV, 5, "shift_start", t0)
    tracker.on_stored(shift, True)
    tracker.on_stored(Event(DEV, 6, "readiness", t0 + 2, data={"ready": True, "final": True, "shift": shift.id}), True)
    assert tracker.tick(t0 + 3600) == 0
    esc.tick()
    assert drain(esc) == 0 and sms.sent == []


# --------------------------------------------------------------------------- unprotected


def test_unprotected_warning_repeats_on_the_pins_and_the_span_reaches_the_relay(rig: Rig, broker_users,
                                                                                    wait_until) -> None:
    cfg = relay_dict(rig.mq.port, broker_users["relay"], rig.redis.url, None)
    with running_relay(cfg):
        d = rig.start_device(readiness={"unprotected_after_s": 0.6, "unprotected_repeat_s": 5.0})
        assert d.link.connected.wait(15)
        d.shift(True)
        rig.readiness(final=True)
        vibration = rig.factory.pin(d.cfg.gpio.vibration_pin)
        before = len(vibration.states)
        rig.mq.stop()  # no broker, and this device has no modem: nothing could carry an alarm
        assert wait_until(lambda: d.place.unprotected.warnings >= 2, 30)
        assert rig.played().count("unprotected") >= 2
        # The pattern really drives the motor: 3 long pulses a warning, the second warning's
        # pulses a moment after it is counted (the pattern plays on its own thread).
        assert wait_until(lambda: sum(1 for s in vibration.states[before:] if s.state) >= 4, 10), vibration.states[before:]
        rig.mq.start()
        assert wait_until(lambda: not d.place.unprotected.unprotected, 30)
        over = rig.steps.wait("unprotected_over", 5)
        assert over["span_s"] > 0.6
        def spans() -> list:
            return [e for e in ReadinessTracker.history(rig.store, DEV) if e["what"] == "unprotected"]

        # Wait on the condition itself: the record and its history entry are written one after the other.
        assert wait_until(lambda: ReadinessTracker.record(rig.store, DEV).get("unprotected_s") and spans(), 30)
        log = spans()
        assert len(log) == 1 and float(log[0]["span_s"]) > 0.6
        assert collect(rig.store, [DEV])[0].unprotected_s == pytest.approx(float(log[0]["span_s"]))


def test_unprotected_stays_quiet_off_shift_and_for_short_gaps() -> None:
    from device.place_config import ReadinessConfig
    from device.readiness import UnprotectedWatch

    played: list[str] = []
    reported: list[tuple[str, dict]] = []
    t = [0.0]
    w = UnprotectedWatch(ReadinessConfig(unprotected_after_s=120, unprotected_repeat_s=60), play=played.append,
                         report=lambda k, d: reported.append((k, d)), observer=lambda s, f: None,
                         clock=lambda: t[0], wall=lambda: 1.8e9 + t[0])
    for t[0] in (0, 100, 200):
        w.tick(False, False, False)  # off shift
    assert played == []
    for t[0] in (300, 350):
        w.tick(True, False, False)
    w.tick(True, False, True)  # SMS back after 50 s: a short gap, nothing to tell
    assert played == [] and reported == []
    for t[0] in (400, 520, 550, 580, 640):
        w.tick(True, False, False)
    assert played == ["unprotected", "unprotected", "unprotected"]  # at 520, 580, 640
    t[0] = 650
    w.tick(True, True, False)
    assert reported == [("unprotected", {"since": 1.8e9 + 400, "until": 1.8e9 + 650, "span_s": 250.0})]


def test_an_early_ack_and_two_threads_playing_do_not_lose_the_result(tmp_path: Path) -> None:
    """The relay may ack the shift start before the self-test begins; the paho thread and the
    readiness thread may play patterns at the same moment (gpiozero's blink is not
    thread-safe on its own): the result still comes."""
    import threading

    from device.feedback import Feedback
    from device.place_config import ReadinessConfig
    from device.readiness import ReadinessCheck
    from protocol.messages import Ack

    feedback = Feedback(27, 22, pin_factory=MockFactory())
    raised: list[tuple[str, dict]] = []
    check = ReadinessCheck(ReadinessConfig(ack_wait_s=2, ready_timeout_s=2, recheck_s=0.5), {},
                           raise_event=lambda k, d: raised.append((k, d)), play=feedback.play,
                           observer=lambda s, f: None)
    check.on_ack(Ack("lw-0001:7", "received", time.time(), {"arc_link": "up"}))  # before start
    stop = threading.Event()

    def other_thread() -> None:
        while not stop.is_set():
            feedback.play("arc_delivered")

    t = threading.Thread(target=other_thread)
    t.start()
    try:
        check.start("lw-0001:7")
        deadline = time.monotonic() + 10
        while not raised and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(5)
        check.stop()
        feedback.close()
    assert raised and raised[0][1]["ready"] is True and raised[0][1]["checks"]["relay"]["ok"] is True

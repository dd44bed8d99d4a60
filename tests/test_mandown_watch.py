"""Man-down in the device daemon (issue 10), on gpiozero MockFactory pins with the simulated
accelerometer raising its interrupts on them, traces played faster than real time: the
pre-alarm, cancelling it by a press, the pause gesture and its time-out, shift and charger
pauses, a sensor that dies in the pre-alarm, and the open man-down cancelled with the cancel
gesture. (The whole path to a pysiaalarm ARC in real time: tests/test_mandown_e2e.py.)"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from device.accel_sim import SimAccelerometer
from device.accel_trace import Trace
from device.config import DeviceConfig
from device.config_sections import TimingConfig
from device.mandown_config import MandownConfig
from device.daemon import DeviceDaemon
from labstack.servers import free_port
from tests import traces

SPEED = 10.0
BUTTON = 17


class Steps:
    """The daemon's observer steps, waitable."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.cond = threading.Condition()

    def __call__(self, step: str, fields: dict[str, Any]) -> None:
        with self.cond:
            self.items.append((step, dict(fields)))
            self.cond.notify_all()

    def wait(self, step: str, timeout_s: float = 15.0, **match: Any) -> dict[str, Any] | None:
        def found():
            return next((f for s, f in self.items if s == step and all(f.get(k) == v for k, v in match.items())), None)

        with self.cond:
            self.cond.wait_for(lambda: found() is not None, timeout_s)
            return found()

    def count(self, step: str, n: int, timeout_s: float = 10.0, **match: Any) -> bool:
        def hits() -> int:
            return sum(1 for s, f in self.items if s == step and all(f.get(k) == v for k, v in match.items()))

        with self.cond:
            return self.cond.wait_for(lambda: hits() >= n, timeout_s)

    def states(self) -> list[str]:
        with self.cond:
            return [f["state"] for s, f in self.items if s == "mandown"]


def make(tmp_path: Path, trace: Trace, factory: MockFactory, speed: float = SPEED, **mandown: Any):
    cfg = DeviceConfig.from_dict({
        "device": {"id": "lw-0001", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": free_port(), "tls": False},  # no broker: events stay queued
        "modem": {"enabled": False},
        "mandown": {"enabled": True, "sensor": "sim", "sim_trace": "unused.csv", "only_on_shift": False, **mandown},
    })
    sim = SimAccelerometer(trace, pin_factory=factory, data_pin=cfg.mandown.data_pin, wake_pin=cfg.mandown.wake_pin,
                           speed=speed)
    return cfg, sim


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


def start(cfg: DeviceConfig, sim, factory: MockFactory) -> tuple[DeviceDaemon, Steps]:
    steps = Steps()
    daemon = DeviceDaemon(cfg, pin_factory=factory, observer=steps, control=False, accel=sim)
    daemon.start()
    return daemon, steps


def tap(factory: MockFactory, times: int) -> None:
    pin = factory.pin(BUTTON)
    for _ in range(times):
        pin.drive_low()
        time.sleep(0.12)
        pin.drive_high()
        time.sleep(0.15)


def pause_gesture(factory: MockFactory, steps: Steps, **match: Any) -> dict[str, Any] | None:
    """Four taps and the ``mandown_pause`` step they make. A try in which the loaded machine
    stretched a tap past max_press_s or the four past pause_window_s (timed by the pin's own
    timestamps) *is* no gesture, proves nothing and is made again (3 tries at most)."""
    pin = factory.pin(BUTTON)
    timing = TimingConfig()
    before = len([f for s, f in steps.items if s == "mandown_pause"])
    for _ in range(3):
        first = len(pin.states)
        tap(factory, 4)
        got = steps.wait("mandown_pause", 10, **match)
        if got is not None:
            return got
        states = pin.states[first - 1:]
        lows = [(a.timestamp, b.timestamp) for a, b in zip(states, states[1:]) if not a.state and b.state]
        in_band = len(lows) == 4 and all(timing.min_press_s < e - b < timing.max_press_s for b, e in lows) \
            and lows[-1][0] - lows[0][0] < MandownConfig().pause_window_s
        if in_band or len([f for s, f in steps.items if s == "mandown_pause"]) != before:
            return None  # a real miss (or something else was recognised): no retry
    return None


def queued(daemon: DeviceDaemon, kind: str) -> list:
    return [e for e in daemon.queue.due(time.time() + 3600, 0.0) if e.kind == kind]


def test_a_fall_raises_man_down_through_the_durable_queue(tmp_path: Path, factory: MockFactory) -> None:
    cfg, sim = make(tmp_path, traces.fall_forward(1), factory)
    daemon, steps = start(cfg, sim, factory)
    try:
        assert steps.wait("mandown", state="impact") is not None
        assert steps.wait("mandown", state="prealarm", timeout_s=20) is not None
        assert steps.wait("feedback", 5, pattern="mandown_prealarm") is not None
        down = steps.wait("queued", 20, kind="man_down")
        assert down is not None
        [event] = queued(daemon, "man_down")
        assert b'"trigger": "fall"' in event.payload or b'"trigger":"fall"' in event.payload
        assert daemon.open_alarm == event.id
        seen = steps.states()
        assert seen.index("impact") < seen.index("prealarm") < seen.index("man_down")
        # the pre-alarm vibration really ran on the motor pin, several times
        assert daemon.feedback.played.count("mandown_prealarm") >= 2
        assert daemon.status()["mandown"] == "man_down"
        # the open man-down is cancelled like a panic: 3 short presses → cancel (CID 406)
        tap(factory, 3)
        assert steps.wait("queued", 10, kind="cancel") is not None
        [cancel] = queued(daemon, "cancel")
        assert event.id.encode() in cancel.payload
    finally:
        daemon.stop()


def test_a_press_in_the_prealarm_cancels_it(tmp_path: Path, factory: MockFactory) -> None:
    cfg, sim = make(tmp_path, traces.fall_forward(2), factory)
    daemon, steps = start(cfg, sim, factory)
    try:
        assert steps.wait("mandown", state="prealarm", timeout_s=25) is not None
        tap(factory, 1)
        cancelled = steps.wait("mandown", 5, state="cancelled")
        assert cancelled is not None and cancelled["reason"] == "button"
        assert steps.wait("feedback", 5, pattern="mandown_cancelled") is not None
        time.sleep(30 / SPEED + 1.0)  # past the end of the pre-alarm it would have had
        assert queued(daemon, "man_down") == [] and "man_down" not in steps.states()
    finally:
        daemon.stop()


def test_the_worker_pause_gesture_and_its_timeout(tmp_path: Path, factory: MockFactory) -> None:
    cfg, sim = make(tmp_path, traces.left_on_table(1), factory)
    cfg = dataclasses.replace(cfg, mandown=dataclasses.replace(cfg.mandown, pause_max_s=6.0))
    daemon, steps = start(cfg, sim, factory)
    try:
        assert pause_gesture(factory, steps, paused=True, by="worker") is not None  # 4 short presses: pause
        assert steps.wait("mandown", 5, state="paused", reason="worker") is not None
        assert steps.wait("feedback", 5, pattern="mandown_paused") is not None
        assert pause_gesture(factory, steps, paused=False, by="worker") is not None  # again: resumes at once
        tap(factory, 4)
        assert steps.count("mandown_pause", 2, paused=True)
        assert steps.wait("mandown_pause", 15, paused=False, by="timeout") is not None  # ends by itself
        assert steps.count("feedback", 2, pattern="mandown_resumed")
    finally:
        daemon.stop()


def test_a_fall_while_paused_is_not_an_alarm(tmp_path: Path, factory: MockFactory) -> None:
    cfg, sim = make(tmp_path, traces.fall_forward(3), factory, speed=5.0)
    daemon, steps = start(cfg, sim, factory)
    try:
        assert pause_gesture(factory, steps, paused=True) is not None
        assert steps.wait("mandown", 10, state="paused") is not None
        time.sleep(60 / 5.0)  # the fall, and the time its pre-alarm and man-down would take
        assert "prealarm" not in steps.states() and queued(daemon, "man_down") == []
        assert sim.mode == "off"  # paused: the chip drives no interrupt line
    finally:
        daemon.stop()


def test_off_shift_and_on_the_charger_pause_man_down(tmp_path: Path, factory: MockFactory) -> None:
    cfg, sim = make(tmp_path, traces.walking(1), factory, only_on_shift=True, charge_pin=13)
    daemon, steps = start(cfg, sim, factory)
    try:
        assert steps.wait("mandown", 5, state="paused", reason="off_shift") is not None
        daemon.shift(True)
        assert steps.wait("mandown", 5, state="upright") is not None
        factory.pin(13).drive_high()  # the charger says "charging"
        assert steps.wait("mandown", 5, state="paused", reason="charger") is not None
        factory.pin(13).drive_low()
        assert steps.count("mandown", 2, state="upright")
    finally:
        daemon.stop()


def test_a_sensor_that_dies_in_the_prealarm_still_ends_in_man_down(tmp_path: Path, factory: MockFactory) -> None:
    cfg, sim = make(tmp_path, traces.fall_forward(4), factory)
    daemon, steps = start(cfg, sim, factory)
    try:
        assert steps.wait("mandown", state="prealarm", timeout_s=25) is not None
        sim.fail = True
        assert steps.wait("mandown_sensor_error", 5) is not None
        assert steps.wait("queued", 15, kind="man_down") is not None
    finally:
        daemon.stop()


def test_walking_upright_needs_no_fifo_reads(tmp_path: Path, factory: MockFactory) -> None:
    """The chip guards the upright worker alone: the daemon does not read at 50 Hz."""
    cfg, sim = make(tmp_path, traces.walking(2), factory, speed=20.0)
    daemon, steps = start(cfg, sim, factory)
    try:
        time.sleep(3.0)  # 60 s of walking
        assert sim.reads == 0 and sim.mode == "watch"
        assert "tilted" not in steps.states()
    finally:
        daemon.stop()


def test_enabled_without_a_sensor_keeps_the_panic_button(tmp_path: Path, factory: MockFactory) -> None:
    cfg, _ = make(tmp_path, traces.walking(1), factory)
    steps = Steps()
    daemon = DeviceDaemon(cfg, pin_factory=factory, observer=steps, control=False, accel=None)
    daemon.start()
    try:
        assert daemon.mandown is None
        factory.pin(BUTTON).drive_low()
        time.sleep(2.3)
        factory.pin(BUTTON).drive_high()
        assert steps.wait("queued", 5, kind="silent_panic") is not None
    finally:
        daemon.stop()


def test_a_sensor_that_fails_at_start_is_logged_not_fatal(tmp_path: Path, factory: MockFactory) -> None:
    cfg, sim = make(tmp_path, traces.walking(1), factory)
    sim.fail = True
    daemon, steps = start(cfg, sim, factory)
    try:
        assert daemon.mandown is None and steps.wait("mandown_sensor_error", 1) is not None
        assert daemon.health() == [] or all("man-down" not in p for p in daemon.health())
    finally:
        daemon.stop()

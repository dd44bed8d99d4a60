"""The device daemon's own behaviour (SPEC §2) without a relay: gestures → events, the device
check-in timer (warning, expiry, restart), shifts by hand (control socket and CLI) and by
schedule, battery events with hysteresis, systemd notifications and the watchdog's health
check. The broker is unreachable (a closed port): events simply stay queued."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from gpiozero.pins.mock import MockFactory

from device.battery import BatteryError, BatteryMonitor, FakeBattery, Max17048
from device.config import DeviceConfig, load_device_config
from device.control import ControlError, request
from device.daemon import DeviceDaemon, DeviceError
from device.sdnotify import notify, watchdog_interval_s
from device.service import serve
from device.shift import ShiftSchedule, parse_window
from protocol.messages import decode
from cli.main import main as lonewatch
from labstack.servers import free_port


class Steps:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def __call__(self, step: str, fields: dict[str, Any]) -> None:
        with self._cond:
            self.items.append((step, fields))
            self._cond.notify_all()

    def wait(self, step: str, timeout_s: float = 10.0, **match: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((f for s, f in self.items if s == step and all(f.get(k) == v for k, v in match.items())), None)

        with self._cond:
            self._cond.wait_for(lambda: find() is not None, timeout_s)
            found = find()
        assert found is not None, f"no {step} {match}; saw {[s for s, _ in self.items]}"
        return found

    def kinds(self) -> list[str]:
        with self._cond:
            return [f["kind"] for s, f in self.items if s == "queued"]


def make_cfg(state_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "device": {"id": "lw-0001", "state_dir": str(state_dir)},
        "mqtt": {"host": "127.0.0.1", "port": free_port(), "tls": False},
        "timing": {"test_mode": True, "hold_s": 0.8, "cancel_window_s": 1.0, "checkin_window_s": 0.6,
                   "bounce_s": 0.02, "min_press_s": 0.05, "max_press_s": 0.4},
        "modem": {"enabled": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


class Dev:
    def __init__(self, cfg: dict[str, Any], battery: Any = None) -> None:
        self.cfg = DeviceConfig.from_dict(cfg)
        self.battery = battery
        self.factory = MockFactory()
        self.steps = Steps()
        self.daemon: DeviceDaemon | None = None

    def start(self) -> DeviceDaemon:
        self.factory.reset()
        self.steps = Steps()
        self.daemon = DeviceDaemon(self.cfg, pin_factory=self.factory, observer=self.steps, battery=self.battery)
        self.daemon.start()
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def tap(self, n: int) -> None:
        pin = self.factory.pin(self.cfg.gpio.button_pin)
        for _ in range(n):
            pin.drive_low()
            time.sleep(0.1)
            pin.drive_high()
            time.sleep(0.1)

    def hold(self, seconds: float) -> None:
        pin = self.factory.pin(self.cfg.gpio.button_pin)
        pin.drive_low()
        time.sleep(seconds)
        pin.drive_high()
        time.sleep(0.15)  # a finger lifts before it presses again

    def payload(self, event_id: str) -> Any:
        assert self.daemon is not None
        qe = self.daemon.queue.get(event_id)
        assert qe is not None
        return decode(qe.payload)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    d = Dev(make_cfg(tmp_path / "s", timing={"checkin_default_s": 5, "checkin_warn_before_s": 3}))
    yield d
    d.stop()


def test_gestures_become_events(dev: Dev) -> None:
    daemon = dev.start()
    dev.hold(1.1)
    alarm = dev.steps.wait("queued", kind="silent_panic")
    assert daemon.open_alarm == alarm["id"]
    dev.tap(3)
    cancel = dev.steps.wait("queued", kind="cancel")
    assert dev.payload(cancel["id"]).data == {"cancels": alarm["id"]}
    assert daemon.open_alarm is None and daemon.queue.get(alarm["id"]) is not None  # never deleted
    dev.tap(2)
    start = dev.steps.wait("queued", kind="checkin_start")
    assert dev.payload(start["id"]).data == {"duration_s": 5}
    dev.tap(2)
    done = dev.steps.wait("queued", kind="checkin_done")
    assert dev.payload(done["id"]).data == {"checkin": start["id"]}
    assert "checkin_done" in daemon.feedback.played


def test_checkin_warns_then_expires_as_missed_checkin(dev: Dev) -> None:
    daemon = dev.start()
    start = daemon.start_checkin()
    warn = dev.steps.wait("checkin_expiring")
    assert warn["id"] == start.id
    assert "checkin_expiring" in daemon.feedback.played
    missed = dev.steps.wait("queued", kind="missed_checkin")
    assert dev.payload(missed["id"]).data == {"checkin": start.id}
    assert not daemon.checkin.running and daemon.queue.get_state("checkin") is None
    with pytest.raises(DeviceError):
        daemon.finish_checkin()


def test_checkin_survives_a_restart(dev: Dev) -> None:
    daemon = dev.start()
    start = daemon.start_checkin(6)
    dev.stop()
    daemon = dev.start()
    assert daemon.checkin.running and daemon.checkin.current.id == start.id
    assert daemon.checkin.remaining_s() <= 6
    missed = dev.steps.wait("queued", 10, kind="missed_checkin")
    assert dev.payload(missed["id"]).data == {"checkin": start.id}


def test_control_socket_and_cli(dev: Dev, tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(f'[device]\nid = "lw-0001"\nstate_dir = "{dev.cfg.device.state_dir}"\n[modem]\nenabled = false\n')
    cli = CliRunner()
    result = cli.invoke(lonewatch, ["device", "shift", "start", "-c", str(config)])
    assert result.exit_code == 3 and "not running" in result.output  # no daemon yet
    daemon = dev.start()
    sock = Path(dev.cfg.device.state_dir) / "control.sock"
    assert sock.stat().st_mode & 0o777 == 0o600
    result = cli.invoke(lonewatch, ["device", "shift", "start", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "shift_start queued as lw-0001:" in result.output
    assert daemon.on_shift
    result = cli.invoke(lonewatch, ["device", "shift", "start", "-c", str(config)])
    assert result.exit_code == 1 and "already on shift" in result.output
    result = cli.invoke(lonewatch, ["device", "checkin", "start", "--duration", "2", "-c", str(config), "--json"])
    assert result.exit_code == 1 and "duration_s must be an integer 5..86400" in result.output
    result = cli.invoke(lonewatch, ["device", "status", "-c", str(config), "--json"])
    status = json.loads(result.output)
    assert status["on_shift"] is True and status["queue_depth"] == 1 and status["problems"] == []
    assert request(dev.cfg.device.state_dir, {"cmd": "shift_end"})["ok"] is True
    assert request(dev.cfg.device.state_dir, {"cmd": "launch"}) == {"ok": False, "error": "unknown command 'launch'"}
    assert dev.steps.kinds() == ["shift_start", "shift_end"]
    dev.stop()
    with pytest.raises(ControlError):
        request(dev.cfg.device.state_dir, {"cmd": "status"})


def test_bad_control_request_is_refused(dev: Dev) -> None:
    dev.start()
    path = Path(dev.cfg.device.state_dir) / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(b"not json\n")
        reply = json.loads(s.makefile().readline())
    assert reply["ok"] is False and "bad request" in reply["error"]


def test_schedule_starts_and_ends_shifts_once(tmp_path: Path) -> None:
    now = datetime.now()
    day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][now.weekday()]
    cfg = make_cfg(tmp_path / "s", shift={"schedule": [f"{day} 00:00-24:00"]})
    d = Dev(cfg)
    daemon = d.start()
    try:
        d.steps.wait("queued", kind="shift_start")
        assert daemon.on_shift
        d.stop()
        daemon = d.start()  # restart inside the window: no second shift_start
        time.sleep(1.5)
        assert d.steps.kinds() == []
        daemon.shift(False)  # ended by hand: the schedule does not start it again
        time.sleep(1.5)
        assert d.steps.kinds() == ["shift_end"] and not daemon.on_shift
    finally:
        d.stop()


def test_schedule_transitions_and_parsing() -> None:
    s = ShiftSchedule.parse(["Mon-Fri 22:00-06:00", "Sat,Sun 08:00-14:00"])
    assert s.active(datetime(2026, 11, 30, 23, 30))      # Monday night
    assert s.active(datetime(2026, 12, 5, 5, 59))        # Saturday early: Friday's shift
    assert not s.active(datetime(2026, 12, 5, 6, 0))
    assert s.active(datetime(2026, 12, 6, 13, 0)) and not s.active(datetime(2026, 12, 6, 21, 0))
    assert s.transition(True, None, on_shift=False) == "shift_start"
    assert s.transition(False, None, on_shift=False) is None     # never an end on first look
    assert s.transition(False, True, on_shift=True) == "shift_end"
    assert s.transition(False, True, on_shift=False) is None     # ended by hand already
    assert s.transition(True, True, on_shift=False) is None      # no edge, no action
    assert parse_window("Fri-Mon 10:00-11:00").days == frozenset({4, 5, 6, 0})


def test_schedule_errors_have_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text('[device]\nid = "lw-0001"\n\n[shift]\nschedule = ["Mon-Fri 22:00-06:00", "Xmas 10:00-11:00"]\n')
    with pytest.raises(Exception) as exc:
        load_device_config(path)
    assert f"{path}:5: shift.schedule[1]: 'xmas' is not a day" in str(exc.value)


def test_battery_low_and_restore_with_hysteresis(tmp_path: Path) -> None:
    battery = FakeBattery(50)
    d = Dev(make_cfg(tmp_path / "s", battery={"poll_s": 1, "low_pct": 20, "restore_pct": 30}), battery)
    daemon = d.start()
    try:
        time.sleep(0.3)
        assert daemon.alive().battery_pct == 50
        battery.percent = 15
        low = d.steps.wait("queued", 5, kind="low_battery")
        assert d.payload(low["id"]).data == {"battery_pct": 15}
        battery.percent = 25  # above low, below restore: nothing
        time.sleep(1.5)
        d.stop()
        daemon = d.start()  # still low after a restart: no second low_battery
        time.sleep(1.5)
        assert d.steps.kinds() == []
        battery.fail = True
        time.sleep(1.2)
        assert daemon.alive().battery_pct == 25  # the last good reading stays
        battery.fail = False
        battery.percent = 31
        restore = d.steps.wait("queued", 5, kind="battery_restore")
        assert d.payload(restore["id"]).data == {"battery_pct": 31}
    finally:
        d.stop()


class FakeBus:
    """An SMBus with a MAX17048 behind it: registers as (msb, lsb)."""

    def __init__(self, regs: dict[int, int]) -> None:
        self.regs = regs
        self.fail = False

    def read_i2c_block_data(self, addr: int, reg: int, n: int) -> list[int]:
        assert addr == 0x36 and n == 2
        if self.fail:
            raise OSError(121, "Remote I/O error")
        value = self.regs[reg]
        return [value >> 8, value & 0xFF]

    def close(self) -> None:
        pass


def test_max17048_registers() -> None:
    # 3.9 V = 49920 × 78.125 µV; SOC 87.5 % = 0x5780; CRATE −5 LSB = discharging 1.04 %/h
    bus = FakeBus({0x08: 0x0012, 0x02: 49920, 0x04: 0x5780, 0x16: 0x10000 - 5})
    gauge = Max17048(1, 0x36, bus_factory=lambda n: bus)
    r = gauge.read()
    assert (r.percent, r.voltage_v, r.charging) == (87.5, 3.9, False)
    bus.regs[0x04] = 0x6480  # 100.5 % on a full cell: clamped
    assert gauge.read().percent == 100.0
    bus.fail = True
    with pytest.raises(BatteryError):
        gauge.read()
    with pytest.raises(BatteryError, match="no MAX17048"):
        Max17048(1, 0x36, bus_factory=lambda n: FakeBus({0x08: 0x4242}))


def test_battery_monitor_refuses_no_hysteresis() -> None:
    with pytest.raises(ValueError):
        BatteryMonitor(FakeBattery(), 30, 30)


def test_sd_notify_datagrams(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        assert notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": str(path)})
        assert s.recv(100) == b"READY=1\nSTATUS=ok"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0lonewatch-test-" + str(time.time()))
        name = s.getsockname()
        name = name.decode() if isinstance(name, bytes) else name
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name[1:]})
        assert s.recv(100) == b"WATCHDOG=1"
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None


def test_watchdog_pings_only_while_healthy(dev: Dev) -> None:
    sent: list[str] = []
    stop = threading.Event()
    daemon = DeviceDaemon(dev.cfg, pin_factory=dev.factory, control=False)
    th = threading.Thread(target=serve, args=(daemon, stop),
                          kwargs={"env": {"WATCHDOG_USEC": "400000"}, "notify": sent.append})
    th.start()
    try:
        deadline = time.monotonic() + 5
        while sent.count("WATCHDOG=1") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sent[0].startswith("READY=1") and sent.count("WATCHDOG=1") >= 2
        assert daemon.health() == []
        daemon.heartbeats["sender"] = time.monotonic() - 3600  # as if the sender loop hung
        daemon._stop.set()  # keep it stalled: the loops stop beating
        time.sleep(0.1)
        problems = daemon.health()
        assert any("sender loop stalled" in p for p in problems)
        before = sent.count("WATCHDOG=1")
        time.sleep(0.6)
        assert sent.count("WATCHDOG=1") == before
        assert any(m.startswith("STATUS=unhealthy") for m in sent)
    finally:
        stop.set()
        th.join(10)
    assert sent[-1] == "STOPPING=1"


def test_an_unusable_position_never_costs_the_alarm(dev: Dev) -> None:
    # A garbled fix (infinite accuracy) must not make the alarm unencodable (issue 6 finding).
    from protocol.messages import Position

    daemon = dev.start()
    daemon.modem_state.position = Position(55.1, 12.1, float("inf"), 1_796_000_000.0)
    dev.hold(1.1)
    alarm = dev.steps.wait("queued", kind="silent_panic")
    sent = dev.payload(alarm["id"])
    assert sent.kind == "silent_panic" and sent.position is None

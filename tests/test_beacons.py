"""BLE beacons on the device (issue 12): advertisement parsing, the smoothing that picks the
worker's place (nearest, lost, two equal, unknown), no adapter, and the daemon carrying the
beacon on its alarm and alive. The scanner is the simulator (:mod:`device.beacon_sim`), and
the real bleak backend on this machine, which has no Bluetooth adapter."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.beacon_sim import SimulatedScanner
from device.beacons import Advert, BeaconService, BeaconTracker, BeaconUnavailableError, BleakScanner
from device.config import DeviceConfig
from device.daemon import DeviceDaemon
from protocol.beacons import (eddystone_id, ibeacon_id, normalize_beacon_id, parse_eddystone_uid,
                              parse_ibeacon)
from protocol.errors import ValidationError
from protocol.messages import BeaconSighting, Event, decode, encode
from tests.test_device_daemon import Steps, make_cfg

UUID = "fda50693-a4e2-4fb1-afcf-c6eb07647825"
LAUNDRY = ibeacon_id(UUID, 1, 17)
CORRIDOR = ibeacon_id(UUID, 1, 18)
BOILER = eddystone_id(bytes.fromhex("edd1ebeac04e5defa017"), bytes.fromhex("0000000000a1"))


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


# --------------------------------------------------------------------------- wire formats


def test_ibeacon_advertisement_is_parsed() -> None:
    payload = bytes([0x02, 0x15]) + bytes.fromhex(UUID.replace("-", "")) + (1).to_bytes(2, "big") \
        + (17).to_bytes(2, "big") + bytes([0xC5])  # TX power -59 dBm at 1 m
    assert parse_ibeacon({0x004C: payload}) == (LAUNDRY, -59)
    assert parse_ibeacon({0x004C: payload[:10]}) is None  # truncated
    assert parse_ibeacon({0x0059: payload}) is None  # another company's data
    assert parse_ibeacon({0x004C: bytes([0x10, 0x05]) + payload[2:]}) is None  # Apple, but no iBeacon


def test_eddystone_uid_frame_is_parsed() -> None:
    frame = bytes([0x00, 0xEE]) + bytes.fromhex("edd1ebeac04e5defa017") + bytes.fromhex("0000000000a1") + b"\0\0"
    key = "0000feaa-0000-1000-8000-00805f9b34fb"
    assert parse_eddystone_uid({key: frame}) == (BOILER, -18)
    assert parse_eddystone_uid({key: bytes([0x10]) + frame[1:]}) is None  # a URL frame
    assert parse_eddystone_uid({"0000180f-0000-1000-8000-00805f9b34fb": frame}) is None


@pytest.mark.parametrize("spelling", [
    f"ib:{UUID}:1:17", f"ib:{UUID.upper()}:1:17", f"ib:{UUID.replace('-', '')}:1:17", f" ib:{UUID}:01:017 ",
])
def test_beacon_id_spellings_normalise(spelling: str) -> None:
    assert normalize_beacon_id(spelling) == LAUNDRY


@pytest.mark.parametrize("bad", ["", "laundry", f"ib:{UUID}:1", f"ib:{UUID}:1:70000", "eddy:1234:5678",
                                 f"ib:{UUID[:-1]}x:1:2", 17])
def test_bad_beacon_ids_are_refused_with_the_shapes(bad: object) -> None:
    with pytest.raises(ValidationError):
        normalize_beacon_id(bad)


def test_event_and_alive_carry_the_beacon_and_stay_small_without() -> None:
    ev = Event("lw-0001", 3, "panic", 1.8e9, beacon=BeaconSighting(LAUNDRY, -63.5, 1.8e9))
    assert decode(encode(ev)) == ev
    assert b"beacon" not in encode(Event("lw-0001", 4, "panic", 1.8e9))
    with pytest.raises(ValidationError) as exc:
        decode(encode(ev).replace(LAUNDRY.encode(), b"not-a-beacon"))
    assert exc.value.field == "beacon.id"
    with pytest.raises(ValidationError) as exc:
        decode(encode(ev).replace(b"-63.5", b"-300"))
    assert exc.value.field == "beacon.rssi"


# --------------------------------------------------------------------------- smoothing


def scan(tracker: BeaconTracker, sim: SimulatedScanner, n: int = 1) -> BeaconSighting | None:
    place = None
    for _ in range(n):
        place = tracker.update(sim.scan(0))
    return place


def test_nearest_beacon_is_the_place() -> None:
    clock = Clock()
    sim = SimulatedScanner({LAUNDRY: -58, CORRIDOR: -81}, jitter_db=4, clock=clock)
    tracker = BeaconTracker(clock=clock)
    place = scan(tracker, sim, 3)
    assert place is not None and place.id == LAUNDRY
    assert -63 < place.rssi < -53
    # walking into the corridor: it takes over once clearly stronger (hysteresis), not at once
    sim.set({LAUNDRY: -80, CORRIDOR: -57})
    clock.t += 30
    scan(tracker, sim)  # one scan may still say laundry (smoothing), the next ones not
    clock.t += 30
    assert scan(tracker, sim, 2).id == CORRIDOR


def test_lost_beacon_stays_valid_for_max_age_then_none() -> None:
    clock = Clock()
    sim = SimulatedScanner({LAUNDRY: -60}, clock=clock)
    tracker = BeaconTracker(max_age_s=120, lost_after_scans=2, clock=clock)
    assert scan(tracker, sim).id == LAUNDRY
    sim.set({})  # crouching behind the machines: nothing heard
    clock.t += 60
    place = scan(tracker, sim, 3)
    assert place is not None and place.id == LAUNDRY and place.seen_at == pytest.approx(clock.t - 60)
    clock.t += 61
    assert tracker.place() is None
    assert tracker.heard() == {}


def test_two_equal_beacons_do_not_flap() -> None:
    clock = Clock()
    sim = SimulatedScanner({CORRIDOR: -70, LAUNDRY: -70}, clock=clock)
    tracker = BeaconTracker(clock=clock)
    first = scan(tracker, sim).id
    assert first == min(LAUNDRY, CORRIDOR)  # a tie with no current place: the lower id
    sim.jitter_db = 2.5  # then the body and the shelves make the two wobble around each other
    seen = {scan(tracker, sim).id for _ in range(40)}
    assert seen == {first}


def test_unknown_and_malformed_advertisements_are_ignored() -> None:
    clock = Clock()
    tracker = BeaconTracker(min_rssi_dbm=-95, clock=clock)
    place = tracker.update([Advert("not-a-beacon", -40, clock.t), Advert(BOILER, -99, clock.t),
                            Advert(LAUNDRY.upper().replace("IB:", "ib:"), -75, clock.t)])
    assert place is not None and place.id == LAUNDRY  # upper-case spelling normalised
    assert tracker.heard() == {LAUNDRY: -75}


# --------------------------------------------------------------------------- no adapter


def test_real_backend_without_adapter_says_so() -> None:
    with pytest.raises(BeaconUnavailableError, match="hci0"):
        BleakScanner("hci0").scan(0.2)


def test_no_adapter_warns_once_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    service = BeaconService(SimulatedScanner(adapter=False), BeaconTracker(), scan_s=0.01)
    with caplog.at_level(logging.WARNING, logger="device.beacons"):
        assert service.scan_once() is None
        assert service.scan_once() is None
    assert service.available is False
    warnings = [r for r in caplog.records if "no Bluetooth beacons" in r.getMessage()]
    assert len(warnings) == 1 and "GNSS only" in warnings[0].getMessage()


# --------------------------------------------------------------------------- in the daemon


def daemon(tmp_path: Path, scanner, **sections) -> tuple[DeviceDaemon, Steps]:
    cfg = DeviceConfig.from_dict(make_cfg(tmp_path / "s", beacons={"source": "bluez", "scan_s": 0.05,
                                                                   "interval_s": 0.2}, **sections))
    steps = Steps()
    d = DeviceDaemon(cfg, pin_factory=MockFactory(), observer=steps, beacons=scanner, control=False)
    d.start()
    return d, steps


def test_alarm_and_alive_carry_the_beacon(tmp_path: Path) -> None:
    sim = SimulatedScanner({LAUNDRY: -61, CORRIDOR: -84})
    d, steps = daemon(tmp_path, sim, readiness={"enabled": False})
    try:
        assert d.place.beacon() is None  # off shift: no scanning
        d.shift(True)
        steps.wait("beacon_place", beacon=LAUNDRY)
        ev = d.raise_event("silent_panic")
        assert ev.beacon is not None and ev.beacon.id == LAUNDRY
        stored = decode(d.queue.get(ev.id).payload)
        assert stored.beacon == ev.beacon
        alive = decode(encode(d.alive()))
        assert alive.beacon is not None and alive.beacon.id == LAUNDRY
        assert d.status()["beacon"]["id"] == LAUNDRY
    finally:
        d.stop()


def test_alarm_scans_at_once_even_off_shift(tmp_path: Path) -> None:
    sim = SimulatedScanner({LAUNDRY: -61})
    d, steps = daemon(tmp_path, sim, readiness={"enabled": False})
    try:
        time.sleep(0.3)
        assert sim.scans == 0  # off shift: the radio stays quiet
        d.raise_event("silent_panic")
        steps.wait("beacon_place", beacon=LAUNDRY, timeout_s=5)
        assert sim.scans >= 1
    finally:
        d.stop()


def test_daemon_without_adapter_works_as_before(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="device.beacons"):
        d, steps = daemon(tmp_path, SimulatedScanner({LAUNDRY: -60}, adapter=False), readiness={"enabled": False})
        try:
            d.shift(True)
            ev = d.raise_event("silent_panic")
            assert ev.beacon is None
            assert d.queue.get(ev.id) is not None
            deadline = time.monotonic() + 5
            while d.place.beacons.available is not False and time.monotonic() < deadline:
                time.sleep(0.02)
            assert d.place.beacons.available is False
            assert d.health() == []
        finally:
            d.stop()
    assert sum("no Bluetooth beacons" in r.getMessage() for r in caplog.records) == 1

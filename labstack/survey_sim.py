"""``lonewatch survey run --simulate``: a walk through a simulated site with the real parts
(issue 12) — a throwaway Mosquitto with the device's account, the modem simulator on a pty
(through the real ``serial.Serial`` path) and simulated BLE beacons — so installers can try
the survey and the report without hardware, and the tests record a real walk.

The walk (:data:`WALK`) goes from the entrance down to the basement laundry (beacon), into
the boiler room (the data link is gone, the modem still registered: SMS only) and the cold
store (nothing at all), and back. Between legs the simulators change: ``AT+CSQ``, the
registration, the GNSS fix, which beacons are in range, and whether the broker is reachable.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from device.beacon_sim import SimulatedScanner
from device.beacons import BeaconService, BeaconTracker
from device.survey import HardwareProbe, MqttRtt, SurveyRecorder
from labstack.servers import Mosquitto
from modem.at import Modem
from modem.simulator import ModemSimulator
from protocol.beacons import ibeacon_id
from protocol.messages import Alive, encode
from protocol.topics import topic

__all__ = ["LAUNDRY_BEACON", "CORRIDOR_BEACON", "Leg", "WALK", "simulated_walk"]

DEVICE_ID = "lw-survey-01"
LAUNDRY_BEACON = ibeacon_id("fda50693-a4e2-4fb1-afcf-c6eb07647825", 1, 17)
CORRIDOR_BEACON = ibeacon_id("fda50693-a4e2-4fb1-afcf-c6eb07647825", 1, 18)


@dataclass(frozen=True)
class Leg:
    """One stretch of the walk: what the installer types (None: the beacon names the place),
    ``csq`` (0–31, 99 unknown), ``registration``, a GNSS fix or not, beacons in range (id →
    dBm) and whether the data link reaches the broker."""

    typed: str | None
    csq: int
    registration: str
    gnss: bool
    beacons: dict[str, float]
    broker: bool


WALK: tuple[Leg, ...] = (
    Leg("Entrance", 22, "home", True, {}, True),
    Leg("Stairs to the basement", 14, "home", False, {CORRIDOR_BEACON: -82}, True),
    Leg(None, 9, "home", False, {CORRIDOR_BEACON: -62, LAUNDRY_BEACON: -85}, True),
    Leg(None, 5, "home", False, {LAUNDRY_BEACON: -58, CORRIDOR_BEACON: -88}, True),
    Leg("Boiler room", 2, "home", False, {LAUNDRY_BEACON: -90}, False),
    Leg("Cold store", 99, "searching", False, {}, False),
    Leg("Entrance", 21, "home", True, {}, True),
)


@contextmanager
def simulated_walk(*, every_s: float = 0.5, per_leg: int = 4, out=None, on_sample: Callable | None = None,
                   duration_s: float | None = None) -> Iterator[Callable[[], int]]:
    """Start the simulated parts; yields ``walk()`` which records :data:`WALK` (``per_leg``
    samples each, ``every_s`` seconds apart) into ``out`` and returns the number of samples.
    The walk has a fixed length (``len(WALK) * per_leg`` samples): ``duration_s`` (seconds,
    from the first sample) can only end it earlier. Everything is stopped on exit.

    Raises:
        labstack.servers.MissingServerError: Mosquitto is not installed.
    """
    password = secrets.token_urlsafe(12)
    mq = Mosquitto(users={DEVICE_ID: password, "relay": secrets.token_urlsafe(12)}).start()
    sim = ModemSimulator(flavour="sim7600").start()
    modem = Modem(sim.port, flavour="sim7600")
    mqtt = None
    try:
        modem.open()
        modem.init()
        scanner = SimulatedScanner(jitter_db=2.0)
        beacons = BeaconService(scanner, BeaconTracker(max_age_s=15, lost_after_scans=1), scan_s=0.05)

        def alive() -> bytes:
            return encode(Alive(DEVICE_ID, time.time(), 90, None, "unknown", None, 1.0, "survey", 0))

        mqtt = MqttRtt("127.0.0.1", mq.port, username=DEVICE_ID, password=password,
                       topic_name=topic(DEVICE_ID, "alive"), payload=alive, rtt_timeout_s=1.0)
        recorder = SurveyRecorder(HardwareProbe(modem, mqtt, beacons), out, every_s=every_s, on_sample=on_sample)

        def walk() -> int:
            _wait(lambda: mqtt.client.is_connected(), 20)  # the walk starts at the (connected) entrance
            broker_up = True
            deadline = None if duration_s is None else time.monotonic() + duration_s
            for leg in WALK:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                sim.signal_csq = leg.csq
                sim.set_registration(creg=leg.registration, cgreg=leg.registration, cereg=leg.registration)
                sim.gnss_fix = (55.66857, 12.57613, 3.0) if leg.gnss else None
                scanner.set(leg.beacons)
                recorder.set_place(leg.typed)
                if leg.broker and not broker_up:
                    mq.start()
                    _wait(lambda: mqtt.client.is_connected(), 20)
                elif not leg.broker and broker_up:
                    mq.stop()
                    _wait(lambda: not mqtt.client.is_connected(), 20)
                broker_up = leg.broker
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                recorder.run(threading.Event(), samples=recorder.count + per_leg, duration_s=left)
            return recorder.count

        yield walk
    finally:
        if mqtt is not None:
            mqtt.close()
        modem.close()
        sim.stop()
        mq.cleanup()


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()

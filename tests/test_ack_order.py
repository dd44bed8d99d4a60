"""Acks that overtake each other (SPEC §2): the relay publishes "received" from its pipeline
thread and "arc" from a dispatch worker, so on a busy relay the ARC's ACK can reach the device
first (seen as `lonewatch test-alarm` reporting the ARC ACK before the relay's receipt). An
"arc" ack means the relay stored the event: the device treats it as "received" too — the event
leaves the queue, the worker feels "alarm taken" and then "ARC has it", and the late "received"
changes nothing.

Real Mosquitto (the project's ACL); the relay is played by a paho client logged in as the relay
that answers each event with "arc" and only on request with "received"; the device daemon runs
on MockFactory pins and is held like a finger would hold it.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory

from device.daemon import DeviceDaemon
from protocol.messages import Ack, decode, encode
from tests.test_device_daemon import Steps
from tests.test_readiness import DEV, device_cfg

pytestmark = pytest.mark.integration


class ArcFirstRelay:
    """Subscribes to every device's events as the relay; ``events`` gets each one."""

    def __init__(self, port: int, password: str) -> None:
        self.events: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="relay-t1-ackorder")
        self.client.username_pw_set("relay", password)
        self.client.on_message = lambda c, u, m: self.events.put(decode(m.payload))
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("lonewatch/+/event", qos=1)
        subscribed.get(timeout=10)

    def answer(self, event_id: str, stage: str) -> None:
        ack = Ack(id=event_id, stage=stage, ts=time.time(), detail={"receiver": "arc"} if stage == "arc" else {})
        self.client.publish(f"lonewatch/{DEV}/ack", encode(ack), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def rig(tmp_path: Path, mosquitto, broker_users) -> Iterator[tuple[DeviceDaemon, ArcFirstRelay, MockFactory, Steps]]:
    relay = ArcFirstRelay(mosquitto.port, broker_users["relay"])
    factory, steps = MockFactory(), Steps()
    cfg = device_cfg(tmp_path, mosquitto.port, broker_users[DEV], None, readiness={"enabled": False})
    daemon = DeviceDaemon(cfg, pin_factory=factory, observer=steps, control=False)
    daemon.start()
    try:
        assert daemon.link.connected.wait(15)
        yield daemon, relay, factory, steps
    finally:
        daemon.stop()
        relay.close()


def test_an_arc_ack_before_received_counts_as_received_and_feedback_keeps_its_order(rig, wait_until) -> None:
    daemon, relay, factory, steps = rig
    pin = factory.pin(daemon.cfg.gpio.button_pin)
    pin.drive_low()  # the worker holds the button …
    steps.wait("alarm_recognised", 10)
    pin.drive_high()
    alarm = steps.wait("queued", 10)
    event = relay.events.get(timeout=10)
    while event.kind not in ("panic", "silent_panic"):
        event = relay.events.get(timeout=10)
    assert event.id == alarm["id"] and daemon.queue.get(event.id) is not None
    relay.answer(event.id, "arc")  # the dispatcher was quicker than the pipeline
    assert wait_until(lambda: daemon.queue.get(event.id) is None, 10)  # out of the queue: no resend
    assert wait_until(lambda: "arc_delivered" in daemon.feedback.played, 10)
    played = list(daemon.feedback.played)
    assert played.index("alarm_taken") < played.index("arc_delivered"), played
    relay.answer(event.id, "received")  # the late receipt
    steps.wait("ack_arrived", 10, id=event.id)
    assert wait_until(lambda: sum(1 for s, f in steps.items if s == "ack_arrived" and f.get("id") == event.id) == 2, 10)
    assert list(daemon.feedback.played).count("alarm_taken") == 1  # not felt twice


def test_the_test_alarm_round_trip_counts_an_early_arc_ack_as_the_receipt(tmp_path: Path, mosquitto, broker_users) -> None:
    """`lonewatch test-alarm` / doctor (device/doctor_session.py): the relay's receipt is never
    reported after the ARC's ACK — an "arc" ack first is the receipt as well."""
    import threading

    from device.doctor_session import TestEventSession

    relay = ArcFirstRelay(mosquitto.port, broker_users["relay"])
    session = TestEventSession(device_cfg(tmp_path, mosquitto.port, broker_users[DEV], None))
    try:
        session.connect()

        def answer() -> None:
            event = relay.events.get(timeout=10)
            relay.answer(event.id, "arc")
            time.sleep(0.2)
            relay.answer(event.id, "received")

        t = threading.Thread(target=answer)
        t.start()
        trip = session.send_test(wait_arc=True, timeout_s=10)
        t.join(15)
    finally:
        session.close()
        relay.close()
    assert trip.arc_after_s is not None and trip.received_after_s <= trip.arc_after_s
    assert trip.arc == {"receiver": "arc"}

"""The main job end to end on real parts (issue 2): a held button on a device (gpiozero
MockFactory pin driven like a finger) → durable queue → real Mosquitto → relay → real
Redis → SIA DC-09 ADM-CID → pysiaalarm as the ARC → ACK → device feedback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from protocol.messages import Event, Position, encode
from labstack.demo.stack import ACCOUNT, DEVICE_ID, LAT, LON, ZONE, DemoStack
from labstack.timeline import Timeline

pytestmark = pytest.mark.integration

STRANGER = "lw-stranger-01"  # has broker credentials but is not in the relay's registry


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DemoStack]:
    with DemoStack(Timeline(live=False), tmp_path, extra_broker_users={STRANGER: "stranger-pw"}) as s:
        yield s


def _client(stack: DemoStack, username: str, password: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{username}", protocol=mqtt.MQTTv5)
    c.username_pw_set(username, password)
    c.connect("127.0.0.1", stack.mq.port)
    c.loop_start()
    return c


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_held_button_reaches_the_arc_decoded_exactly(stack: DemoStack) -> None:
    stack.hold(2.5)
    ack = stack.tl.wait_for("arc_ack", 30)
    assert ack is not None, stack.tl.steps
    # What pysiaalarm decoded from the ADM-CID frame: account, Contact ID 122 (silent
    # panic, the default), qualifier 1 (new event), zone = worker number, position.
    assert (ack["account"], ack["code"], ack["qualifier"], ack["zone"]) == (ACCOUNT, "122", 1, ZONE)
    assert ack["lat"] == pytest.approx(LAT, abs=1e-5) and ack["lon"] == pytest.approx(LON, abs=1e-5)
    assert stack.tl.wait_for("feedback", 10, pattern="arc_delivered") is not None
    steps = [e["step"] for e in stack.tl.steps]
    order = ["button_down", "alarm_recognised", "queued", "relay_received", "arc_ack"]
    assert [s for s in steps if s in order] == order
    # The relay kept it: one entry in the event log, the record marked acked by the ARC.
    [logged] = stack.relay.store.event_log()
    stored, record = stack.relay.store.event(logged["id"])
    assert stored.kind == "silent_panic" and record["arc"] == "acked" and record["arc_receiver"] == "demo-arc"
    # The device dropped it from its queue only after the relay's `received` ack.
    assert stack.device.queue.depth() == 0


def test_a_short_touch_is_no_alarm(stack: DemoStack) -> None:
    stack.hold(1.0)  # shorter than hold_s = 2.0
    time.sleep(1.5)
    assert stack.tl.first("alarm_recognised") is None
    assert stack.device.queue.depth() == 0
    assert stack.relay.store.event_log() == []


def test_resent_alarm_reaches_the_arc_once(stack: DemoStack, wait_until) -> None:
    event = stack.device.raise_event("panic")
    assert stack.tl.wait_for("arc_ack", 30) is not None
    # The device resends when an ack is lost: the same event id, several times.
    client = _client(stack, DEVICE_ID, stack.device_password)
    try:
        for _ in range(3):
            _publish(client, f"lonewatch/{DEVICE_ID}/event", encode(event))
        assert wait_until(lambda: stack.relay.pipeline.counts["duplicate"] >= 3, 15)
    finally:
        client.loop_stop()
        client.disconnect()
    time.sleep(0.5)  # give a wrongly re-dispatched duplicate the time to reach the ARC
    assert len(stack.local_arc.events) == 1
    assert len(stack.relay.store.event_log()) == 1
    assert stack.relay.store.r.xlen("lw:dispatch") == 1


def test_relay_keeps_working_after_garbage_wrong_topic_and_unknown_device(stack: DemoStack, wait_until) -> None:
    own = _client(stack, DEVICE_ID, stack.device_password)
    stranger = _client(stack, STRANGER, "stranger-pw")
    try:
        _publish(own, f"lonewatch/{DEVICE_ID}/event", b"\x00\x01 not json at all \xff")
        _publish(own, f"lonewatch/{DEVICE_ID}/event", b'{"v": 1, "type": "event"}')
        # A payload claiming to be another device than its topic says.
        spoof = Event("lw-0002", 5, "panic", time.time())
        _publish(own, f"lonewatch/{DEVICE_ID}/event", encode(spoof))
        # A device with broker credentials that the relay's registry does not know.
        _publish(stranger, f"lonewatch/{STRANGER}/event", encode(Event(STRANGER, 1, "panic", time.time())))
        assert wait_until(lambda: len(stack.relay.store.dead_letters()) >= 4, 15)
    finally:
        for c in (own, stranger):
            c.loop_stop()
            c.disconnect()
    reasons = [d["reason"] for d in stack.relay.store.dead_letters()]
    assert reasons[0].startswith("invalid: payload is not UTF-8")
    assert reasons[1].startswith("invalid: device: missing")
    assert reasons[2].startswith("invalid: device: payload device 'lw-0002' differs from topic device")
    assert reasons[3] == f"unknown device {STRANGER!r}: not in the registry"
    assert stack.local_arc.events == []
    # ... and a real alarm still gets through.
    stack.hold(2.5)
    ack = stack.tl.wait_for("arc_ack", 30)
    assert ack is not None and ack["code"] == "122"


def test_device_restarted_between_storing_and_sending_still_delivers(stack: DemoStack, wait_until) -> None:
    stack.mq.stop()  # the broker is gone: nothing can be sent
    assert wait_until(lambda: not stack.device.link.connected.is_set(), 10)
    event = stack.device.raise_event("man_down", None)
    assert stack.device.queue.get(event.id) is not None
    stack.device.stop()  # the device restarts with the alarm only on its disk
    stack.mq.start()
    stack.device = stack.start_device()
    ack = stack.tl.wait_for("arc_ack", 60, id=event.id)
    assert ack is not None, stack.tl.steps
    assert (ack["code"], ack["qualifier"], ack["zone"]) == ("101", 1, ZONE)  # man-down
    assert wait_until(lambda: stack.device.queue.depth() == 0, 15)
    assert len([e for e in stack.local_arc.events if e["code"] == "101"]) == 1


def test_demo_command_prints_the_timeline_as_json_lines() -> None:
    exe = Path(sys.executable).with_name("lonewatch")
    proc = subprocess.run([str(exe), "demo", "--json"], capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [json.loads(line) for line in proc.stdout.splitlines()]
    names = [s["step"] for s in steps]
    for needed in ("button_down", "alarm_recognised", "queued", "relay_received", "arc_ack", "feedback", "done"):
        assert needed in names
    t = [s["t_ms"] for s in steps]
    assert t == sorted(t)
    arc = next(s for s in steps if s["step"] == "arc_ack")
    assert {"account", "code", "qualifier", "zone", "lat", "lon"} <= arc.keys()
    assert arc["code"] == "122" and arc["account"] == ACCOUNT


def test_demo_fails_when_the_arc_never_answers(tmp_path: Path) -> None:
    # An external "ARC" that accepts connections and never replies: no ACK, exit 1.
    import socket

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        exe = Path(sys.executable).with_name("lonewatch")
        proc = subprocess.run([str(exe), "demo", "--json", "--timeout", "4", "--arc", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=110)
    assert proc.returncode == 1
    names = [json.loads(line)["step"] for line in proc.stdout.splitlines()]
    assert "arc_ack" not in names and "error" in names


def test_position_from_the_modem_travels_with_the_alarm(stack: DemoStack) -> None:
    pos = stack.device.modem_state.position
    assert isinstance(pos, Position) and pos.lat == pytest.approx(LAT, abs=1e-5)
    ev = stack.device.raise_event("panic")
    stored = stack.relay.store
    ack = stack.tl.wait_for("arc_ack", 30)
    assert ack is not None
    assert stored.event(ev.id)[0].position == pos

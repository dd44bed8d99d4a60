"""Many devices at once, as a child process: ``python -m bench.swarm SPEC.json``.

Each simulated device is its own MQTT client with its own broker account and persistent
session (MQTT v5, QoS 1, subscribed to its ``ack`` topic), and follows the device's delivery
rule (SPEC §2): an event is re-sent every ``resend_after_s`` until the relay's ``received``
ack arrives. It is a light stand-in for :class:`device.daemon.DeviceDaemon` when hundreds
are needed (no GPIO, no SQLite queue, no modem). paho waits on its sockets with
``select()``, limited to file descriptors below 1024: keep it to ~250 devices per process
and run several processes for more.

SPEC.json: ``{"host", "port", "devices": [[id, password], …], "resend_after_s", "kind",
"seq"}``. Protocol on stdin/stdout (JSON lines out): prints ``{"step": "connected", "n"}``
once all are connected, waits for ``go`` on stdin, publishes every device's event at once
(behind a barrier), prints ``{"step": "published", "t"}`` and, once every event has its
``received`` ack, ``{"step": "all_received", "t", "resends"}``; ``quit`` ends it.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.messages import Ack, Event, decode_for_topic, encode
from protocol.topics import topic


def _emit(step: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"step": step, **fields}) + "\n")
    sys.stdout.flush()


class SwarmDevice:
    """One simulated device: connect, publish one event, resend until ``received``."""

    def __init__(self, device_id: str, password: str, host: str, port: int, event: Event) -> None:
        self.id = device_id
        self.event = event
        self.payload = encode(event)
        self.connected = threading.Event()
        self.received = threading.Event()
        self.resends = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(device_id, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async(host, port, 30, clean_start=False, properties=props)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(topic(self.id, "ack"), qos=1)
            self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            ack = decode_for_topic(msg.topic, msg.payload)
        except ValueError:
            return
        if isinstance(ack, Ack) and ack.id == self.event.id and ack.stage == "received":
            self.received.set()

    def publish(self) -> None:
        self.client.publish(topic(self.id, "event"), self.payload, qos=1)


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    now = time.time()
    devs = [
        SwarmDevice(d, pw, spec["host"], spec["port"], Event(device=d, seq=spec.get("seq", 1), kind=spec.get("kind", "panic"), ts=now))
        for d, pw in spec["devices"]
    ]  # fmt: skip
    for d in devs:
        d.client.loop_start()
    deadline = time.monotonic() + 60
    for d in devs:
        d.connected.wait(max(0.0, deadline - time.monotonic()))
    _emit("connected", n=sum(d.connected.is_set() for d in devs))
    resend = float(spec.get("resend_after_s", 2.0))
    for line in sys.stdin:
        if line.strip() == "go":
            barrier = threading.Barrier(len(devs))

            def fire(d: SwarmDevice) -> None:
                barrier.wait()
                d.publish()

            threads = [threading.Thread(target=fire, args=(d,)) for d in devs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            _emit("published", t=time.time())
            while not all(d.received.is_set() for d in devs):
                time.sleep(resend)
                for d in devs:
                    if not d.received.is_set():
                        d.resends += 1
                        d.publish()
            _emit("all_received", t=time.time(), resends=sum(d.resends for d in devs))
        elif line.strip() == "quit":
            break
    for d in devs:
        d.client.disconnect()
        d.client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

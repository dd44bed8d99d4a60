"""The ceiling for the relay's alive throughput (issue 14): a bare paho subscriber that does
nothing but ``json.loads`` on each alive message, as a child process.

``python -m bench.baresub SPEC.json`` with ``{"host", "port", "username", "password",
"expect", "client_id"}``: connects with a persistent session (MQTT v5, QoS 1, as the relay),
subscribes to ``lonewatch/+/alive``, prints ``{"ready": true}`` once subscribed, then counts
messages; once ``expect`` arrived it prints ``{"sustained": msgs/s between 10 % and 90 %,
"overall": msgs/s, "messages": n}`` and exits.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    expect = int(spec["expect"])
    marks: dict[str, float] = {}
    count = [0]
    done = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        client.subscribe("lonewatch/+/alive", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        print(json.dumps({"ready": True}), flush=True)

    def on_message(client, userdata, msg) -> None:
        json.loads(msg.payload)
        count[0] += 1
        n = count[0]
        if n == 1:
            marks["first"] = time.monotonic()
        if n == max(1, expect // 10):
            marks["t10"] = time.monotonic()
        if n == max(1, expect * 9 // 10):
            marks["t90"] = time.monotonic()
        if n >= expect:
            marks["end"] = time.monotonic()
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=spec["client_id"], protocol=mqtt.MQTTv5)
    c.username_pw_set(spec["username"], spec["password"])
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect(spec["host"], spec["port"], 60, clean_start=False, properties=props)
    c.loop_start()
    ok = done.wait(300)
    c.disconnect()
    c.loop_stop()
    span = marks.get("t90", 0) - marks.get("t10", 0)
    print(json.dumps({"sustained": (0.8 * expect / span) if span > 0 else None,
                      "overall": count[0] / max(1e-9, marks.get("end", time.monotonic()) - marks.get("first", 0)),
                      "messages": count[0]}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

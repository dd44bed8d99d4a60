"""Alive-message load generator, as a child process (the relay's competitor for CPU is then
a separate process, never the relay itself).

``python -m bench.loadgen SPEC.json`` with ``{"host", "port", "username", "password",
"devices": [...], "count"}``: publishes ``count`` valid alive messages round-robin over the
devices' ``lonewatch/<id>/alive`` topics at QoS 1 as fast as the broker takes them, waits for
every PUBACK and prints ``{"published": n, "seconds": s}``. An optional ``"rate"`` (msgs/s)
paces the publishing instead (a steady load, issue 14's loaded-latency bench).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt

from protocol.messages import Alive, Position, encode
from protocol.topics import topic


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    devices, count = spec["devices"], int(spec["count"])
    pos = Position(55.668571, 12.576131, 8.0, time.time())
    payloads = [(topic(d, "alive"), encode(Alive(d, time.time(), 87, -73, "home", pos, 3600.0, "0.1.0", 0))) for d in devices]
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        acked[0] += 1
        if acked[0] >= count:
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"loadgen-{spec.get('name', 0)}", protocol=mqtt.MQTTv5)
    c.username_pw_set(spec["username"], spec["password"])
    c.max_inflight_messages_set(500)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect(spec["host"], spec["port"], 60)
    c.loop_start()
    t0 = time.monotonic()
    rate = float(spec.get("rate") or 0)
    for i in range(count):
        t, p = payloads[i % len(payloads)]
        c.publish(t, p, qos=1)
        if rate and i % 50 == 49:
            pause = t0 + (i + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    done.wait(300)
    seconds = time.monotonic() - t0
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"published": acked[0], "seconds": seconds}), flush=True)
    return 0 if acked[0] >= count else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

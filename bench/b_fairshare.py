"""Fair shares under a flood (issue 15): while one device publishes 10 000 valid ``test``
events as fast as it can, another device's panic → ARC ACK back at that device, in seconds.
Goal ≤ 1 s. Real processes: Mosquitto, Redis, one ``lonewatch relay run`` (default
``[relay] routine_per_minute`` / ``test_signal_period_s``), pysiaalarm as the ARC; the two
devices are plain MQTT clients with their own accounts.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from protocol.messages import Ack, Event, decode, encode
from protocol.topics import topic

from .procs import DeviceSpec
from .stats import Figure, Spread
from .system import System

FLOODER = DeviceSpec("lw-flood-0001", "7A1", 1)
VICTIM = DeviceSpec("lw-panic-0002", "7A1", 2)
GOAL_S = 1.0


def _client(sys_: System, spec: DeviceSpec) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=spec.id, protocol=mqtt.MQTTv5)
    c.username_pw_set(spec.id, sys_.passwords[spec.id])
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(200)
    c.connect("127.0.0.1", sys_.mq.port)
    c.loop_start()
    return c


def one_run(flood: int, seq0: int) -> tuple[float, float]:
    """(panic → ARC ACK at the device s, flood publish duration s)."""
    with System([FLOODER, VICTIM]) as sys_:
        arc_acked = threading.Event()
        acked_at: list[float] = []
        victim = _client(sys_, VICTIM)

        def on_message(client, userdata, msg) -> None:
            ack = decode(msg.payload)
            if isinstance(ack, Ack) and ack.stage == "arc" and ack.id.endswith(f":{seq0}"):
                acked_at.append(time.monotonic())
                arc_acked.set()

        subscribed = threading.Event()
        victim.on_subscribe = lambda *a: subscribed.set()
        victim.on_message = on_message
        victim.subscribe(topic(VICTIM.id, "ack"), qos=1)
        subscribed.wait(10)
        flooder = _client(sys_, FLOODER)
        now = time.time()
        t_flood = time.monotonic()
        infos = []
        sent_panic = 0.0
        for i in range(flood):
            infos.append(flooder.publish(topic(FLOODER.id, "event"),
                                         encode(Event(FLOODER.id, seq0 + i, "test", now, None, {"source": "flood"})), qos=1))
            if i == flood // 2:  # the panic in the middle of the flood
                sent_panic = time.monotonic()
                victim.publish(topic(VICTIM.id, "event"), encode(Event(VICTIM.id, seq0, "panic", time.time())), qos=1)
        for info in infos:
            info.wait_for_publish(60)
        flood_s = time.monotonic() - t_flood
        if not arc_acked.wait(60):
            raise RuntimeError("the panic never reached the ARC during the flood")
        for c in (victim, flooder):
            c.disconnect()
            c.loop_stop()
        return acked_at[0] - sent_panic, flood_s


def run(runs: int = 3, flood: int = 10_000) -> list[Figure]:
    lat, floods = [], []
    for r in range(runs):
        a, f = one_run(flood, 1000 + r)
        lat.append(a)
        floods.append(f)
    s = Spread.of(lat)
    return [Figure("panic → ARC ACK during a 10 000-event flood from another device", "s", s,
                   goal=f"≤ {GOAL_S:.0f} s (issue 15)", met=s.median <= GOAL_S, fmt="{:.3f}",
                   workload=(f"{flood} valid test events from one device published as fast as paho can (QoS 1, "
                             f"{Spread.of(floods).text('{:.1f}')} s), the other device's panic published in the middle; "
                             "1 relay process, default fair-share settings; end = arc ack at the panicking device"),
                   extra={"panic_to_arc_ack_s": lat, "flood_publish_s": floods})]

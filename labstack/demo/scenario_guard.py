"""Demo scenario of issue 15 "no device can harm another worker's alarm": with the demo
device's own broker credentials a hostile client claims the relay's client id, sends an
event that tries to close an alarm, and floods 2 000 test events; then the worker holds the
button. Passes only if the relay kept its session, the bad event was dead-lettered, the
silent panic reached the ARC and the ARC got at most one test signal."""

from __future__ import annotations

import json
import time

from .scenarios import expect_arc, scenario
from .stack import DEVICE_ID, DemoStack

FLOOD = 2000


@scenario("hostile-device", "a device's own credentials: client-id takeover, a forged restore and a 2 000-event flood — the panic still reaches the ARC")
def hostile_device(stack: DemoStack) -> bool:
    import paho.mqtt.client as mqtt

    tl, ok = stack.tl, True
    store = stack.relay.store
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lonewatch-relay-{stack.relay.instance.split('-')[-1]}",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(DEVICE_ID, stack.device_password)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", stack.mq.port)
    c.loop_start()
    topic = f"lonewatch/{DEVICE_ID}/event"
    now = time.time()
    forged = {"v": 1, "type": "event", "device": DEVICE_ID, "seq": 10**9, "kind": "test", "ts": now,
              "data": {"restores": f"{DEVICE_ID}:1"}}
    c.publish(topic, json.dumps(forged), qos=1).wait_for_publish(5)
    infos = [c.publish(topic, json.dumps({"v": 1, "type": "event", "device": DEVICE_ID, "seq": 10**9 + 1 + i,
                                            "kind": "test", "ts": now, "data": {"source": "flood"}}), qos=1)
             for i in range(FLOOD)]
    for info in infos:
        info.wait_for_publish(30)
    c.disconnect()
    c.loop_stop()
    tl.add("hostile_done", claimed_client_id="the relay's", flood=FLOOD)
    if not stack.relay.connected.is_set():
        tl.add("error", reason="the relay lost its broker session to the hostile client")
        ok = False
    else:
        tl.add("relay_session_kept")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("data.restores" in d["reason"] for d in store.dead_letters(200)):
        time.sleep(0.05)
    if any("data.restores" in d["reason"] for d in store.dead_letters(200)):
        tl.add("forged_restore_dead_lettered")
    else:
        tl.add("error", reason="the forged restore was not dead-lettered")
        ok = False
    time.sleep(2.0)  # the daemon reconnects (the hostile client held its session)
    stack.hold(2.5)
    ok = expect_arc(stack, tl.wait_for("arc_ack", stack.timeout_s, code="122"), "122") and ok
    if stack.local_arc is not None:
        tests = sum(1 for e in list(stack.local_arc.events) if e["code"] == "601")
        tl.add("arc_test_signals", count=tests)
        if tests > 1:
            tl.add("error", reason=f"the ARC got {tests} test signals from one device")
            ok = False
    return ok

"""Scale-out (SPEC §3, issue 4): N relays on one broker and one Redis behave as one — no
alarm twice at the ARC, no lost contact raised twice, work goes on when one is killed -9 —
and the key layout runs on Redis Cluster (a one-node cluster refuses cross-slot commands
exactly like a big one)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from protocol.messages import Alive, Event, Position
from labstack.demo.stack import LocalArc
from labstack.servers import find_binary, free_port, wait_for_port
from relay.store import DISPATCH, GROUP, DeviceEntry, Store, SupervisionPolicy
from relay.supervision import Supervisor

from .relayrig import RelayProcess, ScriptedDevice, arc_codes, register, relay_dict, running_relay, write_toml

pytestmark = pytest.mark.integration

DEV = "lw-0001"


def test_two_relays_deliver_every_alarm_of_a_burst_once(mosquitto, redis_server, broker_users, wait_until) -> None:
    port = free_port()
    register(redis_server.url, (DEV, 17))
    base = (mosquitto.port, broker_users["relay"], redis_server.url, port)
    with LocalArc("1234AB", port) as arc, running_relay(relay_dict(*base, instance="a")) as a, \
            running_relay(relay_dict(*base, instance="b")) as b:  # fmt: skip
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        try:
            ids = [dev.event("panic").id for _ in range(20)]
            assert wait_until(lambda: all(dev.wait_ack(i, "arc", 0) for i in ids), 20)
            # pysiaalarm records each frame just after its ACK: wait for the 20th, then give
            # an extra copy the time to arrive.
            assert wait_until(lambda: arc_codes(arc).count(("120", 1, 17)) >= 20, 10), arc_codes(arc)
            time.sleep(0.3)
            assert arc_codes(arc).count(("120", 1, 17)) == 20
            assert len({e["sequence"] for e in arc.events}) == 20
            # the broker shared the work: both relays stored some
            assert a.pipeline.counts["stored"] > 0 and b.pipeline.counts["stored"] > 0
            assert a.pipeline.counts["stored"] + b.pipeline.counts["stored"] == 20
        finally:
            dev.close()


def test_two_relays_raise_a_lost_contact_once(mosquitto, redis_server, broker_users, wait_until) -> None:
    port = free_port()
    register(redis_server.url, (DEV, 17))
    sup = {"alive_interval_s": 1, "missed_alives": 1, "grace_s": 0.3, "sweep_interval_s": 0.05}
    base = (mosquitto.port, broker_users["relay"], redis_server.url, port)
    with LocalArc("1234AB", port) as arc, running_relay(relay_dict(*base, instance="a", supervision=sup)) as a, \
            running_relay(relay_dict(*base, instance="b", supervision=sup)) as b:  # fmt: skip
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        try:
            dev.event("shift_start")
            assert wait_until(lambda: ("356", 1, 17) in arc_codes(arc), 10)
            time.sleep(1.0)  # both sweepers keep sweeping
            assert arc_codes(arc).count(("356", 1, 17)) == 1
            raised = a.supervisor.counts["raised:lost_contact"] + b.supervisor.counts["raised:lost_contact"]
            assert raised == 1
        finally:
            dev.close()


def _holder(r: redis.Redis) -> str | None:
    """Consumer name holding the (only) pending dispatch job, if any."""
    rows = r.xpending_range(DISPATCH, GROUP, min="-", max="+", count=10)
    return rows[0]["consumer"].decode() if rows else None


def test_relay_killed_mid_alarm_the_other_delivers_it_once_and_work_goes_on(mosquitto, redis_server, broker_users, tmp_path,
                                                                            wait_until) -> None:  # fmt: skip
    """Two relay processes; the ARC is down, so the alarm's dispatch job sits with the relay
    that stored it; that relay is killed -9. The other takes the job over (XAUTOCLAIM after
    ``reclaim_idle_s``) and the ARC, once back, gets the alarm once. Then a new alarm: the
    device resends until `received` (as the real device does), and it gets through too."""
    port = free_port()
    register(redis_server.url, (DEV, 17))
    r = redis.Redis.from_url(redis_server.url)
    procs = {}
    for name in ("a", "b"):
        cfg = relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port, instance=name)
        cfg["mqtt"]["session_expiry_s"] = 0  # a relay gone for good takes no more messages
        procs[name] = RelayProcess(write_toml(tmp_path / f"{name}.toml", cfg), tmp_path / f"{name}.log").start()
    try:
        for p in procs.values():
            assert p.wait_log("relay connected"), p.output()
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        alarm = dev.event("panic")
        assert dev.wait_ack(alarm.id, "received")
        assert wait_until(lambda: _holder(r) is not None, 10)
        holder = _holder(r)
        victim = next(n for n in procs if holder.startswith(f"lonewatch-relay-{n}-"))
        survivor = procs["b" if victim == "a" else "a"]
        assert dev.wait_ack(alarm.id, "arc_failed", 10)  # the holder is on it, ARC down
        procs[victim].kill()
        with LocalArc("1234AB", port) as arc:
            assert dev.wait_ack(alarm.id, "arc", 20), survivor.output()[-3000:]
            assert _holder(r) is None or _holder(r) != holder
            second = dev.event("panic")
            deadline = time.monotonic() + 20
            while not dev.wait_ack(second.id, "received", 1.0) and time.monotonic() < deadline:
                dev.client.publish(f"lonewatch/{DEV}/event", _encode(second), qos=1)  # the device's resend
            assert dev.wait_ack(second.id, "arc", 10), survivor.output()[-3000:]
            assert wait_until(lambda: arc_codes(arc).count(("120", 1, 17)) >= 2, 10), arc_codes(arc)
            time.sleep(0.3)  # a copy, if any, would arrive now
            assert arc_codes(arc).count(("120", 1, 17)) == 2  # each alarm once
        dev.close()
    finally:
        for p in procs.values():
            p.stop()


def _encode(ev: Event) -> bytes:
    from protocol.messages import encode

    return encode(ev)


# --- Redis Cluster ------------------------------------------------------------------------


@pytest.fixture
def one_node_cluster():
    """redis-server with cluster mode on and every slot assigned to it."""
    binary = find_binary("redis-server")
    d = Path(tempfile.mkdtemp(prefix="lonewatch-cluster-"))
    port = free_port()
    # The cluster bus port is given explicitly, as labstack/cluster.py does: port + 10000
    # may be taken (or lie in the kernel's ephemeral range, which free_port avoids).
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--cluster-port", str(free_port()), "--bind", "127.0.0.1",
         "--cluster-enabled", "yes", "--cluster-announce-ip", "127.0.0.1",
         "--cluster-config-file", str(d / "nodes.conf"), "--dir", str(d), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for_port(port, 10, proc)
        plain = redis.Redis(port=port)
        plain.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while b"cluster_state:ok" not in plain.execute_command("CLUSTER", "INFO") and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(5)
        shutil.rmtree(d, ignore_errors=True)


def test_the_key_layout_runs_on_redis_cluster(one_node_cluster: int) -> None:
    with pytest.raises(redis.ResponseError, match="same slot"):  # the rule this test relies on
        redis.Redis(port=one_node_cluster).eval("return 1", 2, "lw:{a}:x", "lw:{b}:x")
    store = Store.from_url(f"redis://127.0.0.1:{one_node_cluster}/0", cluster=True)  # [redis] cluster = true
    store.supervision = SupervisionPolicy(alive_interval_s=1, missed_alives=1, grace_s=0, requeue_after_s=1)
    store.register(DeviceEntry(DEV, "1234AB", 17, "Anna", "Site"))
    store.ensure_group()
    now = time.time()
    assert store.store_event(Event(DEV, 1, "shift_start", now)) is True
    assert store.store_event(Event(DEV, 2, "checkin_start", now, None, {"duration_s": 60})) is True
    store.update_alive(Alive(DEV, now, 50, -70, "home", Position(55.0, 12.0, 3.0, now), 1.0, "t", 0))
    sup = Supervisor(store)
    sup.sweep_once(now + 70)
    assert sup.counts["raised:lost_contact"] == 1 and sup.counts["raised:missed_checkin"] == 1
    store.update_alive(Alive(DEV, now, 50, -70, "home", None, 1.0, "t", 0))  # restore
    jobs = store.next_jobs("c1", block_ms=10, count=10)
    jobs += store.next_jobs("c1", block_ms=10, count=10)  # urgent first, then routine (issue 15)
    kinds = []
    for job_id, event_id in jobs:
        assert store.lease_event(event_id, "c1", 5) == "ok"
        assert 1 <= store.event_sequence(event_id, "1234AB") <= 9999
        store.touch_jobs("c1", [job_id])
        store.mark_event(event_id, arc="acked")
        store.finish_job(job_id)
        kinds.append(store.event(event_id)[0].kind)
    # the two alarms were raised in parallel: either order
    assert sorted(kinds[:2]) == ["lost_contact", "missed_checkin"] and kinds[2] == "contact_restore"
    assert kinds[3:] == ["shift_start", "checkin_start"]
    store.dead_letter("lonewatch/x/event", b"junk", "invalid: test")
    assert store.dispatch_backlog()["pending"] == 0
    assert store.reclaim_jobs("c2", 0) == []


def test_demo_relay_failover_scenario() -> None:
    import json

    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "demo", "--scenario", "relay-failover", "--json"],
                          capture_output=True, text=True, timeout=110)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {s["step"]: s for s in (json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{"))}
    assert steps["arc_count"]["alarms_at_arc"] == 1
    assert steps["arc_count"]["delivered_by"] != steps["relay_killed"]["instance"]

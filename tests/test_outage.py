"""No false alarms from our own outages (issue 14): fault injection on real Mosquitto, Redis and
pysiaalarm — the broker stopped (two relays: ONE installation fault 350 and its restore, no
lost contact), the broker paused (SIGSTOP: the link looks up, the probe says otherwise), a
relay restarted after a long stop (shortened intervals), a real mass loss while healthy; and
the sweeper's hold and exactly-once with two sweepers on an injected clock."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from labstack.demo.stack import LocalArc
from labstack.servers import free_port
from protocol.messages import Alive, decode
from relay.brokerlink import installation_fault
from relay.store import Store, SupervisionPolicy
from relay.supervision import Supervisor
from relay.system_events import recent_system_events

from .relayrig import ScriptedDevice, register, relay_dict, running_relay

pytestmark = pytest.mark.integration

DEV, DEV2 = "lw-0001", "lw-0002"
#: Lost contact after 1 × 1 + 0.5 s; the hold after a link comes back: 1 s.
SUP = {"mode": "always", "alive_interval_s": 1, "missed_alives": 1, "grace_s": 0.5}
FAULTS = {"link_lease_s": 1.5, "fault_after_s": 0.5}


class AlivePump:
    """Publishes an alive every 0.3 s for a device, whatever the broker does."""

    def __init__(self, dev: ScriptedDevice) -> None:
        self.dev, self.stop = dev, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                self.dev.alive()
            except Exception:  # broker away: paho refuses or times out
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.dev.close()


def _kinds(store: Store) -> list[tuple[str, str]]:
    return [(e["device"], e["kind"]) for e in store.event_log(10_000)]


def _codes(arc: LocalArc, code: str) -> list[int | None]:
    return [e["qualifier"] for e in list(arc.events) if e["code"] == code]


def test_broker_down_raises_one_installation_fault_and_no_lost_contact(mosquitto, redis_server, broker_users, wait_until) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    store = register(redis_server.url, (DEV, 17))
    cfgs = [relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port, instance=name,
                       supervision=SUP, faults=FAULTS) for name in ("t1", "t2")]  # fmt: skip
    with LocalArc("1234AB", port) as arc, running_relay(cfgs[0]) as r1, running_relay(cfgs[1]) as r2:
        pump = AlivePump(ScriptedDevice(DEV, mosquitto.port, broker_users[DEV]))
        try:
            assert wait_until(lambda: store.supervision_state(DEV).get("heard"), 10)
            assert wait_until(lambda: r1.broker_link.up and r2.broker_link.up, 10)
            mosquitto.stop()
            assert wait_until(lambda: _codes(arc, "350") == [1], 20), arc.events
            time.sleep(3.0)  # the outage lasts beyond the lost-contact limit (2.5 s after the last alive)
            mosquitto.start()
            assert wait_until(lambda: _codes(arc, "350") == [1, 3], 30), arc.events
            assert wait_until(lambda: r1.broker_link.up and r2.broker_link.up, 20)
            time.sleep(2.5)  # alives flow again; nothing may be raised
        finally:
            pump.close()
        assert (DEV, "lost_contact") not in _kinds(store)
        assert _codes(arc, "356") == [] and _codes(arc, "350") == [1, 3]  # ONE fault for two relays
        assert installation_fault(store.r)["state"] == "clear"
        kinds = [e["kind"] for e in recent_system_events(store.r)]
        assert kinds.count("system_fault") == 1 and kinds.count("system_restore") == 1


def test_paused_broker_holds_lost_contact(mosquitto, redis_server, broker_users, wait_until) -> None:  # type: ignore[no-untyped-def]
    store = register(redis_server.url, (DEV, 17))
    cfg = relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, None, supervision=SUP, faults=FAULTS)
    with running_relay(cfg) as relay:
        pump = AlivePump(ScriptedDevice(DEV, mosquitto.port, broker_users[DEV]))
        try:
            assert wait_until(lambda: store.supervision_state(DEV).get("heard") and relay.broker_link.up, 10)
            os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # TCP stays up, nothing moves
            try:
                assert wait_until(lambda: not relay.broker_link.up, 10)  # the probe noticed
                time.sleep(3.0)  # beyond the limit
                assert (DEV, "lost_contact") not in _kinds(store)
            finally:
                os.kill(mosquitto.proc.pid, signal.SIGCONT)
            assert wait_until(lambda: relay.broker_link.up, 15)
            time.sleep(2.0)
        finally:
            pump.close()
        assert (DEV, "lost_contact") not in _kinds(store)


def test_relay_restart_after_a_long_stop_raises_only_the_really_silent_device(mosquitto, redis_server, broker_users, wait_until) -> None:  # type: ignore[no-untyped-def]
    store = register(redis_server.url, (DEV, 17), (DEV2, 18))
    cfg = relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, None, supervision=SUP, faults=FAULTS)
    with running_relay(cfg):
        pump = AlivePump(ScriptedDevice(DEV, mosquitto.port, broker_users[DEV]))
        silent = ScriptedDevice(DEV2, mosquitto.port, broker_users[DEV2])
        silent.alive()
        assert wait_until(lambda: store.supervision_state(DEV2).get("heard") and store.supervision_state(DEV).get("heard"), 10)
        silent.close()
    try:
        # The relay is away many times the limit ("10 minutes" at 60 s intervals); the broker
        # queues DEV's alives in the relay's persistent session meanwhile.
        time.sleep(5.0)
        with running_relay(cfg) as relay:
            assert wait_until(lambda: (DEV2, "lost_contact") in _kinds(store), 15)
            up_at = relay.broker_link.hold_until(time.time()) - SUP["alive_interval_s"]
            time.sleep(1.5)
            assert relay.broker_link.up
    finally:
        pump.close()
    kinds = _kinds(store)
    assert kinds.count((DEV2, "lost_contact")) == 1
    assert (DEV, "lost_contact") not in kinds  # its queued alives flowed in during the hold
    [raised] = [decode(e["json"]) for e in store.event_log(10_000) if e["kind"] == "lost_contact"]
    assert raised.ts >= up_at + SUP["alive_interval_s"]  # not before the hold after start-up ended


def test_mass_loss_while_healthy_raises_each_device_and_one_summary(mosquitto, redis_server, broker_users, wait_until) -> None:  # type: ignore[no-untyped-def]
    devices = [(f"lw-m{i:03d}", 100 + i) for i in range(12)]
    store = register(redis_server.url, *devices)
    cfg = relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, None, supervision=SUP,
                     faults={**FAULTS, "mass_loss_threshold": 10})  # fmt: skip
    with running_relay(cfg) as relay:
        assert wait_until(lambda: relay.broker_link.up, 10)
        time.sleep(SUP["alive_interval_s"] + 0.2)  # past the start-up hold
        now = time.time()
        store.supervision = SupervisionPolicy(alive_interval_s=1, missed_alives=1, grace_s=0.5, mode="always")  # as the relay's
        store.update_alives([Alive(d, now, 80, -70, "home", None, 1.0, "t", 0) for d, _ in devices])
        assert wait_until(lambda: sum(k == "lost_contact" for _, k in _kinds(store)) == 12, 15)
        assert wait_until(lambda: [e["kind"] for e in recent_system_events(store.r)].count("mass_lost_contact") == 1, 5)
        time.sleep(0.5)
    kinds = _kinds(store)
    assert sorted(d for d, k in kinds if k == "lost_contact") == sorted(d for d, _ in devices)  # each once
    assert [e["kind"] for e in recent_system_events(store.r)].count("mass_lost_contact") == 1
    assert installation_fault(store.r).get("state") != "raised"


# ----------------------------------------------------------------------------- injected clock
def test_hold_and_exactly_once_with_two_sweepers(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = Store.from_url(redis_server.url)
    store.supervision = SupervisionPolicy(alive_interval_s=10, missed_alives=1, grace_s=5, mode="always")
    devs = [f"lw-x{i:04d}" for i in range(600)]
    t0 = time.time()
    store.update_alives([Alive(d, t0, 80, -70, "home", None, 1.0, "t", 0) for d in devs])
    raised: list[str] = []
    lock = threading.Lock()

    def hook(ev) -> None:  # type: ignore[no-untyped-def]
        with lock:
            raised.append(ev.device)

    store.raised_hooks.append(hook)
    held_until = t0 + 100
    a = Supervisor(store, batch=200, hold=lambda now: held_until)
    assert a.sweep_once(t0 + 20) > 0 and raised == []  # overdue, but held (our outage)
    b1, b2 = Supervisor(store, batch=97), Supervisor(Store.from_url(redis_server.url), batch=131)
    b2.store.supervision = store.supervision
    b2.store.raised_hooks.append(hook)

    def sweep(s: Supervisor) -> None:
        for _ in range(40):
            s.sweep_once(held_until + 1)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in (b1, b2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(raised) == sorted(devs)  # every device exactly once across both sweepers


def test_demo_broker_outage_scenario(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from labstack.demo.scenarios import load_all
    from labstack.demo.stack import DemoStack
    from labstack.timeline import Timeline

    fn, _ = load_all()["broker-outage"]
    tl = Timeline(live=False)
    with DemoStack(tl, tmp_path) as stack:
        ok = fn(stack)
    assert ok, [e for e in tl.steps if e["step"] in ("error", "arc_350", "relay_raised")]


def test_lonewatch_status_shows_the_faults(redis_server) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from cli.main import main
    from relay.arc_policy import ArcFaults
    from relay.brokerlink import FAULT_KEY

    store = register(redis_server.url, (DEV, 17))
    assert "FAULT:" not in CliRunner().invoke(main, ["status", "--redis-url", redis_server.url]).output
    ArcFaults(store.r).open(f"{DEV}:9", "panic", "rejected")
    store.r.hset(FAULT_KEY, mapping={"state": "raised", "raised_at": f"{time.time() - 30:.3f}"})
    out = CliRunner().invoke(main, ["status", "--redis-url", redis_server.url]).output
    assert f"FAULT: panic {DEV}:9 not taken by any ARC receiver" in out
    assert "FAULT: no relay has a broker subscription" in out

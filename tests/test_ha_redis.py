"""A real highly-available Redis (issue 14): the relay's pipeline, supervision and dispatch on a
Redis Cluster (3 masters + 1 replica each) and on a Sentinel-watched master (2 replicas, 3
Sentinels), and a master killed with SIGKILL in the middle of an alarm burst: the replica is
promoted, no alarm is lost and none reaches the ARC twice. Real Mosquitto and pysiaalarm."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from labstack.cluster import RedisClusterLab, SentinelLab
from labstack.demo.stack import LocalArc
from labstack.servers import free_port
from relay.config import RelayConfig
from relay.redis_connect import connect_store
from relay.store import DeviceEntry, Store, device_key

from .relayrig import ACCOUNT, ScriptedDevice, relay_dict, running_relay

pytestmark = pytest.mark.integration

DEV, DEV2 = "lw-0001", "lw-0002"
SUP = {"mode": "on_shift", "alive_interval_s": 1, "missed_alives": 1, "grace_s": 0.5}


class HA:
    """One HA Redis and the ``[redis]`` section that names it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.lab: Any = RedisClusterLab() if kind == "cluster" else SentinelLab()

    def start(self) -> "HA":
        self.lab.start()
        return self

    def section(self) -> dict[str, Any]:
        if self.kind == "cluster":
            return {"url": self.lab.url, "cluster": True}
        return {"url": self.lab.url, "sentinels": list(self.lab.sentinels), "master_name": self.lab.master_name}

    def store(self) -> Store:
        cfg = RelayConfig.from_dict({"relay": {"instance": "x"}, "mqtt": {"password": "p"}, "redis": self.section()})
        return connect_store(cfg.redis)

    def kill_master(self) -> None:
        if self.kind == "cluster":
            self.lab.kill_master(device_key(DEV, "sup"))
            self.lab.wait_healthy()
        else:
            self.lab.wait_promoted(self.lab.kill_master())


@pytest.fixture(params=["cluster", "sentinel"])
def ha(request) -> Iterator[HA]:  # type: ignore[no-untyped-def]
    h = HA(request.param).start()
    try:
        yield h
    finally:
        h.lab.cleanup()


def _retry(fn, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    """Call ``fn`` until it does not raise (a failover in progress), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _setup(ha: HA, mosquitto, broker_users) -> tuple[Store, dict[str, Any], int]:  # type: ignore[no-untyped-def]
    store = ha.store()
    for dev, zone in ((DEV, 17), (DEV2, 18)):
        store.register(DeviceEntry(dev, ACCOUNT, zone, f"Worker {zone}", "Site"))
    arc_port = free_port()
    cfg = relay_dict(mosquitto.port, broker_users["relay"], "redis://127.0.0.1:1/0", arc_port, supervision=SUP,
                     redis=ha.section(), faults={"link_lease_s": 1.5})  # fmt: skip
    return store, cfg, arc_port


def test_pipeline_supervision_and_dispatch(ha: HA, mosquitto, broker_users, wait_until) -> None:  # type: ignore[no-untyped-def]
    store, cfg, arc_port = _setup(ha, mosquitto, broker_users)
    with LocalArc(ACCOUNT, arc_port) as arc, running_relay(cfg) as relay:
        assert wait_until(lambda: relay.broker_link.up, 10)
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        try:
            start = dev.event("shift_start")
            alarm = dev.event("panic")
            assert dev.wait_ack(alarm.id, "received") and dev.wait_ack(alarm.id, "arc", 20)
            assert dev.wait_ack(start.id, "arc", 20)
            # Supervision on the HA store: silence → lost contact (356), then the restore.
            assert wait_until(lambda: any(e["code"] == "356" and e["qualifier"] == 1 for e in list(arc.events)), 20)
            dev.alive()
            assert wait_until(lambda: any(e["code"] == "356" and e["qualifier"] == 3 for e in list(arc.events)), 20)
        finally:
            dev.close()
    codes = Counter((e["code"], e["qualifier"]) for e in arc.events)
    assert codes[("120", 1)] == 1 and codes[("356", 1)] == 1 and codes[("356", 3)] == 1
    assert store.event(alarm.id)[1]["arc"] == "acked"  # type: ignore[index]


def test_master_killed_mid_burst_loses_no_alarm_and_sends_none_twice(ha: HA, mosquitto, broker_users, wait_until) -> None:  # type: ignore[no-untyped-def]
    store, cfg, arc_port = _setup(ha, mosquitto, broker_users)
    with LocalArc(ACCOUNT, arc_port) as arc, running_relay(cfg):
        devs = [ScriptedDevice(d, mosquitto.port, broker_users[d]) for d in (DEV, DEV2)]
        sent = []
        try:
            for i in range(16):
                if i == 6:
                    ha.kill_master()  # SIGKILL; a replica is promoted while alarms keep coming
                sent.append(devs[i % 2].event("panic"))
            for ev in sent:  # the device resends until "received" (as the real daemon does)
                dev = devs[0] if ev.device == DEV else devs[1]
                assert dev.wait_ack(ev.id, "arc", 60), ev.id
        finally:
            for d in devs:
                d.close()
        time.sleep(1.0)  # a duplicate frame, if any, would arrive now
    panics = [e for e in arc.events if e["code"] == "120"]
    per_zone = Counter(e["zone"] for e in panics)
    # Each alarm once: none lost, none twice. An ACK whose record died with the master is kept
    # by the dispatcher and recorded on the promoted replica (relay.dispatch._record_ack), so
    # the reclaimed job finds it done; only a relay that itself stops in that window resends,
    # with the same sequence (tests/test_dispatch_ack_record.py; relay.store.event_sequence).
    assert per_zone == {17: 8, 18: 8}, panics
    assert len({(e["zone"], e["sequence"]) for e in panics}) == 16
    zone = {DEV: 17, DEV2: 18}
    recorded = set()
    for ev in sent:
        fields = _retry(lambda: store.event(ev.id))[1]  # type: ignore[index]
        assert fields["arc"] == "acked"
        recorded.add((zone[ev.device], f"{int(fields['arc_seq']):04d}"))
    # Each alarm reached the ARC under the DC-09 sequence kept on its event (one per event).
    assert recorded == {(e["zone"], e["sequence"]) for e in panics}

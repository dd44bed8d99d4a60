"""Issue 15 "relay clock for supervision": a device clock a year ahead or ten years behind
never switches supervision off; such events are kept, delivered and flagged (relay/clockcheck.py).

Real Mosquitto, Redis, relay and pysiaalarm ARC (the attack of the issue: one
``missed_checkin`` dated a year ahead stopped every later missed check-in of that device).
"""

from __future__ import annotations

import time

import pytest

from labstack.demo.stack import LocalArc
from labstack.servers import free_port
from protocol.messages import Event, encode
from relay.clockcheck import MAX_AHEAD_S, MAX_BEHIND_S, clock_offset
from relay.faults import CLOCK, faults

from .relayrig import ScriptedDevice, arc_codes, register, relay_dict, running_relay

pytestmark = pytest.mark.integration

DEV = "lw-0001"
YEAR = 365 * 86400.0


def _send(dev: ScriptedDevice, kind: str, ts: float, data: dict | None = None) -> Event:
    ev = Event(DEV, dev.seq, kind, ts, None, data or {})
    dev.seq += 1
    dev.client.publish(f"lonewatch/{DEV}/event", encode(ev), qos=1).wait_for_publish(5)
    return ev


def test_a_clock_a_year_ahead_does_not_switch_missed_checkins_off(mosquitto, redis_server, broker_users, wait_until):
    port = free_port()
    store = register(redis_server.url, (DEV, 17))
    with LocalArc("1234AB", port) as arc, running_relay(relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port)) as relay:
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        try:
            now = time.time()
            first = _send(dev, "checkin_start", now + YEAR, {"duration_s": 60})
            missed = _send(dev, "missed_checkin", now + YEAR + 60, {"checkin": first.id})
            assert dev.wait_ack(missed.id, "arc"), (store.event(missed.id), store.event(first.id), arc_codes(arc))
            # NTP synced: a later check-in with the right clock, and the device is destroyed.
            later = _send(dev, "checkin_start", time.time(), {"duration_s": 60})
            assert dev.wait_ack(later.id, "received")
            relay.supervisor.clock = lambda: time.time() + 66  # 60 s + 5 s grace have passed
            assert wait_until(lambda: any(e.kind == "missed_checkin" and e.origin == "relay"
                                          for e in _relay_raised(store)), 10)
            assert wait_until(lambda: arc_codes(arc).count(("102", 1, 17)) == 2, 10), arc_codes(arc)
            _, rec = store.event(first.id)
            assert rec["clock"] == "off" and float(rec["clock_offset_s"]) > 360 * 86400
            assert "clock is off" in faults(store, DEV)[CLOCK]["text"]
        finally:
            dev.close()


def _relay_raised(store):
    out = []
    for e in store.event_log(100):
        rec = store.event(e["id"])
        if rec:
            out.append(rec[0])
    return out


def test_an_alarm_dated_ten_years_back_is_delivered_and_flagged(mosquitto, redis_server, broker_users, wait_until):
    port = free_port()
    store = register(redis_server.url, (DEV, 17))
    with LocalArc("1234AB", port) as arc, running_relay(relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port)):
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        try:
            old = _send(dev, "panic", time.time() - 10 * YEAR)
            assert dev.wait_ack(old.id, "arc")
            assert wait_until(lambda: ("120", 1, 17) in arc_codes(arc), 10)  # pysiaalarm records a frame after its ACK
            _, rec = store.event(old.id)
            assert rec["clock"] == "off" and float(rec["clock_offset_s"]) < -9 * YEAR
            assert faults(store, DEV)[CLOCK]["count"] == 1
            # Supervision runs on the relay's clock: the device counts as heard now.
            assert float(store.supervision_state(DEV)["heard"]) > time.time() - 60
        finally:
            dev.close()


def test_window():
    now = 1_796_000_000.0
    assert clock_offset(Event(DEV, 1, "test", now + MAX_AHEAD_S - 1), now) is None
    assert clock_offset(Event(DEV, 1, "test", now + MAX_AHEAD_S + 1), now) > 0
    assert clock_offset(Event(DEV, 1, "test", now - MAX_BEHIND_S - 1), now) < 0

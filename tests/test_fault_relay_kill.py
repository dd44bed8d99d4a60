"""Fault injection: kill -9 of the relay mid-alarm (SPEC §6: 0 alarms lost).

Real processes: Mosquitto, Redis (AOF, fsync always), the relay as ``lonewatch relay run``
(a subprocess, killed with SIGKILL and started again under the same instance name, as
systemd would), the device daemon as a subprocess, pysiaalarm as the ARC. Every alarm must
reach the ARC exactly once (:func:`bench.verify.delivery_problems`) and the event log
``lw:events`` must hold every alarm once.

Timing note: a dispatch job the killed relay had taken stays in its Redis pending list until
it has been idle ``reclaim_idle_s`` (30 s, relay/dispatch.py), so these tests wait up to 75 s.
"""

from __future__ import annotations

import threading

import pytest

from bench.procs import DeviceSpec
from bench.system import System
from bench.verify import delivery_problems, wait_for

pytestmark = pytest.mark.integration

DEV = DeviceSpec("lw-kill-0001", "4B1D", 7)


def test_relay_killed_while_a_burst_is_stored_and_dispatched_loses_and_repeats_nothing() -> None:
    """30 alarms; the ARC is down so none leaves the relay yet; the relay is killed -9 once
    10 are in the event log — some still queued at the broker for the relay's persistent
    session, some stored with their dispatch job taken. Relay restarted, ARC back: all 30
    reach the ARC once, the log holds each once."""
    with System([DEV]) as s:
        assert s.arc is not None
        dev = s.device(DEV)
        s.arc.stop()
        relay = s.relays[0]
        ids = [dev.alarm("panic") for _ in range(30)]
        assert wait_for(lambda: s.r.xlen("lw:events") >= 10, 20), s.logs()
        relay.kill()
        stored_before_restart = s.r.xlen("lw:events")
        relay.start()
        assert relay.wait_connected(20), relay.log_text()
        s.arc.start()
        assert wait_for(lambda: s.all_acked(ids), 75), s.logs()
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []
        assert 10 <= stored_before_restart  # the kill really came mid-burst …
        assert dev.wait_step("ack_received", 10, id=ids[-1]) is not None  # … and the device got its acks


def test_relay_killed_the_moment_the_arc_acks_does_not_show_the_alarm_twice_at_the_arc() -> None:
    """The relay is killed -9 exactly when the ARC's ACK is on its way back (a proxy holds
    the ACK and kills the relay first): the ARC has the alarm, the relay has no record of
    it. After the restart the relay must deliver it again in a way the ARC recognises as
    the same message (same account and sequence, DC-09's duplicate rule), never as a
    second alarm."""
    with System([DEV], arc_proxy=True, dispatch_workers=1) as s:
        assert s.arc is not None and s.arc_proxy is not None
        dev = s.device(DEV)
        relay = s.relays[0]
        fired = threading.Event()

        def kill_at_ack(direction: str, data: bytes) -> None:
            if direction == "down" and not fired.is_set():
                fired.set()
                relay.kill()

        s.arc_proxy.on_chunk = kill_at_ack
        ids = [dev.alarm("panic")]
        assert fired.wait(20), s.logs()
        s.arc_proxy.on_chunk = None
        assert s.arc.wait_distinct(1, 5)  # the ARC got the alarm before the relay died
        relay.start()
        assert relay.wait_connected(20), relay.log_text()
        assert wait_for(lambda: s.all_acked(ids), 75), s.logs()
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []

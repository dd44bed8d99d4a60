"""Fault injection on the servers around the relay: broker restart with queued sessions,
Redis restart (AOF, fsync always) during a burst, the ARC receiver down and back.

Real processes throughout (:class:`bench.system.System`): Mosquitto and Redis with the
project's config files, the relay as ``lonewatch relay run``, the device daemon as a
subprocess, pysiaalarm as the ARC. Each test asserts that every alarm reached the ARC
exactly once and that ``lw:events`` holds each alarm once (:func:`bench.verify.delivery_problems`).
"""

from __future__ import annotations

import time

import pytest

from bench.procs import DeviceSpec
from bench.system import System
from bench.verify import delivery_problems, wait_for

pytestmark = pytest.mark.integration

DEV = DeviceSpec("lw-srv-0001", "5E1", 3)


@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_broker_restart_with_alarms_queued_for_the_offline_relay(how: str) -> None:
    """The relay is offline (clean stop: its persistent session stays at the broker) while
    the device raises 8 alarms; the broker is then restarted (SIGTERM: persistence saved)
    or killed -9 (up to 1 s of queued messages lost — the device still holds every alarm
    without a ``received`` ack). Relay back: all 8 reach the ARC once."""
    with System([DEV]) as s:
        assert s.arc is not None
        dev = s.device(DEV)
        relay = s.relays[0]
        relay.stop()
        ids = [dev.alarm("panic") for _ in range(8)]
        assert wait_for(lambda: all(dev.wait_step("published", 0, id=i) for i in ids), 10), dev.log_text()
        time.sleep(0.3)
        s.mq.stop(kill=(how == "kill -9"))
        s.mq.start()
        relay.start()
        assert relay.wait_connected(20), relay.log_text()
        assert wait_for(lambda: s.all_acked(ids), 40), s.logs()
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []
        # The device's own session came back too: it got the acks and emptied its queue.
        assert wait_for(lambda: all(dev.wait_step("ack_received", 0, id=i) for i in ids), 20), dev.log_text()


def test_redis_killed_and_restarted_during_a_burst_loses_and_repeats_nothing() -> None:
    """30 alarms at once; Redis is killed -9 once 5 are stored and started again 1 s later
    on the same AOF. The relay keeps unstored messages unacked (the broker and the device
    resend them) and retries dispatch: all 30 reach the ARC once, the log holds each once."""
    with System([DEV]) as s:
        assert s.arc is not None
        dev = s.device(DEV)
        ids = [dev.alarm("panic") for _ in range(30)]
        assert wait_for(lambda: s.r.xlen("lw:events") >= 5, 20), s.logs()
        s.redis_server.stop(kill=True)
        time.sleep(1.0)
        s.redis_server.start()
        assert wait_for(lambda: _safe(lambda: s.all_acked(ids)), 75), s.logs()
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []


def _safe(pred) -> bool:
    try:
        return bool(pred())
    except Exception:
        return False


def test_arc_down_then_back_every_alarm_arrives_once_and_the_device_hears_both() -> None:
    """The ARC receiver is down for 8 s (the behaviour is the same for a minute: dispatch
    retries without limit, back-off doubling from 1 s to a 30 s cap) while the device raises
    6 alarms — more than the relay's 4 dispatch workers, so some wait their turn. The device
    hears ``arc_failed`` for the first; when the ARC is back each alarm arrives once and the
    device gets the ``arc`` ack for every one."""
    with System([DEV]) as s:
        assert s.arc is not None
        dev = s.device(DEV)
        s.arc.stop()
        ids = [dev.alarm("panic") for _ in range(6)]
        assert dev.wait_step("ack_arc_failed", 20, id=ids[0]) is not None, s.logs()
        time.sleep(8.0)
        assert s.arc.frames == []
        s.arc.start()
        assert wait_for(lambda: s.all_acked(ids), 45), s.logs()
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []
        assert wait_for(lambda: all(dev.wait_step("ack_arc", 0, id=i) for i in ids), 10), dev.log_text()

"""Fault injection at the device end: power cut between queue write and publish, network
partition without FIN, a device clock 5 minutes off, and a relay clock off (the NAK path).

Real processes (:class:`bench.system.System`): the device daemon is a subprocess
(:mod:`bench.device_proc`) killed with SIGKILL for a power cut; the network between device
and broker is a :class:`bench.netproxy.TcpProxy` that can stop forwarding without closing
anything; the ARC is pysiaalarm with its default timestamp window (+20 s / −40 s). Every
alarm must reach the ARC exactly once and sit in ``lw:events`` once.
"""

from __future__ import annotations

import time

import pytest

from bench.procs import DeviceSpec
from bench.system import System
from bench.verify import delivery_problems, wait_for

pytestmark = pytest.mark.integration

DEV = DeviceSpec("lw-dev-0001", "D3F", 11)


def test_power_cut_after_the_queue_write_before_any_publish_loses_nothing() -> None:
    """The device cannot reach the broker (its link is partitioned from the first SYN), so
    the alarm is only on disk when the power is cut (kill -9). After power-up with a
    working link it is sent, reaches the ARC once, and the log holds it once."""
    with System([DEV]) as s:
        assert s.arc is not None
        link = s.proxy()
        link.partition()
        dev = s.device(DEV, port=link.port, connect=False)
        eid = dev.alarm("panic")
        assert dev.wait_step("published", 0.5, id=eid) is None  # it never left the device
        dev.kill()
        assert s.r.xlen("lw:events") == 0
        link.stop()
        dev2 = s.device(DEV)  # same state directory, straight to the broker
        assert wait_for(lambda: s.all_acked([eid]), 30), s.logs()
        assert delivery_problems(s.r, s.arc, [(eid, "panic")]) == []
        assert dev2.wait_step("ack_received", 10, id=eid) is not None


def test_power_cut_right_after_the_queue_write_with_the_link_up_loses_and_repeats_nothing() -> None:
    """kill -9 the moment the daemon confirms the alarm is on disk, while connected: the
    publish may or may not have left. Either way, after power-up the ARC has it once."""
    with System([DEV]) as s:
        assert s.arc is not None
        dev = s.device(DEV)
        first = [dev.alarm("panic") for _ in range(3)]
        dev.kill()
        dev2 = s.device(DEV)
        second = dev2.alarm("panic")
        ids = first + [second]
        assert wait_for(lambda: s.all_acked(ids), 30), s.logs()
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []


def test_network_partition_without_fin_then_heal_delivers_every_alarm_once() -> None:
    """The link stops forwarding (no FIN, no RST) with the device connected; 3 alarms are
    raised into the dead link. The broker notices only by keepalive and publishes the Last
    Will (the relay records ``offline``); the device notices by its own keepalive and keeps
    the alarms queued. After healing, all 3 reach the ARC once."""
    with System([DEV]) as s:
        assert s.arc is not None
        link = s.proxy()
        dev = s.device(DEV, port=link.port, keepalive_s=5)
        link.partition()
        ids = [dev.alarm("panic") for _ in range(3)]
        assert wait_for(lambda: s.store_state(DEV.id).get("status") == "offline", 15), s.logs()
        assert not any(s.arc_state(i) for i in ids)  # nothing got through the partition
        link.heal()
        assert wait_for(lambda: s.all_acked(ids), 45), s.logs()
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []


@pytest.mark.parametrize("offset_s", [-300.0, 300.0])
def test_device_clock_five_minutes_off_the_arc_still_accepts(offset_s: float) -> None:
    """The device's wall clock is 5 minutes behind / ahead (no NTP yet, SPEC §7). Its
    events carry that time, but the relay stamps SIA frames with its own clock: the ARC
    (pysiaalarm, window +20/−40 s) ACKs without a single timestamp NAK."""
    with System([DEV]) as s:
        assert s.arc is not None
        dev = s.device(DEV, clock_offset_s=offset_s)
        ids = [dev.alarm("panic") for _ in range(2)]
        assert wait_for(lambda: s.all_acked(ids), 30), s.logs()
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in ids]) == []
        assert s.arc.counts["error_timestamp"] == 0
        stored = s.stored_event(ids[0])
        assert abs(stored.ts - (time.time() + offset_s)) < 60  # the device's own time was kept


def test_relay_clock_five_minutes_fast_takes_the_nak_path_and_delivers_once() -> None:
    """The relay host's clock is 5 minutes fast: the ARC NAKs the first frame with its own
    time, the relay corrects its offset and re-sends the same sequence, which is ACKed.
    Later alarms use the learned offset: no further NAK."""
    with System([DEV], relay_clock_offset_s=300.0) as s:
        assert s.arc is not None
        dev = s.device(DEV)
        first = dev.alarm("panic")
        assert wait_for(lambda: s.all_acked([first]), 30), s.logs()
        assert s.arc.counts["error_timestamp"] == 1
        later = [dev.alarm("panic") for _ in range(2)]
        assert wait_for(lambda: s.all_acked(later), 30), s.logs()
        assert s.arc.counts["error_timestamp"] == 1
        assert delivery_problems(s.r, s.arc, [(i, "panic") for i in [first, *later]]) == []

"""The device sends no position off shift (issue 13): alive messages and non-alarm events
carry the GNSS fix only while the worker is on shift; an alarm always carries it."""

from __future__ import annotations

from protocol.messages import Position

from tests.test_device_daemon import Dev, dev  # noqa: F401  (fixture)

FIX = Position(55.66857, 12.57613, 6.0, 1_796_000_000.0)


def test_position_goes_out_only_on_shift_or_with_an_alarm(dev: Dev) -> None:  # noqa: F811
    daemon = dev.start()
    daemon.modem_state.position = FIX
    assert not daemon.on_shift and daemon.alive().position is None
    dev.tap(2)
    start = dev.steps.wait("queued", kind="checkin_start")
    assert dev.payload(start["id"]).position is None  # off shift
    dev.hold(1.1)
    alarm = dev.steps.wait("queued", kind="silent_panic")
    assert dev.payload(alarm["id"]).position == FIX  # an alarm: help needs to know where
    daemon.shift(True)
    assert daemon.on_shift and daemon.alive().position == FIX
    test = daemon.raise_event("test")
    assert dev.payload(test.id).position == FIX
    end = daemon.shift(False)
    assert dev.payload(end.id).position == FIX  # sent while still on shift
    assert daemon.alive().position is None

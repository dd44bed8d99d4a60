"""Button gestures and feedback (SPEC §2) on gpiozero MockFactory pins driven like a finger:
drive_low / drive_high with real sleeps, including contact bounce, accidental touches, long
presses and holds. No test asserts on timing; the timings below are short versions of the
defaults so the suite stays fast."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from device.button import GestureButton, GestureTiming
from device.feedback import PATTERNS, Feedback

PIN = 17
TIMING = GestureTiming(hold_s=0.8, cancel_presses=3, cancel_window_s=1.2, checkin_presses=2,
                       checkin_window_s=0.7, bounce_s=0.02, min_press_s=0.05, max_press_s=0.5)
#: Longest a gesture decision can take after the last release, plus slack for a busy machine.
SETTLE_S = TIMING.cancel_window_s + 0.6


class Recorder:
    def __init__(self) -> None:
        self.gestures: queue.Queue[str] = queue.Queue()
        self.ignored: list[str] = []
        self.presses = 0
        self.alarm_open = False

    def all_after(self, seconds: float) -> list[str]:
        time.sleep(seconds)
        out = []
        while not self.gestures.empty():
            out.append(self.gestures.get_nowait())
        return out


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def rec(factory: MockFactory) -> Iterator[Recorder]:
    r = Recorder()

    def press() -> None:
        r.presses += 1

    button = GestureButton(PIN, TIMING, r.gestures.put, on_press=press, alarm_open=lambda: r.alarm_open,
                           pin_factory=factory, on_ignored=r.ignored.append)
    r.pin = factory.pin(PIN)  # type: ignore[attr-defined]
    yield r
    button.close()


def tap(pin, n: int, press_s: float = 0.12, gap_s: float = 0.12) -> None:
    for _ in range(n):
        pin.drive_low()
        time.sleep(press_s)
        pin.drive_high()
        time.sleep(gap_s)


def bouncy_tap(pin, press_s: float = 0.12) -> None:
    """A press whose contacts bounce on the way down and up (edges 2-3 ms apart)."""
    for _ in range(3):
        pin.drive_low()
        time.sleep(0.002)
        pin.drive_high()
        time.sleep(0.002)
    pin.drive_low()
    time.sleep(press_s)
    for _ in range(3):
        pin.drive_high()
        time.sleep(0.002)
        pin.drive_low()
        time.sleep(0.002)
    pin.drive_high()


def low_spans(pin) -> list[float]:
    """How long (s) each low stretch of a MockFactory pin lasted, by the pin's own timestamps."""
    return [cur.timestamp - prev.timestamp for prev, cur in zip(pin.states, pin.states[1:])
            if not prev.state and cur.state]


def test_hold_is_one_alarm_and_no_press(rec: Recorder) -> None:
    rec.pin.drive_low()
    assert rec.gestures.get(timeout=5) == "alarm"
    time.sleep(0.3)  # still held past the threshold: no second alarm
    rec.pin.drive_high()
    assert rec.all_after(SETTLE_S) == []
    assert rec.ignored == []


def test_hold_then_one_tap_is_not_a_checkin(rec: Recorder) -> None:
    rec.pin.drive_low()
    assert rec.gestures.get(timeout=5) == "alarm"
    rec.pin.drive_high()
    time.sleep(0.1)
    tap(rec.pin, 1)  # the hold must not count as the first of two presses
    assert rec.all_after(SETTLE_S) == []
    assert rec.ignored == ["no_gesture:1"]


def test_two_taps_are_a_checkin(rec: Recorder) -> None:
    tap(rec.pin, 2)
    assert rec.gestures.get(timeout=5) == "checkin"
    assert rec.presses == 2


def test_three_taps_cancel_only_while_an_alarm_is_open(rec: Recorder) -> None:
    tap(rec.pin, 3)
    assert rec.all_after(SETTLE_S) == []
    assert rec.ignored == ["no_gesture:3"]
    rec.alarm_open = True
    tap(rec.pin, 3)
    assert rec.gestures.get(timeout=5) == "cancel"


def test_four_taps_are_no_cancel(rec: Recorder) -> None:
    rec.alarm_open = True
    tap(rec.pin, 4, gap_s=0.08)
    assert rec.all_after(SETTLE_S) == []
    assert rec.ignored == ["no_gesture:4"]


def test_bouncing_contacts_count_as_one_press_each(rec: Recorder) -> None:
    bouncy_tap(rec.pin)
    time.sleep(0.12)
    bouncy_tap(rec.pin)
    assert rec.gestures.get(timeout=5) == "checkin"
    assert rec.presses == 2
    assert len(rec.pin.states) > 20  # the pin really saw every bounce edge


def test_glitch_shorter_than_bounce_time_is_nothing(rec: Recorder) -> None:
    # A 5 ms glitch, timed by the pin itself: on a loaded machine the test thread can be kept
    # off the CPU between the two edges, and a "glitch" that in fact lasted longer than bounce_s
    # *is* a press by definition. Such a try proves nothing either way, so it is made again
    # (after the state machine has settled and its counts are cleared).
    for _ in range(10):
        rec.pin.drive_low()
        time.sleep(0.005)
        rec.pin.drive_high()
        if low_spans(rec.pin)[-1] < TIMING.bounce_s / 2:
            break
        rec.all_after(SETTLE_S)
        rec.presses = 0
        rec.ignored.clear()
    else:
        pytest.fail("the machine never let a 10 ms glitch through in 10 tries: nothing was tested")
    assert rec.all_after(SETTLE_S) == []
    assert rec.presses == 0
    assert rec.ignored == []


def test_too_short_touch_is_ignored(factory: MockFactory) -> None:
    r = Recorder()
    timing = GestureTiming(hold_s=0.8, checkin_window_s=0.7, cancel_window_s=1.2, bounce_s=0.005,
                           min_press_s=0.08, max_press_s=0.5)
    button = GestureButton(PIN, timing, r.gestures.put, pin_factory=factory, on_ignored=r.ignored.append)
    try:
        pin = factory.pin(PIN)
        for _ in range(10):
            for _ in range(2):  # two brushes against the button: settled presses, but too short
                pin.drive_low()
                time.sleep(0.03)
                pin.drive_high()
                time.sleep(0.1)
            # Timed by the pin: a brush the scheduler stretched to min_press_s is a real press,
            # and such a try is made again (see the glitch test above).
            if all(d < timing.min_press_s for d in low_spans(pin)[-2:]):
                break
            r.all_after(SETTLE_S)
            r.ignored.clear()
        else:
            pytest.fail("the machine never let two 30 ms brushes through in 10 tries: nothing was tested")
        assert r.all_after(SETTLE_S) == []
        assert r.ignored == ["too_short", "too_short"]
    finally:
        button.close()


def test_long_press_below_hold_is_neither_alarm_nor_press(rec: Recorder) -> None:
    tap(rec.pin, 1)
    rec.pin.drive_low()
    time.sleep(0.65)  # longer than max_press_s, shorter than hold_s
    rec.pin.drive_high()
    assert rec.all_after(SETTLE_S) == []
    assert "too_long" in rec.ignored


def test_press_in_progress_when_window_ends_is_waited_for(rec: Recorder) -> None:
    rec.alarm_open = True
    tap(rec.pin, 2, gap_s=0.3)
    rec.pin.drive_low()  # third press starts before the cancel window ends …
    time.sleep(0.35)     # … and is released after it
    rec.pin.drive_high()
    assert rec.gestures.get(timeout=5) == "cancel"


# -- feedback ------------------------------------------------------------------------------


def on_pulses(pin) -> int:
    """How often an output pin went high."""
    return sum(1 for prev, cur in zip(pin.states, pin.states[1:]) if cur.state and not prev.state)


def test_silent_mode_never_drives_the_buzzer(factory: MockFactory) -> None:
    fb = Feedback(27, 22, 23, silent=True, pin_factory=factory)
    try:
        for pattern in PATTERNS:
            fb.play(pattern)
        time.sleep(1.0)
        assert fb.buzzer is None
        assert on_pulses(factory.pin(23)) == 0
        assert on_pulses(factory.pin(22)) >= 1  # the vibration motor did run
    finally:
        fb.close()


def test_buzzer_sounds_when_not_silent(factory: MockFactory) -> None:
    fb = Feedback(27, 22, 23, silent=False, pin_factory=factory)
    try:
        fb.play("alarm_taken")
        time.sleep(0.8)
        assert on_pulses(factory.pin(23)) == 2
        assert on_pulses(factory.pin(22)) == 2
    finally:
        fb.close()


def test_patterns_are_distinct() -> None:
    assert len(set(PATTERNS.values())) == len(PATTERNS)
    for needed in ("alarm_taken", "arc_delivered", "no_connection", "checkin_started", "checkin_expiring"):
        assert needed in PATTERNS


def test_unknown_pattern_is_a_key_error(factory: MockFactory) -> None:
    fb = Feedback(27, 22, silent=True, pin_factory=factory)
    try:
        with pytest.raises(KeyError):
            fb.play("disco")
    finally:
        fb.close()

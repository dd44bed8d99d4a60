"""Man-down detection over the physics trace corpus (issue 10): every fall ends in
``man_down``, no daily-work trace ever does (except the device left on a table, by design),
and the detector's rules one by one."""

from __future__ import annotations

import math

import pytest

from device.accel_trace import Trace, TraceSample
from device.mandown import PROFILES, STATES, MandownDetector, MandownProfile, replay, tilt_deg_of
from tests import traces

SEEDS = (1, 2, 3)


def run(trace: Trace, profile: str | MandownProfile = "default", axis: str = "+z"):
    det = MandownDetector(PROFILES[profile] if isinstance(profile, str) else profile, axis)
    return det, replay(det, trace.samples)


def states(trans) -> list[str]:
    return [t.state for t in trans]


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(traces.FALLS))
def test_every_fall_ends_in_man_down(name: str, seed: int, profile: str) -> None:
    trace = traces.FALLS[name](seed)
    if profile == "office" and name == "slump_against_wall":
        # office tilts at 50° and waits 60 s: the slump trace is long enough for it
        assert trace.duration_s > 60 + 30 + 20
    det, trans = run(trace, profile)
    seen = states(trans)
    assert "man_down" in seen, (name, seed, profile, [t.as_dict() for t in trans])
    assert seen.index("prealarm") < seen.index("man_down")
    assert set(seen) <= set(STATES)
    p = PROFILES[profile]
    down = next(t for t in trans if t.state == "man_down")
    pre = next(t for t in trans if t.state == "prealarm")
    assert down.t_s - pre.t_s == pytest.approx(p.prealarm_s, abs=0.05)
    # falls go the fast fall path (impact first); the slump has no impact: the tilt path
    expected = "tilt" if name == "slump_against_wall" else "fall"
    assert down.detail["trigger"] == expected
    wait = p.still_s if expected == "tilt" else p.impact_still_s
    # SPEC §6: still → 101 ≤ still_s + prealarm_s (+ 2 s for the device and the relay)
    assert down.t_s - det.stillness_started <= wait + p.prealarm_s + 1.0 + 1e-6


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(set(traces.DAILY) - traces.ENDS_IN_MAN_DOWN_BY_DESIGN))
def test_daily_work_never_ends_in_man_down(name: str, seed: int, profile: str) -> None:
    _, trans = run(traces.DAILY[name](seed), profile)
    assert "man_down" not in states(trans), (name, seed, profile, [t.as_dict() for t in trans])
    assert "prealarm" not in states(trans)


def test_sitting_down_hard_is_an_impact_but_no_alarm() -> None:
    # free fall + impact really happen (the fall path arms) — the upright torso keeps it off
    _, trans = run(traces.sitting_down_hard(1))
    assert "impact" in states(trans) and "prealarm" not in states(trans)


def test_a_dropped_device_arms_the_fall_path_but_is_picked_up_in_time() -> None:
    _, trans = run(traces.device_dropped(2))
    assert "impact" in states(trans) and "man_down" not in states(trans)


def test_device_left_on_a_table_raises_man_down_by_the_tilt_path() -> None:
    """Documented in device/mandown.py: a still device cannot be told from a still body."""
    det, trans = run(traces.left_on_table(1))
    down = next(t for t in trans if t.state == "man_down")
    assert down.detail["trigger"] == "tilt"
    assert down.t_s - det.stillness_started == pytest.approx(30 + 30, abs=1.5)


def test_a_device_upright_on_a_table_only_trips_the_optional_no_motion_path() -> None:
    still = [TraceSample(i / 50, 0.0, 0.0, 1.0) for i in range(50 * 700)]
    trace = Trace.of(still)
    assert "prealarm" not in states(run(trace, "default")[1])  # no_motion off by default
    det, trans = run(trace, "office")  # office: no_motion_s = 600
    assert [t.detail.get("trigger") for t in trans if t.state == "man_down"] == ["no_motion"]


def test_button_press_in_the_prealarm_cancels_it() -> None:
    _, trans = run(traces.fall_then_cancel(1))
    seen = states(trans)
    assert "prealarm" in seen and "man_down" not in seen
    cancel = next(t for t in trans if t.state == "cancelled")
    assert cancel.detail == {"reason": "button", "trigger": "fall"}


def _lying_still_then(after: list[TraceSample]) -> list[TraceSample]:
    b = traces.Body(5)
    b.walk(3).fall(traces.FORWARD).impact().hold(20)
    base = b.samples
    t0 = base[-1].t_s + traces.DT
    return base + [TraceSample(t0 + s.t_s, s.ax, s.ay, s.az) for s in after]


def test_standing_up_and_moving_cancels_the_prealarm() -> None:
    b = traces.Body(9)
    b.theta, b.d = 90.0, traces.FORWARD
    b.move_to(5, 1.5, a_v_peak=0.3, motion_g=0.05).walk(10)
    _, trans = run(Trace.of(_lying_still_then(b.samples)))
    cancel = [t for t in trans if t.state == "cancelled"]
    assert cancel and cancel[0].detail["reason"] == "stood_up" and "man_down" not in states(trans)


def test_moving_while_still_lying_does_not_cancel() -> None:
    """An injured worker who moves on the floor still needs help."""
    b = traces.Body(9)
    b.theta, b.d = 90.0, traces.FORWARD
    b.hold(40, 0.15)
    _, trans = run(Trace.of(_lying_still_then(b.samples)))
    assert "cancelled" not in states(trans) and "man_down" in states(trans)


def test_the_prealarm_ends_on_time_without_samples() -> None:
    det = MandownDetector()
    trans = replay(det, traces.fall_forward(1).samples[:50 * 25])  # stop inside the pre-alarm
    assert det.state == "prealarm" and "man_down" not in states(trans)
    assert det.tick(det.prealarm_until - 0.01) == []
    assert states(det.tick(det.prealarm_until)) == ["man_down"]


def test_pause_cancels_a_prealarm_and_nothing_is_raised_while_paused() -> None:
    det = MandownDetector()
    samples = traces.fall_forward(1).samples
    replay(det, samples[:50 * 25])
    assert det.state == "prealarm"
    t = samples[50 * 25].t_s
    trans = det.pause(t, "worker")
    assert [(x.state, x.detail.get("reason")) for x in trans] == [("cancelled", "paused"), ("paused", "worker")]
    rest = replay(det, samples[50 * 25:])
    assert rest == [] and det.state == "paused"
    assert states(det.resume(samples[-1].t_s)) == ["upright"]


def test_after_man_down_standing_up_rearms_and_a_second_fall_is_caught() -> None:
    first = traces.fall_forward(1).samples
    b = traces.Body(4)
    b.theta, b.d = 90.0, traces.FORWARD
    b.move_to(5, 1.5, a_v_peak=0.3, motion_g=0.05).walk(10).fall(traces.BACKWARD).impact().hold(60)
    t0 = first[-1].t_s + traces.DT
    both = list(first) + [TraceSample(t0 + s.t_s, s.ax, s.ay, s.az) for s in b.samples]
    _, trans = run(Trace.of(both))
    assert states(trans).count("man_down") == 2
    assert any(t.state == "upright" and t.detail.get("recovered") for t in trans)


@pytest.mark.parametrize("axis,rotate", [("+z", lambda x, y, z: (x, y, z)), ("-z", lambda x, y, z: (x, y, -z)),
                                         ("+x", lambda x, y, z: (z, y, x)), ("-y", lambda x, y, z: (x, -z, y))])
def test_the_upright_axis_follows_the_mounting(axis: str, rotate) -> None:
    """The same fall, recorded by a device mounted another way, is the same fall."""
    fall = traces.fall_forward(2).samples
    turned = Trace.of([TraceSample(s.t_s, *rotate(s.ax, s.ay, s.az)) for s in fall])
    _, trans = run(turned, axis=axis)
    assert "man_down" in states(trans)
    walking = traces.walking(2).samples
    turned = Trace.of([TraceSample(s.t_s, *rotate(s.ax, s.ay, s.az)) for s in walking])
    assert "tilted" not in states(run(turned, axis=axis)[1])


def test_wrong_upright_axis_is_refused() -> None:
    with pytest.raises(ValueError, match="upright axis"):
        MandownDetector(upright_axis="z")


@pytest.mark.parametrize("bad", [dict(freefall_g=1.2), dict(impact_g=0.9), dict(no_motion_s=10.0, still_s=30.0)])
def test_inconsistent_profiles_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        MandownDetector(MandownProfile(**bad))


def test_tilt_angle() -> None:
    assert tilt_deg_of(0, 0, 1, (0, 0, 1)) == pytest.approx(0)
    assert tilt_deg_of(0, 1, 0, (0, 0, 1)) == pytest.approx(90)
    assert tilt_deg_of(0, math.sin(math.radians(30)), math.cos(math.radians(30)), (0, 0, 1)) == pytest.approx(30)
    assert tilt_deg_of(0, 0, 0, (0, 0, 1)) == 0.0


def test_samples_out_of_order_and_gaps_do_not_count_as_stillness() -> None:
    det = MandownDetector()
    # lying tilted, but with a 60 s hole in the data (the watcher slept): no stillness of 60 s
    lying = [TraceSample(i / 50, 0.0, -1.0, 0.0) for i in range(50 * 5)]
    later = [TraceSample(65 + i / 50, 0.0, -1.0, 0.0) for i in range(50 * 5)]
    trans = replay(det, lying + later)
    assert "prealarm" not in states(trans)
    assert det.feed(1.0, 0, 0, 1) == []  # older than the last sample: ignored

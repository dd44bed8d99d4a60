"""A man-down trace corpus built from body mechanics, not from the detector's thresholds
(issue 10 "A trace corpus in tests/").

The device is worn on the belt: +x to the wearer's right, +y forward, +z up when upright
(hardware/README.md). An accelerometer measures specific force: at rest 1 g pointing *up*,
so for a body leaning by θ with the device axis ``d`` going down, the static reading is
``cos θ · z − sin θ · d``; vertical acceleration ``a_v`` of the hip (up positive, in g) scales
it by ``1 + a_v``. Numbers used, from the fall-detection literature and plain mechanics:

* a fall from standing takes 0.7–1.2 s; the hip is in partial free fall (0.1–0.5 g measured)
  for ~0.3–0.6 s and lands with a 3–7 g peak lasting 50–100 ms, then rings a few times;
* a person lying unconscious moves only by breathing: ~3–5 mg at ~0.25 Hz at the hip;
* walking: hip vertical ±0.25–0.35 g at the step rate (1.7–2.0 Hz), forward ±0.15 g,
  lateral ±0.08 g at half the step rate, heel strikes to ~1.6 g; stairs: ±0.4 g, ~1.9 g;
* sitting down hard: ~0.25 s at 0.2–0.4 g, then 2.5–3.5 g into the chair, torso upright;
* a device dropped from 1 m falls 0.45 s at ~0 g and hits at 8 g or more (clipped at the
  chip's ±8 g range), bounces once, then lies perfectly still (no breathing);
* sensor noise 4 mg rms per axis (LIS3DH, 50 Hz, high resolution).

Every generator takes a seed (varying amplitudes, durations, directions) and returns a
:class:`device.accel_trace.Trace` at 50 Hz. :data:`FALLS` must end in ``man_down``;
:data:`DAILY` must never (except :data:`ENDS_IN_MAN_DOWN_BY_DESIGN`, the device left on a
table: see :mod:`device.mandown`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from device.accel_trace import Trace, TraceSample

RATE = 50
DT = 1.0 / RATE
CLIP_G = 8.0
NOISE_G = 0.004

Vec = tuple[float, float, float]
FORWARD: Vec = (0.0, 1.0, 0.0)     # front of the body goes down (face down)
BACKWARD: Vec = (0.0, -1.0, 0.0)   # back goes down (lying on the back)
RIGHT: Vec = (1.0, 0.0, 0.0)       # right side down
LEFT: Vec = (-1.0, 0.0, 0.0)


def _rot(d: Vec, deg: float) -> Vec:
    """``d`` turned by ``deg`` about the device's z axis (varies a fall's direction)."""
    a = math.radians(deg)
    return (d[0] * math.cos(a) - d[1] * math.sin(a), d[0] * math.sin(a) + d[1] * math.cos(a), 0.0)


class Body:
    """Builds one trace segment by segment; ``theta`` (deg) and ``d`` are the body's lean."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.t = 0.0
        self.theta = 5.0
        self.d: Vec = FORWARD
        self.samples: list[TraceSample] = []
        self.button = False
        self.breathing = True

    # -- the one place samples are made ---------------------------------------------------
    def _emit(self, a_v: float, extra: Vec = (0.0, 0.0, 0.0), *, noise: float = NOISE_G) -> None:
        th = math.radians(self.theta)
        up = (-math.sin(th) * self.d[0], -math.sin(th) * self.d[1], math.cos(th))
        g = self.rng.gauss
        vals = [up[i] * (1.0 + a_v) + extra[i] + g(0.0, noise) for i in range(3)]
        vals = [max(-CLIP_G, min(CLIP_G, v)) for v in vals]
        self.samples.append(TraceSample(round(self.t, 4), vals[0], vals[1], vals[2], self.button))
        self.t += DT

    def _n(self, seconds: float) -> int:
        return max(1, int(round(seconds * RATE)))

    # -- segments -------------------------------------------------------------------------
    def hold(self, seconds: float, motion_g: float = 0.0, freq: float = 1.3) -> "Body":
        """Stay in the current lean; ``motion_g`` the size of working movements (0 = none);
        breathing if the body is worn (``breathing``)."""
        r = self.rng
        ph = [r.uniform(0, 6.28) for _ in range(6)]
        f2 = freq * r.uniform(1.4, 2.2)
        for _ in range(self._n(seconds)):
            t = self.t
            br = 0.004 * math.sin(2 * math.pi * 0.25 * t + ph[0]) if self.breathing else 0.0
            ex = tuple(motion_g * (0.7 * math.sin(2 * math.pi * freq * t + ph[1 + i])
                                   + 0.5 * math.sin(2 * math.pi * f2 * t + ph[3 + i]))
                       for i in range(3))
            self._emit(br, ex)  # type: ignore[arg-type]
        return self

    def work(self, seconds: float, motion_g: float, max_pause_s: float, theta_range: tuple[float, float]) -> "Body":
        """Working in a lean that wanders within ``theta_range``: bursts of movement with
        pauses of at most ``max_pause_s``."""
        r = self.rng
        end = self.t + seconds
        while self.t < end:
            self.move_to(r.uniform(*theta_range), r.uniform(0.8, 2.0), motion_g=motion_g)
            self.hold(min(end - self.t, r.uniform(3, 12)), motion_g * r.uniform(0.6, 1.3))
            if self.t < end and r.random() < 0.5:
                self.hold(min(end - self.t, r.uniform(2, max_pause_s)), 0.003)
        return self

    def move_to(self, theta: float, seconds: float, d: Vec | None = None, a_v_peak: float = 0.0,
                motion_g: float = 0.0) -> "Body":
        """Change lean smoothly (cosine) to ``theta`` in ``seconds``; the hip rises/sinks with
        a smooth vertical acceleration pulse of ``a_v_peak`` (down then up, as standing up or
        kneeling does)."""
        if d is not None and self.theta < 15:
            self.d = d
        t0, n = self.theta, self._n(seconds)
        r = self.rng
        ph = r.uniform(0, 6.28)
        for k in range(n):
            s = (k + 1) / n
            self.theta = t0 + (theta - t0) * (1 - math.cos(math.pi * s)) / 2
            a_v = a_v_peak * math.sin(2 * math.pi * s)
            ex = tuple(motion_g * math.sin(2 * math.pi * 1.5 * self.t + ph + i) for i in range(3))
            self._emit(a_v, ex)  # type: ignore[arg-type]
        return self

    def walk(self, seconds: float, stairs: bool = False) -> "Body":
        """Walking (or stairs): hip bounce at the step rate, sway, heel strikes."""
        r = self.rng
        f = r.uniform(1.7, 2.0) if not stairs else r.uniform(1.4, 1.7)
        av = r.uniform(0.25, 0.35) if not stairs else r.uniform(0.35, 0.45)
        heel = r.uniform(0.3, 0.5) if not stairs else r.uniform(0.6, 0.8)
        lean = self.theta
        ph = r.uniform(0, 6.28)
        for _ in range(self._n(seconds)):
            t = self.t
            step = (f * t + ph / 6.28) % 1.0
            a_v = av * math.sin(2 * math.pi * f * t + ph) + (heel * math.exp(-((step - 0.05) / 0.02) ** 2))
            self.theta = lean + 3.0 * math.sin(2 * math.pi * f * t + ph + 1.0)
            ex = (0.08 * math.sin(math.pi * f * t + ph), 0.15 * math.sin(2 * math.pi * f * t + ph + 2.0), 0.0)
            self._emit(a_v, ex)
        self.theta = lean
        return self

    def fall(self, d: Vec, seconds: float | None = None, to_theta: float = 90.0, low_g: float | None = None) -> "Body":
        """Falling over in direction ``d``: the lean accelerates like a toppling pendulum,
        the hip sinks into partial free fall (``low_g`` left of 1 g)."""
        r = self.rng
        seconds = seconds or r.uniform(0.75, 1.1)
        low = low_g if low_g is not None else r.uniform(0.15, 0.4)
        self.d = d
        t0, n = self.theta, self._n(seconds)
        for k in range(n):
            s = (k + 1) / n
            self.theta = t0 + (to_theta - t0) * s * s
            a_v = -(1 - low) * min(1.0, s / 0.35)
            self._emit(a_v, (r.gauss(0, 0.05), r.gauss(0, 0.05), r.gauss(0, 0.05)))
        self.theta = to_theta
        return self

    def impact(self, peak_g: float | None = None) -> "Body":
        """Hitting the floor: a 50–100 ms half-sine deceleration pulse, then ringing."""
        r = self.rng
        peak = peak_g if peak_g is not None else r.uniform(3.0, 7.0)
        width = r.uniform(0.05, 0.1)
        lateral = [r.uniform(-0.4, 0.4) * peak for _ in range(3)]
        n = self._n(width + 0.4)
        for k in range(n):
            tt = k * DT
            if tt < width:
                a = peak * math.sin(math.pi * tt / width)
                ex = tuple(lat * math.sin(math.pi * tt / width) for lat in lateral)
            else:
                a = 0.6 * peak * 0.25 * math.exp(-(tt - width) / 0.08) * math.sin(2 * math.pi * 12 * (tt - width))
                ex = (0.0, 0.0, 0.0)
            self._emit(a, ex)  # type: ignore[arg-type]
        return self

    def press(self, seconds: float = 0.3) -> "Body":
        """The worker presses the button (trace column ``button``) while lying as they are."""
        self.button = True
        self.hold(seconds, 0.01)
        self.button = False
        return self

    def trace(self, name: str) -> Trace:
        return Trace.of(self.samples, name)


# --------------------------------------------------------------------------- falls


def fall_forward(seed: int = 1) -> Trace:
    b = Body(seed)
    b.walk(b.rng.uniform(4, 7)).fall(_rot(FORWARD, b.rng.uniform(-25, 25))).impact()
    return b.hold(b.rng.uniform(75, 90)).trace("fall_forward")


def fall_backward(seed: int = 1) -> Trace:
    b = Body(seed)
    b.walk(b.rng.uniform(4, 7)).fall(_rot(BACKWARD, b.rng.uniform(-25, 25))).impact()
    return b.hold(b.rng.uniform(75, 90)).trace("fall_backward")


def fall_sideways(seed: int = 1) -> Trace:
    b = Body(seed)
    side = RIGHT if seed % 2 else LEFT
    b.walk(b.rng.uniform(4, 7)).fall(_rot(side, b.rng.uniform(-20, 20)), to_theta=b.rng.uniform(75, 95)).impact()
    return b.hold(b.rng.uniform(75, 90)).trace("fall_sideways")


def slump_against_wall(seed: int = 1) -> Trace:
    """Fainting while standing at a wall: sways, slides down it over 3–5 s into a sitting
    heap leaning sideways 55–75°, no free fall and no impact; then motionless."""
    b = Body(seed)
    r = b.rng
    b.hold(r.uniform(8, 12), 0.02)
    b.hold(3, 0.06, freq=0.7)  # swaying
    b.d = _rot(RIGHT if seed % 2 else LEFT, r.uniform(-30, 30))
    b.move_to(r.uniform(55, 75), r.uniform(3, 5), a_v_peak=-0.15)
    b.impact(peak_g=r.uniform(0.3, 0.6))  # bottom meets the floor: a soft bump, no free fall
    return b.hold(r.uniform(100, 120)).trace("slump_against_wall")


def fall_then_get_up(seed: int = 1) -> Trace:
    """Slips on a wet floor, lies dazed 1–3 s, pushes up and stands within 10 s, walks on."""
    b = Body(seed)
    r = b.rng
    b.walk(r.uniform(4, 6)).fall(_rot(FORWARD if seed % 2 else BACKWARD, r.uniform(-20, 20))).impact()
    b.hold(r.uniform(1.0, 3.0), 0.01)
    b.hold(1.5, 0.12)                       # moving: arms under the body
    b.move_to(50, 1.5, a_v_peak=0.2, motion_g=0.08)  # on hands and knees
    b.hold(1.0, 0.08)
    b.move_to(5, 1.5, a_v_peak=0.3, motion_g=0.05)   # standing
    return b.walk(r.uniform(20, 40)).trace("fall_then_get_up")


def fall_then_cancel(seed: int = 1) -> Trace:
    """A fall the worker survives conscious: lies still into the pre-alarm, presses the
    button to cancel it, then lies still a little longer (not long enough for another)."""
    b = Body(seed)
    b.walk(5).fall(FORWARD).impact().hold(16)
    b.press(0.4)
    return b.hold(20).trace("fall_then_cancel")


# --------------------------------------------------------------------------- daily work


def walking(seed: int = 1) -> Trace:
    b = Body(seed)
    return b.walk(b.rng.uniform(240, 300)).trace("walking")


def stairs(seed: int = 1) -> Trace:
    b = Body(seed)
    for _ in range(4):
        b.walk(b.rng.uniform(15, 25), stairs=True).walk(b.rng.uniform(5, 10))
    return b.trace("stairs")


def sitting_down_hard(seed: int = 1) -> Trace:
    """Drops into a chair (free fall + impact!), sits reading 60–90 s, stands up, walks."""
    b = Body(seed)
    r = b.rng
    b.walk(r.uniform(4, 6))
    b.fall(FORWARD, seconds=r.uniform(0.3, 0.45), to_theta=r.uniform(20, 30), low_g=r.uniform(0.2, 0.4))
    b.impact(peak_g=r.uniform(2.5, 3.5))
    b.move_to(r.uniform(10, 20), 0.8)
    b.hold(r.uniform(60, 90), 0.004)  # sitting still, reading
    b.move_to(40, 0.8, a_v_peak=0.25).move_to(5, 0.8, a_v_peak=0.2)
    return b.walk(20).trace("sitting_down_hard")


def kneeling_cleaning(seed: int = 1) -> Trace:
    """Kneels to clean under a desk for 3 minutes, bent forward 55–85°, scrubbing with
    pauses of up to 12 s (looking, rinsing a cloth), then stands up."""
    b = Body(seed)
    b.walk(5).move_to(65, 2.0, d=FORWARD, a_v_peak=-0.2)
    b.work(180, motion_g=b.rng.uniform(0.08, 0.15), max_pause_s=12, theta_range=(55, 85))
    b.move_to(5, 2.0, a_v_peak=0.25)
    return b.walk(15).trace("kneeling_cleaning")


def bending_to_bucket(seed: int = 1) -> Trace:
    b = Body(seed)
    r = b.rng
    b.walk(4)
    for _ in range(6):
        b.move_to(r.uniform(75, 95), r.uniform(0.9, 1.5), d=FORWARD, a_v_peak=-0.15)
        b.hold(r.uniform(2, 4), 0.08)
        b.move_to(5, r.uniform(0.9, 1.5), a_v_peak=0.3)  # lifting the bucket
        b.walk(r.uniform(4, 8))
    return b.trace("bending_to_bucket")


def lying_under_sink(seed: int = 1) -> Trace:
    """Lies on the back under a sink for a 5-minute repair: arm work moves the torso, with
    pauses of up to 15 s (reading a part, waiting for a joint to set)."""
    b = Body(seed)
    b.walk(5).move_to(60, 2.0, d=FORWARD, a_v_peak=-0.2)   # kneel
    b.move_to(10, 1.5)                                     # sit
    b.move_to(88, 3.0, d=BACKWARD)                         # lie back
    b.work(300, motion_g=b.rng.uniform(0.06, 0.12), max_pause_s=15, theta_range=(80, 95))
    b.move_to(10, 2.5, a_v_peak=0.2)
    b.move_to(5, 1.5, a_v_peak=0.3)
    return b.walk(15).trace("lying_under_sink")


def device_dropped(seed: int = 1) -> Trace:
    """The device slips off the belt: real free fall from ~1 m, a hard hit (clipped at 8 g),
    a bounce, lies flat and motionless 3–7 s, is picked up and clipped on again."""
    b = Body(seed)
    r = b.rng
    b.walk(5)
    b.breathing = False
    b.fall(_rot(FORWARD, r.uniform(0, 360)), seconds=0.45, to_theta=90, low_g=0.02)
    b.impact(peak_g=r.uniform(9, 14))
    b.fall(b.d, seconds=0.12, to_theta=90, low_g=0.05)
    b.impact(peak_g=r.uniform(2, 4))
    b.d = FORWARD if r.random() < 0.5 else BACKWARD
    b.hold(r.uniform(3, 7))
    b.move_to(30, 0.6, a_v_peak=0.4, motion_g=0.2)        # picked up
    b.breathing = True
    b.move_to(5, 1.0, motion_g=0.1)
    return b.walk(30).trace("device_dropped")


def left_on_table(seed: int = 1) -> Trace:
    """Taken off and laid flat on a table, then left there for 3 minutes."""
    b = Body(seed)
    b.walk(5).hold(2, 0.2)
    b.move_to(90, 1.5, d=BACKWARD, motion_g=0.1)
    b.breathing = False
    b.impact(peak_g=0.3)
    return b.hold(180).trace("left_on_table")


FALLS: dict[str, Callable[[int], Trace]] = {
    "fall_forward": fall_forward, "fall_backward": fall_backward, "fall_sideways": fall_sideways,
    "slump_against_wall": slump_against_wall,
}
DAILY: dict[str, Callable[[int], Trace]] = {
    "fall_then_get_up": fall_then_get_up, "walking": walking, "stairs": stairs,
    "sitting_down_hard": sitting_down_hard, "kneeling_cleaning": kneeling_cleaning,
    "bending_to_bucket": bending_to_bucket, "lying_under_sink": lying_under_sink,
    "device_dropped": device_dropped, "left_on_table": left_on_table,
}
#: Daily-work traces that end in man_down on purpose (mandown module docstring).
ENDS_IN_MAN_DOWN_BY_DESIGN = frozenset({"left_on_table"})
#: What the worker does on an ordinary shift (for false alarms per 8 h): daily work, worn.
SHIFT_WORK = tuple(n for n in DAILY if n not in ENDS_IN_MAN_DOWN_BY_DESIGN)


def shift_samples(hours: float, seed: int = 1) -> list[TraceSample]:
    """``hours`` of worn daily work: the :data:`SHIFT_WORK` traces with fresh seeds one after
    the other, times made continuous (each piece starts where the last one ended)."""
    rng = random.Random(seed)
    out: list[TraceSample] = []
    t = 0.0
    i = 0
    while t < hours * 3600:
        name = SHIFT_WORK[i % len(SHIFT_WORK)] if i < len(SHIFT_WORK) else rng.choice(SHIFT_WORK)
        piece = DAILY[name](rng.randrange(1 << 30)).samples
        base = t - piece[0].t_s
        out.extend(TraceSample(s.t_s + base, s.ax, s.ay, s.az, s.button) for s in piece)
        t = out[-1].t_s + DT
        i += 1
    return out


def demo_fall(seed: int = 7) -> Trace:
    """The demo's trace (labstack/demo/mandown_fall.csv, written by ``python -m tests.traces``):
    3 s of walking, a forward fall, 20 s lying motionless."""
    b = Body(seed)
    b.walk(3).fall(FORWARD).impact()
    return b.hold(20).trace("demo_fall")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from device.accel_trace import write_trace

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "labstack/demo/mandown_fall.csv")
    print(out, write_trace(out, demo_fall().samples))

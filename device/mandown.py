"""Man-down detection: pure code over accelerometer samples (issue 10, SPEC §5b).

One detector, used the same by the device daemon (:mod:`device.mandown_watch`), by
``lonewatch mandown replay`` and by the tests and the benchmark. No I/O, no clock of its own:
time is what the samples (and :meth:`MandownDetector.tick`) say, in seconds.

Three ways into the **pre-alarm** (thresholds per profile, config ``[mandown]``):

* **fall**: free fall (``|a| < freefall_g`` for ``freefall_s``) followed within
  ``impact_window_s`` by an impact (``|a| > impact_g``), then the body lies tilted beyond
  ``tilt_deg`` and still for ``impact_still_s`` (Peoplesafe-style: free fall + tilt + 10 s);
* **tilt**: tilted beyond ``tilt_deg`` from the upright axis, then no motion for ``still_s``
  (Twig-style: 45°, 30 s) — catches the slow collapse without an impact;
* **no motion** (optional, ``no_motion_s`` > 0): no motion at all in any position.

The pre-alarm lasts ``prealarm_s``; a button press, or standing up (tilt back within
``tilt_deg``) and moving for ``cancel_move_s``, cancels it; otherwise ``man_down``. Movement
alone while still lying down does *not* cancel: an injured worker may move and still need
help. After ``man_down`` the detector waits until the worker is upright and moving again
before it can raise another one (the open alarm is cancelled with the cancel gesture).

Motion is measured per block of :data:`BLOCK_S` (1 s): the largest per-axis standard deviation of
the samples in the block; a block is *still* when it is at most ``still_g``. Tilt is the angle
between the block's mean acceleration (gravity, at rest) and the upright axis, with
``TILT_HYSTERESIS_DEG`` hysteresis. Physics behind the defaults: a hip falling from standing is
in partial free fall (0.2–0.6 g) for 0.2–0.5 s and hits the floor at 3–8 g; walking, stairs and
sitting down stay above ~0.5 g except for moments shorter than 0.1 s, and a worker who is
awake moves more than 0.03 g within half a minute; a body lying unconscious moves only by
breathing (a few mg at the hip).

A device left still on a table, lying flat, is tilted 90° and still: it goes the tilt path
and raises ``man_down`` after ``still_s + prealarm_s``. That is deliberate: the detector cannot
tell a motionless body from a motionless device, and a worker on shift without the device is
unprotected — which the ARC must know. Take the device off only after starting the man-down
pause gesture (:mod:`device.mandown_watch`), or put it on the charger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, Literal

__all__ = ["AXES", "PROFILES", "STATES", "MandownDetector", "MandownProfile", "Transition", "replay",
           "axis_vector", "tilt_deg_of"]

State = Literal["upright", "tilted", "impact", "still", "prealarm", "cancelled", "man_down", "paused"]
#: Every state :class:`MandownDetector` reports (the replay tool prints these).
STATES: Final = ("upright", "tilted", "impact", "still", "prealarm", "cancelled", "man_down", "paused")
#: Upright axes a device may be mounted with (hardware/README.md: ``+z`` up when worn upright).
AXES: Final = ("+x", "-x", "+y", "-y", "+z", "-z")
#: Back to upright only once the tilt is this many degrees inside ``tilt_deg`` (no flapping).
TILT_HYSTERESIS_DEG: Final = 10.0
#: A run of still blocks is reported as ``still`` once it lasted this long, seconds.
STILL_REPORT_S: Final = 2.0
#: A fall stays armed this long after its impact; then only the tilt path is left, seconds.
IMPACT_ARMED_S: Final = 120.0
#: Length of the blocks motion and tilt are measured over, seconds.
BLOCK_S: Final = 1.0
#: Samples further apart than this are a gap (the watcher slept): blocks restart, seconds.
MAX_GAP_S: Final = 0.5


@dataclass(frozen=True)
class MandownProfile:
    """Thresholds of one man-down profile (config ``[mandown]``; all times in seconds,
    accelerations in g, angles in degrees). Defaults are the issue's (45°, 30 s, 30 s).

    Raises (from :meth:`check`): ValueError naming the first inconsistent key.
    """

    tilt_deg: float = 45.0
    still_s: float = 30.0
    still_g: float = 0.03
    freefall_g: float = 0.5
    freefall_s: float = 0.1
    impact_g: float = 2.5
    impact_window_s: float = 1.0
    impact_still_s: float = 10.0
    no_motion_s: float = 0.0
    prealarm_s: float = 30.0
    cancel_move_s: float = 2.0

    def check(self) -> None:
        """Raise ValueError for combinations no single range check catches."""
        if self.freefall_g >= 1.0:
            raise ValueError("freefall_g must be below 1 g (at rest the device reads 1 g)")
        if self.impact_g <= 1.0:
            raise ValueError("impact_g must be above 1 g")
        if self.no_motion_s and self.no_motion_s < self.still_s:
            raise ValueError("no_motion_s must be 0 (off) or at least still_s")

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Named profiles an installer picks per worker (``[mandown] profile``); keys set in
#: ``[mandown]`` override the profile's values.
PROFILES: Final[dict[str, MandownProfile]] = {
    # The defaults: tilt 45°, still 30 s, pre-alarm 30 s.
    "default": MandownProfile(),
    # Night cleaners: kneel, bend to buckets, lie under sinks — the tilt path needs a longer
    # stillness (a cleaner pausing on the knees to read a label is not down); falls on wet
    # floors stay on the fast fall path.
    "cleaning": MandownProfile(tilt_deg=55.0, still_s=45.0, impact_still_s=15.0),
    # Guards on patrol: upright most of the time, assaults and falls are the risk — faster.
    "guard": MandownProfile(still_s=20.0, impact_still_s=10.0, prealarm_s=20.0),
    # Office / reception: reclining chairs tilt far back; a longer, gentler tilt path and
    # the no-motion path for a collapse at the desk (10 minutes without any movement).
    "office": MandownProfile(tilt_deg=50.0, still_s=60.0, no_motion_s=600.0),
}


def axis_vector(axis: str) -> tuple[float, float, float]:
    """Unit vector of an upright axis name (``"+z"`` → ``(0, 0, 1)``). Raises ValueError."""
    if axis not in AXES:
        raise ValueError(f"upright axis must be one of {', '.join(AXES)}, got {axis!r}")
    sign = 1.0 if axis[0] == "+" else -1.0
    i = "xyz".index(axis[1])
    return tuple(sign if k == i else 0.0 for k in range(3))  # type: ignore[return-value]


def tilt_deg_of(ax: float, ay: float, az: float, up: tuple[float, float, float]) -> float:
    """Angle in degrees between acceleration (gravity at rest, g) and the upright axis; 0 for
    a zero vector."""
    n = math.sqrt(ax * ax + ay * ay + az * az)
    if n == 0.0:
        return 0.0
    c = (ax * up[0] + ay * up[1] + az * up[2]) / n
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


@dataclass(frozen=True)
class Transition:
    """A change of the detector's state at ``t_s`` (detector time, s). ``detail``: the
    ``trigger`` (``fall``, ``tilt``, ``no_motion``) for ``prealarm``/``man_down``, the
    ``reason`` (``button``, ``stood_up``, ``paused``) for ``cancelled``, ``since_s`` for
    ``still``, ``peak_g`` for ``impact``."""

    t_s: float
    state: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"t_s": round(self.t_s, 3), "state": self.state, **self.detail}


class MandownDetector:
    """The man-down state machine (module docstring has the rules).

    Args:
        profile: thresholds.
        upright_axis: device axis that points up when the device is worn upright (``"+z"``).

    Feed samples in time order with :meth:`feed` (each returns the transitions it caused);
    call :meth:`tick` when no samples come (the pre-alarm must end on time even if the
    sensor stalls), :meth:`press` for a button press, :meth:`pause` / :meth:`resume`.
    ``state`` is the current state; ``trigger`` what caused the current pre-alarm/man-down;
    ``stillness_started`` the detector time the stillness behind it began.
    """

    def __init__(self, profile: MandownProfile | None = None, upright_axis: str = "+z") -> None:
        self.p = profile or MandownProfile()
        self.p.check()
        self.up = axis_vector(upright_axis)
        self.state: str = "upright"
        self.trigger: str | None = None
        self.stillness_started: float | None = None
        self.prealarm_until: float | None = None
        self.samples = 0
        self._last_t: float | None = None
        self._reset_block(None)
        self._tilted = False
        self._tilted_since: float | None = None
        self._still_since: float | None = None
        self._upright_moving_since: float | None = None
        self._ff_start: float | None = None
        self._ff_end: float | None = None
        self._impact_at: float | None = None
        self._paused = False
        self._not_before = -math.inf  # stillness counts only from blocks starting after this

    # -- inputs ---------------------------------------------------------------------------

    def feed(self, t: float, ax: float, ay: float, az: float) -> list[Transition]:
        """One sample at detector time ``t`` (s), acceleration in g. Samples older than the
        last one are ignored. Returns the transitions (usually none)."""
        out: list[Transition] = []
        last = self._last_t
        if last is not None and t <= last:
            return out
        self._last_t = t
        self.samples += 1
        if last is not None and t - last > MAX_GAP_S:
            # Unknown what happened in the hole: stillness starts over (no alarm from a gap).
            self._reset_block(t)
            self._ff_start = None
            self._still_since = None
            self._not_before = t
        if self._paused:
            return out
        mag = math.sqrt(ax * ax + ay * ay + az * az)
        p = self.p
        # --- free fall, then impact (per sample: these last tenths of a second) ---
        if mag < p.freefall_g:
            if self._ff_start is None:
                self._ff_start = t
        elif self._ff_start is not None:
            if t - self._ff_start >= p.freefall_s:
                self._ff_end = t
            self._ff_start = None
        if (mag > p.impact_g and self._ff_end is not None and t - self._ff_end <= p.impact_window_s
                and self.state not in ("prealarm", "man_down")):
            self._ff_end = None
            self._impact_at = t
            self._still_since = None
            out += self._set("impact", t, force=True, peak_g=round(mag, 2))
        # --- blocks ---
        if self._block_start is None:
            self._block_start = t
        self._n += 1
        for i, v in enumerate((ax, ay, az)):
            self._sum[i] += v
            self._sq[i] += v * v
        if t - self._block_start >= BLOCK_S - 1e-9:
            out += self._block(t)
        out += self.tick(t)
        return out

    def tick(self, t: float) -> list[Transition]:
        """Let time pass to ``t`` without a sample: ends a pre-alarm that is due."""
        if self.state == "prealarm" and self.prealarm_until is not None and t >= self.prealarm_until:
            self.prealarm_until = None
            return self._set("man_down", t, trigger=self.trigger)
        return []

    def press(self, t: float) -> list[Transition]:
        """The worker pressed the button at ``t``: cancels a running pre-alarm."""
        if self.state == "prealarm":
            return self._cancel(t, "button")
        return []

    def pause(self, t: float, reason: str) -> list[Transition]:
        """Pause detection (off shift, on charger, worker gesture): a running pre-alarm is
        cancelled; a raised ``man_down`` stays raised (it is on its way)."""
        out: list[Transition] = []
        if self._paused:
            return out
        if self.state == "prealarm":
            out += self._cancel(t, "paused")
        self._paused = True
        self._clear_motion(t)
        out += self._set("paused", t, reason=reason)
        return out

    def resume(self, t: float) -> list[Transition]:
        """Detection on again from ``t``; orientation is taken afresh from the next block."""
        if not self._paused:
            return []
        self._paused = False
        self._clear_motion(t)
        return self._set("upright", t)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def active(self) -> bool:
        """Whether the detector needs a steady stream of samples: anything but upright (a
        watcher may let the sensor's interrupts guard an upright wearer)."""
        return not self._paused and (self.state != "upright" or self._impact_at is not None
                                     or self.p.no_motion_s > 0)

    # -- internals ------------------------------------------------------------------------

    def _reset_block(self, t: float | None) -> None:
        self._block_start = t
        self._n = 0
        self._sum = [0.0, 0.0, 0.0]
        self._sq = [0.0, 0.0, 0.0]

    def _clear_motion(self, t: float) -> None:
        self._reset_block(None)
        self._still_since = None
        self._upright_moving_since = None
        self._impact_at = None
        self._ff_start = self._ff_end = None
        self._tilted, self._tilted_since = False, None
        self.trigger = None
        self.stillness_started = None

    def _block(self, t: float) -> list[Transition]:
        p, n = self.p, self._n
        start = self._block_start if self._block_start is not None else t
        mean = [s / n for s in self._sum]
        motion = max(math.sqrt(max(0.0, q / n - m * m)) for q, m in zip(self._sq, mean))
        self._reset_block(None)
        tilt = tilt_deg_of(mean[0], mean[1], mean[2], self.up)
        limit = p.tilt_deg - TILT_HYSTERESIS_DEG if self._tilted else p.tilt_deg
        if (tilt > limit) != self._tilted:
            self._tilted = not self._tilted
            self._tilted_since = start if self._tilted else None
        moving = motion > p.still_g
        if moving:
            self._still_since = None
        elif self._still_since is None and start >= self._not_before:
            self._still_since = start
        if moving and not self._tilted:
            if self._upright_moving_since is None:
                self._upright_moving_since = start
        else:
            self._upright_moving_since = None
        stood_up = (self._upright_moving_since is not None
                    and t - self._upright_moving_since >= p.cancel_move_s - 1e-9)
        out: list[Transition] = []
        if self.state == "prealarm":
            if stood_up:
                out += self._cancel(t, "stood_up")
            return out
        if self.state == "man_down":
            if stood_up:
                self._clear_motion(t)
                self._tilted = False
                out += self._set("upright", t, recovered=True)
            return out
        if self._impact_at is not None and (stood_up or t - self._impact_at > IMPACT_ARMED_S):
            self._impact_at = None
        # --- into the pre-alarm? ---
        still_for = (t - self._still_since) if self._still_since is not None else 0.0
        tilt_since = max(self._still_since, self._tilted_since) if (
            self._still_since is not None and self._tilted_since is not None) else None
        if (self._impact_at is not None and self._tilted and self._still_since is not None
                and self._still_since >= self._impact_at and still_for >= p.impact_still_s - 1e-9):
            return self._prealarm(t, "fall", self._still_since)
        if self._tilted and tilt_since is not None and t - tilt_since >= p.still_s - 1e-9:
            return self._prealarm(t, "tilt", tilt_since)
        if p.no_motion_s and self._still_since is not None and still_for >= p.no_motion_s - 1e-9:
            return self._prealarm(t, "no_motion", self._still_since)
        # --- what to show ---
        if self._impact_at is not None and (self._still_since is None or still_for < STILL_REPORT_S):
            shown = "impact"
        elif (self._still_since is not None and still_for >= STILL_REPORT_S - 1e-9
              and (self._tilted or self._impact_at is not None or p.no_motion_s)):
            shown = "still"
        else:
            shown = "tilted" if self._tilted else "upright"
        if shown == "still":
            return self._set("still", t, since_s=round(self._still_since, 3))
        return self._set(shown, t)

    def _prealarm(self, t: float, trigger: str, still_since: float) -> list[Transition]:
        self.trigger = trigger
        self.stillness_started = still_since
        self.prealarm_until = t + self.p.prealarm_s
        self._impact_at = None
        return self._set("prealarm", t, trigger=trigger, until_s=round(self.prealarm_until, 3))

    def _cancel(self, t: float, reason: str) -> list[Transition]:
        self.prealarm_until = None
        trigger = self.trigger
        self._still_since = None  # stillness must start over before the next pre-alarm
        self._not_before = t
        self._upright_moving_since = None
        self._impact_at = None
        self.trigger = None
        out = self._set("cancelled", t, reason=reason, trigger=trigger)
        if reason != "paused":
            out += self._set("tilted" if self._tilted else "upright", t)
        return out

    def _set(self, state: str, t: float, *, force: bool = False, **detail: Any) -> list[Transition]:
        if state == self.state and not force:
            return []
        self.state = state
        return [Transition(t, state, {k: v for k, v in detail.items() if v is not None})]


def with_overrides(profile: MandownProfile, **overrides: float) -> MandownProfile:
    """``profile`` with some thresholds replaced (config keys next to ``profile = …``)."""
    return replace(profile, **overrides)


def replay(detector: MandownDetector, samples) -> list[Transition]:
    """Run ``samples`` (objects with ``t_s, ax, ay, az`` and optionally ``button``, e.g.
    :class:`device.accel_trace.TraceSample`) through ``detector`` as fast as it goes; a
    rising ``button`` is a press. Then a final :meth:`MandownDetector.tick` at the last
    sample. Returns every transition in order (``lonewatch mandown replay``, tests, bench)."""
    out: list[Transition] = []
    pressed = False
    t = None
    feed = detector.feed
    for s in samples:
        t = s.t_s
        out += feed(t, s.ax, s.ay, s.az)
        b = getattr(s, "button", False)
        if b and not pressed:
            out += detector.press(t)
        pressed = b
    if t is not None:
        out += detector.tick(t)
    return out

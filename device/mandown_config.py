"""``[mandown]`` of ``device.toml`` (issue 10): sensor, wiring, pauses and the thresholds of
the named profile an installer picks per worker.

::

    [mandown]
    enabled = true
    sensor = "lis3dh"          # or "sim" (demo/tests: replays sim_trace)
    profile = "cleaning"       # default | cleaning | guard | office | one of [[mandown.profiles]]
    still_s = 40               # any threshold set here overrides the profile's value
    upright_axis = "+z"        # the device axis pointing up when worn (hardware/README.md)
    data_pin = 5               # LIS3DH INT1 (FIFO watermark)
    wake_pin = 6               # LIS3DH INT2 (tilt / free fall)
    charge_pin = 0             # charger "charging" signal, 0 = not wired
    pause_presses = 4          # short presses that pause man-down (again: resume)
    pause_max_s = 900          # a pause ends by itself after this

    [[mandown.profiles]]       # an installer's own profile
    name = "warehouse"
    tilt_deg = 50
    still_s = 25

Thresholds (:class:`device.mandown.MandownProfile`): ``tilt_deg``, ``still_s``, ``still_g``,
``freefall_g``, ``freefall_s``, ``impact_g``, ``impact_window_s``, ``impact_still_s``,
``no_motion_s`` (0 = off), ``prealarm_s``, ``cancel_move_s``. Every problem is reported with
file:line through :mod:`protocol.configfile`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from protocol.configfile import TableReader

from .mandown import AXES, PROFILES, MandownProfile

__all__ = ["LIS3DH_ADDRESSES", "RANGES", "SENSORS", "MandownConfig", "NamedProfile", "read_mandown"]

SENSORS = ("lis3dh", "sim")
LIS3DH_ADDRESSES = (0x18, 0x19)
RATES = (25, 50, 100)
#: Allowed range of each threshold key (min, max).
RANGES: dict[str, tuple[float, float]] = {
    "tilt_deg": (20.0, 85.0), "still_s": (5.0, 600.0), "still_g": (0.005, 0.3),
    "freefall_g": (0.1, 0.9), "freefall_s": (0.04, 1.0), "impact_g": (1.5, 8.0),
    "impact_window_s": (0.1, 3.0), "impact_still_s": (3.0, 300.0), "no_motion_s": (0.0, 7200.0),
    "prealarm_s": (5.0, 120.0), "cancel_move_s": (0.5, 10.0),
}
THRESHOLDS = tuple(RANGES)


@dataclass(frozen=True)
class NamedProfile(MandownProfile):
    """An installer's own profile (``[[mandown.profiles]]``): thresholds plus ``name``."""

    name: str = ""

    def thresholds(self) -> MandownProfile:
        return MandownProfile(**{k: getattr(self, k) for k in THRESHOLDS})


@dataclass(frozen=True)
class MandownConfig:
    """``[mandown]`` (module docstring). The threshold fields hold the *effective* values:
    the profile's, overridden by keys set in ``[mandown]``; :meth:`thresholds` gives them to
    the detector, :meth:`named` any profile by name (``lonewatch mandown replay --profile``).

    ``enabled`` off by default (the sensor is an optional part); ``only_on_shift``: paused
    while the worker is off shift; ``idle_check_s``: in watch mode the daemon reads one sample
    this often (catches a device turned upside down, which the tilt interrupt cannot see).
    ``sim_*``: the simulated sensor (``sensor = "sim"``) replays ``sim_trace`` at ``sim_speed``.
    """

    enabled: bool = False
    sensor: str = "lis3dh"
    i2c_bus: int = 1
    i2c_address: int = 0x18
    rate_hz: int = 50
    data_pin: int = 5
    wake_pin: int = 6
    charge_pin: int = 0
    charge_active_high: bool = True
    upright_axis: str = "+z"
    profile: str = "default"
    only_on_shift: bool = True
    pause_presses: int = 4
    pause_window_s: float = 3.0
    pause_max_s: float = 900.0
    idle_check_s: float = 10.0
    sim_trace: str = ""
    sim_speed: float = 1.0
    sim_loop: bool = False
    tilt_deg: float = MandownProfile.tilt_deg
    still_s: float = MandownProfile.still_s
    still_g: float = MandownProfile.still_g
    freefall_g: float = MandownProfile.freefall_g
    freefall_s: float = MandownProfile.freefall_s
    impact_g: float = MandownProfile.impact_g
    impact_window_s: float = MandownProfile.impact_window_s
    impact_still_s: float = MandownProfile.impact_still_s
    no_motion_s: float = MandownProfile.no_motion_s
    prealarm_s: float = MandownProfile.prealarm_s
    cancel_move_s: float = MandownProfile.cancel_move_s
    profiles: tuple[NamedProfile, ...] = ()

    def thresholds(self) -> MandownProfile:
        """The effective thresholds for :class:`device.mandown.MandownDetector`."""
        return MandownProfile(**{k: getattr(self, k) for k in THRESHOLDS})

    def profile_names(self) -> list[str]:
        return list(PROFILES) + [p.name for p in self.profiles]

    def named(self, name: str) -> MandownProfile:
        """Profile ``name`` as defined (built-in or ``[[mandown.profiles]]``), without the
        overrides of ``[mandown]``. Raises KeyError for an unknown name."""
        for p in self.profiles:
            if p.name == name:
                return p.thresholds()
        return PROFILES[name]


def _read_thresholds(t: TableReader, base: MandownProfile) -> dict[str, float]:
    out = {}
    for key in THRESHOLDS:
        lo, hi = RANGES[key]
        out[key] = t.number(key, getattr(base, key), min=lo, max=hi)
    return out


def _consistency(t: TableReader, values: dict[str, float]) -> None:
    try:
        MandownProfile(**values).check()
    except ValueError as exc:
        key = str(exc).split(" ", 1)[0]
        t.problem(key if key in values else None, str(exc))


def read_mandown(t: TableReader, used_pins: dict[int, str], other_presses: dict[str, int]) -> MandownConfig:
    """Read ``[mandown]`` through ``t`` (problems recorded on its checker, reported with
    file:line by :meth:`protocol.configfile.ConfigChecker.finish`).

    Args:
        used_pins: BCM pin → ``"gpio.button_pin"`` … already taken (man-down pins must differ).
        other_presses: ``{"timing.cancel_presses": 3, …}``: the pause gesture must differ.
    """
    d = MandownConfig
    custom: list[NamedProfile] = []
    for r in t.tables("profiles"):
        name = r.string("name", pattern=r"[a-z][a-z0-9_-]{0,31}",
                        describe="a profile name of 1-32 characters a-z, 0-9, _ or - (starting with a letter)")
        if name in PROFILES or any(p.name == name for p in custom):
            r.problem("name", f"profile {name!r} is defined already")
            continue
        values = _read_thresholds(r, MandownProfile())
        _consistency(r, values)
        custom.append(NamedProfile(**values, name=name))
    names = list(PROFILES) + [p.name for p in custom]
    profile = t.string("profile", d.profile, choices=names)
    base = next((p.thresholds() for p in custom if p.name == profile), PROFILES.get(profile, MandownProfile()))
    values = _read_thresholds(t, base)
    _consistency(t, values)
    cfg = MandownConfig(
        enabled=t.boolean("enabled", d.enabled),
        sensor=t.string("sensor", d.sensor, choices=SENSORS),
        i2c_bus=t.integer("i2c_bus", d.i2c_bus, min=0, max=255),
        i2c_address=t.integer("i2c_address", d.i2c_address, choices=LIS3DH_ADDRESSES),
        rate_hz=t.integer("rate_hz", d.rate_hz, choices=RATES),
        data_pin=t.integer("data_pin", d.data_pin, min=1, max=27),
        wake_pin=t.integer("wake_pin", d.wake_pin, min=1, max=27),
        charge_pin=t.integer("charge_pin", d.charge_pin, min=0, max=27),
        charge_active_high=t.boolean("charge_active_high", d.charge_active_high),
        upright_axis=t.string("upright_axis", d.upright_axis, choices=AXES),
        profile=profile,
        only_on_shift=t.boolean("only_on_shift", d.only_on_shift),
        pause_presses=t.integer("pause_presses", d.pause_presses, min=2, max=10),
        pause_window_s=t.number("pause_window_s", d.pause_window_s, min=0.5, max=10),
        pause_max_s=t.number("pause_max_s", d.pause_max_s, min=10, max=4 * 3600),
        idle_check_s=t.number("idle_check_s", d.idle_check_s, min=1, max=120),
        sim_trace=t.string("sim_trace", d.sim_trace),
        sim_speed=t.number("sim_speed", d.sim_speed, min=0.1, max=1000),
        sim_loop=t.boolean("sim_loop", d.sim_loop),
        profiles=tuple(custom),
        **values,
    )
    if cfg.enabled and cfg.sensor == "sim" and not cfg.sim_trace:
        t.problem("sim_trace", "sensor = \"sim\" needs sim_trace (a trace CSV to replay)")
    if cfg.enabled:
        taken = dict(used_pins)
        for key in ("data_pin", "wake_pin", "charge_pin"):
            pin = getattr(cfg, key)
            if not isinstance(pin, int) or pin == 0:
                continue
            if pin in taken:
                t.problem(key, f"pin {pin} is already used by {taken[pin]}")
            else:
                taken[pin] = f"mandown.{key}"
        for name, n in other_presses.items():
            if n == cfg.pause_presses:
                t.problem("pause_presses", f"must differ from {name} (both {n}): the gestures would be ambiguous")
    return cfg


def replace_thresholds(cfg: MandownConfig, profile: MandownProfile) -> MandownConfig:
    """``cfg`` with the thresholds of ``profile`` (tests and the replay tool)."""
    return replace(cfg, **{k: getattr(profile, k) for k in THRESHOLDS})


def as_dict(cfg: MandownConfig) -> dict[str, Any]:
    """Plain dict of the scalar keys (for logs and ``--json``)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "profiles"}

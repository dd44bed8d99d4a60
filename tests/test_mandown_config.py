"""``[mandown]`` of device.toml (issue 10): profiles, overrides, an installer's own profiles,
and every mistake reported with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.config import load_device_config, render_device_toml
from device.mandown import PROFILES, MandownProfile
from protocol.configfile import ConfigError

HEAD = '[device]\nid = "lw-0001"\n\n'


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


def errors(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_device_config(write(tmp_path, body))
    return str(info.value).splitlines()


def test_off_by_default_with_the_issue_defaults(tmp_path: Path) -> None:
    cfg = load_device_config(write(tmp_path, "")).mandown
    assert not cfg.enabled and cfg.profile == "default" and cfg.upright_axis == "+z"
    t = cfg.thresholds()
    assert (t.tilt_deg, t.still_s, t.prealarm_s, t.no_motion_s) == (45.0, 30.0, 30.0, 0.0)
    assert (cfg.pause_presses, cfg.pause_max_s, cfg.only_on_shift) == (4, 900.0, True)


def test_a_profile_then_overrides(tmp_path: Path) -> None:
    cfg = load_device_config(write(tmp_path, '[mandown]\nenabled = true\nprofile = "cleaning"\nprealarm_s = 40\n')).mandown
    assert cfg.thresholds() == MandownProfile(**{**PROFILES["cleaning"].as_dict(), "prealarm_s": 40.0})
    assert cfg.named("cleaning") == PROFILES["cleaning"]  # --profile: as the profile defines it


def test_an_installers_own_profile(tmp_path: Path) -> None:
    cfg = load_device_config(write(tmp_path, '[mandown]\nprofile = "warehouse"\n\n[[mandown.profiles]]\n'
                                   'name = "warehouse"\ntilt_deg = 50\nstill_s = 25\n')).mandown
    assert cfg.thresholds().tilt_deg == 50.0 and cfg.thresholds().still_s == 25.0
    assert cfg.named("warehouse") == cfg.thresholds()
    assert cfg.profile_names() == ["default", "cleaning", "guard", "office", "warehouse"]


def test_render_round_trips_with_profiles(tmp_path: Path) -> None:
    path = write(tmp_path, '[mandown]\nenabled = true\nprofile = "guard"\nstill_s = 22\n\n'
                 '[[mandown.profiles]]\nname = "night"\nprealarm_s = 20\n')
    cfg = load_device_config(path)
    again = tmp_path / "again.toml"
    again.write_text(render_device_toml(cfg), encoding="utf-8")
    assert load_device_config(again) == cfg


@pytest.mark.parametrize("body,line,needle", [
    ('[mandown]\nprofile = "cleanin"\n', 5, 'mandown.profile: must be one of "default", "cleaning", "guard", "office", got "cleanin"; did you mean "cleaning"?'),
    ('[mandown]\ntilt_deg = 95\n', 5, "mandown.tilt_deg: must be a number 20..85, got 95"),
    ('[mandown]\nstill_s = "30"\n', 5, 'mandown.still_s: must be a number 5..600, got "30"'),
    ('[mandown]\nno_motion_s = 10\n', 5, "mandown.no_motion_s: no_motion_s must be 0 (off) or at least still_s"),
    ('[mandown]\nstill_s = 120\nno_motion_s = 60\n', 6, "no_motion_s must be 0 (off) or at least still_s"),
    ('[mandown]\nupright_axis = "z"\n', 5, 'mandown.upright_axis: must be one of "+x", "-x", "+y", "-y", "+z", "-z"'),
    ('[mandown]\nenabled = true\nwake_pin = 17\n', 6, "mandown.wake_pin: pin 17 is already used by gpio.button_pin"),
    ('[mandown]\nenabled = true\ncharge_pin = 5\n', 6, "mandown.charge_pin: pin 5 is already used by mandown.data_pin"),
    ('[mandown]\nenabled = true\npause_presses = 3\n', 6, "mandown.pause_presses: must differ from timing.cancel_presses (both 3)"),
    ('[mandown]\nenabled = true\nsensor = "sim"\n', 4, 'mandown.sim_trace: sensor = "sim" needs sim_trace'),
    ('[mandown]\ni2c_address = 0x20\n', 5, "mandown.i2c_address: must be one of 24, 25, got 32"),
    ('[mandown]\nstill_sec = 30\n', 5, 'mandown.still_sec: unknown key; did you mean "still_s"?'),
    ('[mandown]\n\n[[mandown.profiles]]\nname = "guard"\n', 7, "mandown.profiles[0].name: profile 'guard' is defined already"),
    ('[mandown]\n\n[[mandown.profiles]]\nname = "Bad Name"\n', 7, "mandown.profiles[0].name: must be a profile name"),
])
def test_mistakes_are_reported_with_file_and_line(tmp_path: Path, body: str, line: int, needle: str | None) -> None:
    lines = errors(tmp_path, body)
    assert any(f"device.toml:{line}: " in e for e in lines), lines
    if needle:
        assert any(needle in e for e in lines), lines


def test_every_mistake_at_once(tmp_path: Path) -> None:
    lines = errors(tmp_path, '[mandown]\ntilt_deg = 5\nprealarm_s = 0\nprofile = "nope"\n')
    assert len(lines) == 3 and [e.split(":")[1] for e in lines] == ["5", "6", "7"]

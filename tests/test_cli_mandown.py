"""``lonewatch mandown replay|record`` (issue 10 "Replay tool") on the trace corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from device.accel_trace import load_trace, write_trace
from device.mandown import STATES
from tests import traces


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    out = {}
    for name, fn in {**traces.FALLS, **traces.DAILY}.items():
        out[name] = d / f"{name}.csv"
        write_trace(out[name], fn(1).samples)
    out["fall_then_cancel"] = d / "fall_then_cancel.csv"
    write_trace(out["fall_then_cancel"], traces.fall_then_cancel(1).samples, button=True)
    return out


@pytest.mark.parametrize("name", sorted(traces.FALLS) + sorted(traces.DAILY) + ["fall_then_cancel"])
def test_replay_json_over_the_corpus(corpus: dict[str, Path], name: str) -> None:
    res = run("mandown", "replay", str(corpus[name]), "--json")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert all(set(x) >= {"t_s", "state"} and x["state"] in STATES for x in lines)
    assert [x["t_s"] for x in lines] == sorted(x["t_s"] for x in lines)
    ends_down = any(x["state"] == "man_down" for x in lines)
    assert ends_down == (name in traces.FALLS or name in traces.ENDS_IN_MAN_DOWN_BY_DESIGN)
    if name == "fall_then_cancel":
        assert {"state": "cancelled", "reason": "button"}.items() <= next(x for x in lines if x["state"] == "cancelled").items()


def test_replay_human_output_and_profile(corpus: dict[str, Path]) -> None:
    res = run("mandown", "replay", str(corpus["fall_forward"]), "--profile", "guard")
    assert res.exit_code == 0
    rows = res.stdout.splitlines()
    assert rows[0].split() == ["t_s", "state"] and "man_down" in rows[-1] and "trigger=fall" in rows[-1]
    assert "profile guard, final state man_down" in res.stderr


def test_replay_with_a_config_and_its_own_profile(corpus: dict[str, Path], tmp_path: Path) -> None:
    cfg = tmp_path / "device.toml"
    cfg.write_text('[device]\nid = "lw-0001"\n\n[mandown]\nprealarm_s = 60\n\n'
                   '[[mandown.profiles]]\nname = "quick"\nprealarm_s = 5\n')
    slow = [json.loads(x) for x in run("mandown", "replay", str(corpus["fall_forward"]), "-c", str(cfg), "--json").stdout.splitlines()]
    quick = [json.loads(x) for x in run("mandown", "replay", str(corpus["fall_forward"]), "-c", str(cfg), "--profile", "quick",
                                        "--json").stdout.splitlines()]
    pre = next(x for x in slow if x["state"] == "prealarm")
    assert next(x for x in slow if x["state"] == "man_down")["t_s"] - pre["t_s"] == pytest.approx(60)
    pq = next(x for x in quick if x["state"] == "prealarm")
    assert next(x for x in quick if x["state"] == "man_down")["t_s"] - pq["t_s"] == pytest.approx(5)


def test_bad_traces_and_options_exit_2_with_file_and_line(tmp_path: Path, corpus: dict[str, Path]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,one\n")
    res = run("mandown", "replay", str(bad))
    assert res.exit_code == 2 and f"{bad}:3: az_g: not a number: 'one'" in res.stderr
    bad.write_text("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,1\n1e20,0,0,1\n1e20,0,0,1\n")
    res = run("mandown", "replay", str(bad))
    assert res.exit_code == 2 and f"{bad}:4: t_s jumps by 1e+20 s" in res.stderr
    bad.write_text("t_s,ax_g,ay_g,az_g\n0,0,0,1\n0.02,0,0,1\n0.04,0,0,1\n0.03,0,0,1\n")
    res = run("mandown", "replay", str(bad))
    assert res.exit_code == 2 and f"{bad}:5: t_s must increase: 0.03 after 0.04" in res.stderr
    res = run("mandown", "replay", str(corpus["walking"]), "--profile", "night")
    assert res.exit_code == 2 and "unknown profile 'night'" in res.output
    cfg = tmp_path / "device.toml"
    cfg.write_text('[device]\nid = "lw-0001"\n\n[mandown]\ntilt_deg = 100\n')
    res = run("mandown", "replay", str(corpus["walking"]), "-c", str(cfg))
    assert res.exit_code == 2 and f"{cfg}:5: mandown.tilt_deg: must be a number 20..85, got 100" in res.stderr


def test_record_from_the_configured_sensor(tmp_path: Path, corpus: dict[str, Path]) -> None:
    cfg = tmp_path / "device.toml"
    cfg.write_text(f'[device]\nid = "lw-0001"\n\n[mandown]\nsensor = "sim"\nsim_trace = "{corpus["fall_forward"]}"\n'
                   'sim_speed = 10.0\n')
    out = tmp_path / "rec.csv"
    res = run("mandown", "record", str(out), "--seconds", "12", "-c", str(cfg))
    assert res.exit_code == 0, res.output
    rec = load_trace(out)
    assert rec.rate_hz == pytest.approx(50, abs=1) and 11.0 <= rec.duration_s <= 12.0
    again = run("mandown", "replay", str(out), "--json")
    assert any(json.loads(x)["state"] == "impact" for x in again.stdout.splitlines())  # the fall is in it


def test_record_without_a_sensor_exits_3(tmp_path: Path) -> None:
    cfg = tmp_path / "device.toml"
    cfg.write_text('[device]\nid = "lw-0001"\n\n[mandown]\ni2c_bus = 250\n')
    res = run("mandown", "record", str(tmp_path / "x.csv"), "--seconds", "5", "-c", str(cfg))
    assert res.exit_code == 3 and "error:" in res.stderr

"""Coverage survey (issue 12): ``lonewatch survey run --simulate`` walks a simulated site on
real parts (Mosquitto, the modem simulator on a pty, simulated beacons) and records JSON
lines; ``lonewatch survey report`` turns the walk into HTML + PNG with the places where an
alarm would depend on SMS or fail; damaged, cut-off and empty recordings give warnings."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from installer.survey_report import load_survey, write_report
from labstack.survey_sim import CORRIDOR_BEACON, LAUNDRY_BEACON, WALK

PLACES = f"""[[places]]
beacon = "{LAUNDRY_BEACON}"
site = "Vaskeriet"
building = "Main building"
floor = "Basement"
room = "Laundry"

[[places]]
beacon = "{CORRIDOR_BEACON}"
site = "Vaskeriet"
floor = "Basement"
room = "Corridor"
"""


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("survey") / "walk.jsonl"
    result = CliRunner().invoke(main, ["survey", "run", "--simulate", "-o", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path


def test_simulated_walk_records_every_field(walk: Path) -> None:
    rows = [json.loads(line) for line in walk.read_text().splitlines()]
    assert len(rows) == 4 * len(WALK)
    assert [r["i"] for r in rows] == list(range(len(rows)))
    first, laundry, boiler, cold = rows[0], rows[12], rows[16], rows[20]
    assert first["place"] == "Entrance" and first["place_source"] == "typed" and first["gnss_fix"] is True
    assert first["dbm"] == -69 and first["registration"] == "home" and first["mqtt_rtt_ms"] is not None
    assert laundry["place"] == LAUNDRY_BEACON and laundry["place_source"] == "beacon"
    assert laundry["beacon"] == LAUNDRY_BEACON and laundry["dbm"] == -103 and laundry["gnss_fix"] is False
    assert boiler["mqtt_rtt_ms"] is None and boiler["sms_ready"] is True and boiler["dbm"] == -109
    assert cold["mqtt_rtt_ms"] is None and cold["sms_ready"] is False and cold["registration"] == "searching"
    assert cold["dbm"] is None


def test_report_names_the_risky_places_and_plots(walk: Path, tmp_path: Path) -> None:
    places = tmp_path / "places.toml"
    places.write_text(PLACES)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["survey", "report", str(walk), "-o", str(out), "--places", str(places),
                                       "--strict"], catch_exceptions=False)
    assert result.exit_code == 1  # --strict: an alarm would fail in the cold store
    assert "FAIL: Cold store" in result.output and "SMS only: Boiler room" in result.output
    html = out.read_text()
    assert "Main building / Basement / Laundry" in html and "Basement / Corridor" in html
    risky = html.split("<h2>Places where an alarm would depend on the SMS fallback or fail</h2>")[1].split("</ul>")[0]
    assert "Cold store" in risky and "Boiler room" in risky and "Laundry" not in risky
    assert "data:image/png;base64," in html
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1100, 700)
    survey = load_survey(walk)
    by_place = {p.place: p for p in survey.places()}
    assert by_place["Boiler room"].verdict == "sms" and by_place["Boiler room"].weak
    assert by_place["Cold store"].verdict == "fail" and by_place["Cold store"].worst_dbm is None
    assert by_place["Entrance"].verdict == "ok" and by_place["Entrance"].samples == 8
    assert by_place[LAUNDRY_BEACON].beacons == sorted([LAUNDRY_BEACON, CORRIDOR_BEACON])


def test_damaged_and_cut_off_recordings_load_with_warnings(walk: Path, tmp_path: Path) -> None:
    lines = walk.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], "garbage{", '{"v": 1, "i": 2}', '{"v": 2, "t": 1}', "[1, 2]",
                              '{"v": 1, "t": 1800000000, "dbm": 5}', lines[1]]) + "\n" + lines[2][:40])
    result = CliRunner().invoke(main, ["survey", "report", str(bad), "-o", str(tmp_path / "r.html")],
                                catch_exceptions=False)
    assert result.exit_code == 0
    for warning in ("line 2: not JSON", "line 3: field t missing", "line 4: unknown survey version 2",
                    "line 5: not a JSON object", "line 6: 5 outside -140..0", "line 8: the last line is cut off"):
        assert warning in result.output
    assert len(load_survey(bad).samples) == 2


def test_empty_recording_gives_a_report_that_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    survey = load_survey(empty)
    assert survey.samples == [] and survey.warnings == ["no usable samples in the recording"]
    png = write_report(survey, tmp_path / "empty.html")
    assert "No usable samples" in (tmp_path / "empty.html").read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_simulated_walk_honours_every_and_duration(tmp_path: Path) -> None:
    path = tmp_path / "short.jsonl"
    result = CliRunner().invoke(main, ["survey", "run", "--simulate", "-o", str(path), "--every", "2",
                                       "--duration", "3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "notice:" not in result.output
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert 2 <= len(rows) < 4 * len(WALK)  # --duration ended the walk early
    gaps = [b["t"] - a["t"] for a, b in zip(rows, rows[1:])]
    assert all(g >= 1.9 for g in gaps), gaps  # --every 2 honoured (it was capped at 0.5 s)


def test_simulated_walk_says_its_length_is_fixed(tmp_path: Path) -> None:
    assert "fixed length" in CliRunner().invoke(main, ["survey", "run", "--help"]).output
    path = tmp_path / "long.jsonl"
    result = CliRunner().invoke(main, ["survey", "run", "--simulate", "-o", str(path), "--every", "0.2",
                                       "--duration", "600"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "notice: the simulated walk has a fixed length of 28 samples" in result.output
    assert len(path.read_text().splitlines()) == 4 * len(WALK)


def test_report_warnings_name_the_file_and_reject_bad_values(walk: Path, tmp_path: Path) -> None:
    good = walk.read_text().splitlines()[0]
    row = json.loads(good)
    bad = tmp_path / "odd.jsonl"
    bad.write_bytes(b"\n".join([good.encode(), json.dumps({**row, "lat": 999}).encode(),
                                json.dumps({**row, "sms_ready": "yes"}).encode(),
                                json.dumps({**row, "gnss_fix": 1}).encode(),
                                b"\x00\xff\xfe\x89PNG\x1a garbage", good.encode(), b"\x00\x01\xff\xd8"]))
    result = CliRunner().invoke(main, ["survey", "report", str(bad), "-o", str(tmp_path / "r.html")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for warning in (f"{bad}:line 2: 999 outside -90..90", f"{bad}:line 3: sms_ready must be true or false",
                    f"{bad}:line 4: gnss_fix must be true or false", f"{bad}:line 5: not a JSON line",
                    f"{bad}:line 7: not a JSON line"):
        assert warning in result.output
    assert "cut off" not in result.output
    assert [s.line for s in load_survey(bad).samples] == [1, 6]


def test_report_of_a_recording_without_usable_samples_exits_1(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xff\n" + b"[" * 100_000 + b"\n")
    result = CliRunner().invoke(main, ["survey", "report", str(junk), "-o", str(tmp_path / "r.html")],
                                catch_exceptions=False)
    assert result.exit_code == 1
    assert f"error: {junk} holds no usable sample" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()

"""Places (issue 12): the places file and ``lonewatch registry places``, the place in SIA DC-09
extended data (``O``/``L``/``R``, or in ``I`` for a receiver that takes one block) as
pysiaalarm decodes it, in the contacts' text, and in ``lonewatch status``; the whole path from
a device's beacon through a real relay (Mosquitto, Redis) to pysiaalarm; an unknown beacon."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from labstack.demo.stack import LocalArc
from labstack.servers import RedisServer, free_port
from protocol.beacons import ibeacon_id
from protocol.configfile import ConfigError
from protocol.messages import Alive, BeaconSighting, Event, encode
from protocol.sia import ContactId
from protocol.topics import topic
from relay.arc import ArcAlarm, ArcClient, MemorySequences, plan_xdata
from relay.places import Place, PlaceStore, dump_places_toml, load_places_toml, place_fields
from relay.registry import RegistryDoc, RegistryStore
from relay.status_report import collect, render_table
from relay.store import Store
from tests.relayrig import ACCOUNT, ScriptedDevice, relay_dict, running_relay
from tests.test_arc_client import PysiaReceiver, arc, pysia  # noqa: F401  (fixtures)
from tests.test_escalation import registry

UUID = "fda50693-a4e2-4fb1-afcf-c6eb07647825"
LAUNDRY = ibeacon_id(UUID, 1, 17)
CORRIDOR = ibeacon_id(UUID, 1, 18)
STRANGER = ibeacon_id(UUID, 9, 9)

PLACES = f"""# the night cleaner's site
[[places]]
beacon = "{LAUNDRY.upper().replace('IB:', 'ib:')}"
site = "Vaskeriet"
building = "Main building"
floor = "Basement"
room = "Laundry"
note = "plant room behind the boiler, door code 4711"

[[places]]
beacon = "{CORRIDOR}"
site = "Vaskeriet"
floor = "Ground floor"
room = "Corridor"
"""


@pytest.fixture
def url(redis_module: RedisServer) -> str:
    Store.from_url(redis_module.url).r.flushall()
    return redis_module.url


def places_file(tmp_path: Path, text: str = PLACES) -> Path:
    path = tmp_path / "places.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the file


def test_places_file_loads_and_round_trips(tmp_path: Path) -> None:
    places = load_places_toml(places_file(tmp_path), sites=["Vaskeriet"])
    assert [p.beacon for p in places] == [LAUNDRY, CORRIDOR]  # spelling normalised
    assert places[0].label() == "Main building / Basement / Laundry"
    again = load_places_toml(places_file(tmp_path, dump_places_toml(places)))
    assert again == places


def test_a_beacon_listed_twice_is_refused_with_its_lines(tmp_path: Path) -> None:
    text = PLACES + f'\n[[places]]\nbeacon = "{LAUNDRY}"\nsite = "Vaskeriet"\nroom = "Office"\n'
    with pytest.raises(ConfigError) as exc:
        load_places_toml(places_file(tmp_path, text))
    message = str(exc.value)
    assert "places.toml:17: places[2].beacon:" in message and "listed twice (first at line 3)" in message


@pytest.mark.parametrize("entry, expect", [
    ('beacon = "laundry"\nsite = "Vaskeriet"\nroom = "x"', "places[0].beacon: not a beacon id"),
    (f'beacon = "{LAUNDRY}"\nroom = "x"', "places[0].site: required key is missing"),
    (f'beacon = "{LAUNDRY}"\nsite = "Vaskeriet"', "needs at least one of building, floor, room"),
    (f'beacon = "{LAUNDRY}"\nsite = "Elsewhere"\nroom = "x"', "unknown site 'Elsewhere'"),
    (f'beacon = "{LAUNDRY}"\nsite = "Vaskeriet"\nroom = "{"x" * 65}"', "places[0].room:"),
    (f'beacon = "{LAUNDRY}"\nsite = "Vaskeriet"\nroom = "x"\ncolour = "red"', "places[0].colour: unknown key"),
])
def test_bad_places_are_refused_with_file_and_line(tmp_path: Path, entry: str, expect: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_places_toml(places_file(tmp_path, "[[places]]\n" + entry + "\n"), sites=["Vaskeriet"])
    assert "places.toml:" in str(exc.value) and expect in str(exc.value)


def test_a_bad_beacon_does_not_make_the_other_keys_unknown(tmp_path: Path) -> None:
    text = '[[places]]\nbeacon = "laundry"\nsite = "Vaskeriet"\nbuilding = "Main"\nfloor = "1"\nroom = "x"\nnote = "n"\n'
    with pytest.raises(ConfigError) as exc:
        load_places_toml(places_file(tmp_path, text), sites=["Vaskeriet"])
    message = str(exc.value)
    assert "places.toml:2: places[0].beacon: not a beacon id" in message
    assert "unknown key" not in message and message.count("places.toml:") == 1, message


def test_upper_case_ibeacon_id_is_accepted_and_lowered(tmp_path: Path) -> None:
    text = ('[[places]]\nbeacon = "IB:FDA50693-A4E2-4FB1-AFCF-C6EB07647825:1:17"\nsite = "Vaskeriet"\nroom = "x"\n'
            '\n[[places]]\nbeacon = "EDDY:EDD1EBEAC04E5DEFA017:0000000000A1"\nsite = "Vaskeriet"\nroom = "y"\n')
    places = load_places_toml(places_file(tmp_path, text), sites=["Vaskeriet"])
    assert [p.beacon for p in places] == ["ib:fda50693-a4e2-4fb1-afcf-c6eb07647825:1:17",
                                          "eddy:edd1ebeac04e5defa017:0000000000a1"]


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_import_list_export_and_refusal(url: str, tmp_path: Path) -> None:
    RegistryStore(Store.from_url(url)).save(RegistryDoc.from_dict(registry()), replace=True)
    result = run("registry", "places", "import", str(places_file(tmp_path)), "--redis", url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"imported": 2, "places": 2}
    listed = json.loads(run("registry", "places", "list", "--json", "--redis", url).output)
    assert [p["room"] for p in listed] == ["Corridor", "Laundry"]  # by site, building, floor, room
    text = run("registry", "places", "list", "--redis", url).output
    assert f"{LAUNDRY}  Vaskeriet: Main building / Basement / Laundry  (plant room" in text
    out = tmp_path / "export.toml"
    assert run("registry", "places", "export", "-o", str(out), "--redis", url).exit_code == 0
    assert load_places_toml(out) == PlaceStore(Store.from_url(url)).load()
    bad = places_file(tmp_path, PLACES + f'\n[[places]]\nbeacon = "{CORRIDOR}"\nsite = "Vaskeriet"\nroom = "Office"\n')
    result = CliRunner().invoke(main, ["registry", "places", "import", str(bad), "--redis", url])
    assert result.exit_code == 2 and "listed twice (first at line 11)" in result.output
    assert len(PlaceStore(Store.from_url(url)).load()) == 2  # nothing changed
    result = CliRunner().invoke(main, ["registry", "places", "list", "--redis", f"redis://127.0.0.1:{free_port()}/0"])
    assert result.exit_code == 3


# --------------------------------------------------------------------------- extended data


PLACE = ("Main building", "Basement", "Laundry")


@pytest.mark.parametrize("limit, expect", [
    (None, ["X012E34.5678", "Y55N40.1142", "OMain building", "LBasement", "RLaundry", "IAnna Hansen, Vaskeriet"]),
    (5, ["X012E34.5678", "Y55N40.1142", "OMain building", "LBasement", "RLaundry"]),
    (4, ["X012E34.5678", "Y55N40.1142", "LBasement", "RLaundry"]),
    (3, ["X012E34.5678", "Y55N40.1142", "RLaundry"]),
    (1, ["I55.66857N 12.57613E +-8m Main building / Basement / Laundry, Anna Hansen, Vaskeriet"]),
    (0, []),
])
def test_place_blocks_follow_the_receivers_limit(limit: int | None, expect: list[str]) -> None:
    alarm = ArcAlarm(ACCOUNT, ContactId(1, 122, 1, 17), position=(55.66857, 12.57613, 8.0),
                     text="Anna Hansen, Vaskeriet", place=PLACE)
    assert list(plan_xdata(alarm, limit)) == expect


def test_place_without_gnss_in_one_block_and_ascii() -> None:
    alarm = ArcAlarm(ACCOUNT, ContactId(1, 122, 1, 17), text="Anna Hansen", place=("Hovedbygning", "Kælder", "Vaskeri"))
    assert plan_xdata(alarm, 1) == ("IHovedbygning / Kaelder / Vaskeri, Anna Hansen",)
    assert plan_xdata(alarm) == ("OHovedbygning", "LKaelder", "RVaskeri", "IAnna Hansen")


def test_pysiaalarm_decodes_building_floor_and_room(arc: PysiaReceiver) -> None:  # noqa: F811
    """SIA-DCS frames may carry several blocks: pysiaalarm 3.2.2 parses O, L and R (its XDATA
    table names them "Building Name", "Location", "Room")."""
    client = ArcClient([arc.receiver()], MemorySequences())
    alarm = ArcAlarm("1234", ContactId(1, 122, 1, 17), fmt="SIA-DCS", text="Anna Hansen", place=PLACE)
    result = client.send(alarm)
    assert result.reply.kind == "ACK" and not result.degraded
    event = arc.event()
    got = {x.identifier: (x.name, x.value) for x in event.extended_data}
    assert got == {"O": ("Building Name", "Main building"), "L": ("Location", "Basement"),
                   "R": ("Room", "Laundry"), "I": ("Alarm Text", "Anna Hansen")}


def test_pysiaalarm_adm_cid_gets_the_place_in_the_alarm_text(arc: PysiaReceiver) -> None:  # noqa: F811
    """ADM-CID in pysiaalarm takes one extended-data block: the place travels in ``I``."""
    client = ArcClient([arc.receiver(max_xdata_blocks=1)], MemorySequences())
    alarm = ArcAlarm("1234", ContactId(1, 122, 1, 17), position=(55.66857, 12.57613, 8.0), text="Anna Hansen",
                     place=PLACE)
    client.send(alarm)
    event = arc.event()
    assert [(x.identifier, x.value) for x in event.extended_data] == [
        ("I", "55.66857N 12.57613E +-8m Main building / Basement / Laundry, Anna Hansen")]


# --------------------------------------------------------------------------- through the relay


def test_beacon_on_the_alarm_reaches_the_arc_contacts_and_status(tmp_path: Path, mosquitto, redis_server,
                                                                    broker_users, wait_until) -> None:
    store = Store.from_url(redis_server.url)
    reg = registry()
    reg["sites"][0]["account"] = ACCOUNT
    RegistryStore(store).save(RegistryDoc.from_dict(reg), replace=True)
    PlaceStore(store).save(load_places_toml(places_file(tmp_path)))
    port = free_port()
    with LocalArc(ACCOUNT, port) as arc_server, \
            running_relay(relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, port)) as relay:
        dev = ScriptedDevice("lw-0001", mosquitto.port, broker_users["lw-0001"])
        try:
            shift = dev.event("shift_start", {"source": "cli"})  # where the worker is counts on shift only
            assert dev.wait_ack(shift.id, "received")
            now = time.time()
            alive = Alive("lw-0001", now, 80, -90, "home", None, 5.0, "test", 0, beacon=BeaconSighting(CORRIDOR, -70, now))
            dev.client.publish(topic("lw-0001", "alive"), encode(alive), qos=1).wait_for_publish(5)
            assert wait_until(lambda: collect(store, ["lw-0001"])[0].place == "Ground floor / Corridor")
            row = collect(store, ["lw-0001"])[0]
            assert "Ground floor / Corridor" in render_table([row])
            ev = Event("lw-0001", 2, "silent_panic", time.time(), None, {}, beacon=BeaconSighting(LAUNDRY, -61, now))
            dev.client.publish(topic("lw-0001", "event"), encode(ev), qos=1).wait_for_publish(5)
            assert wait_until(lambda: any(e["code"] == "122" for e in arc_server.events), 15)
            got = next(e for e in arc_server.events if e["code"] == "122")
            assert "Main building / Basement / Laundry" in got["xdata"]["I"]  # the event's own beacon wins
            alarm = relay.dispatcher.escalation.alarms.get(ev.id)
            assert (alarm.get("place_room"), alarm.get("place_floor"), alarm.get("place_note")) == (
                "Laundry", "Basement", "plant room behind the boiler, door code 4711")
            # an alarm with no beacon of its own takes the fresh one of the last alive
            ev2 = Event("lw-0001", 3, "panic", time.time(), None, {})
            dev.client.publish(topic("lw-0001", "event"), encode(ev2), qos=1).wait_for_publish(5)
            assert wait_until(lambda: any("Corridor" in e["xdata"].get("I", "") for e in arc_server.events), 15)
        finally:
            dev.close()


def test_unknown_beacon_sends_the_alarm_without_a_place(url: str) -> None:
    store = Store.from_url(url)
    PlaceStore(store).save([Place(LAUNDRY, "Vaskeriet", room="Laundry")])
    ev = Event("lw-0001", 1, "panic", time.time(), beacon=BeaconSighting(STRANGER, -60, time.time()))
    assert place_fields(store, ev) == {"beacon": STRANGER}
    from relay.places import with_place

    alarm = ArcAlarm(ACCOUNT, ContactId(1, 120, 1, 17), text="Anna Hansen")
    assert with_place(alarm, store, ev) == alarm  # unchanged: the alarm goes, without a place
    assert with_place(None, store, ev) is None


# --------------------------------------------------------------------------- the demo scenario


@pytest.mark.integration
def test_indoor_demo_scenario(tmp_path: Path) -> None:
    """``lonewatch demo --scenario indoor``: pysiaalarm decodes the room, the SMS names it."""
    from labstack.demo.scenarios import load_all
    from labstack.demo.stack import DemoStack
    from labstack.timeline import Timeline

    fn, _ = load_all()["indoor"]
    tl = Timeline(live=False)
    with DemoStack(tl, tmp_path) as stack:
        ok = fn(stack)
    assert ok, [e for e in tl.steps if e["step"] in ("error", "readiness", "arc_ack", "contact_sms")]
    decoded = next(e for e in tl.steps if e["step"] == "arc_decoded_place")
    assert "Main building / Basement / Laundry" in decoded["I"]
    assert next(e for e in tl.steps if e["step"] == "device_indoors")["gnss_fix"] is False
    line = next(e for e in tl.steps if e["step"] == "contact_sms_place")["line"]
    assert line == "Placering: Main building, Basement, Laundry (behind the boiler, door code 4711)"
    assert [e["ready"] for e in tl.steps if e["step"] == "readiness"] == [True]


@pytest.mark.parametrize("lang, label", [("en", "Place: "), ("da", "Placering: "), ("pl", "Miejsce w budynku: "),
                                         ("ro", "Loc în clădire: "), ("uk", "Місце в будівлі: "),
                                         ("ar", "المكان في المبنى: ")])
def test_contacts_read_the_place_in_their_language(lang: str, label: str) -> None:
    from relay.notify.templates import MessageContext, render

    ctx = MessageContext(kind="silent_panic", worker="Anna Hansen", site="Vaskeriet", building="Main building",
                         floor="-1", room="Laundry", note="door code 4711", ref=3)
    lines = render("alarm", lang, ctx).body.splitlines()
    place = next(line for line in lines if line.startswith(label))
    assert "Main building" in place and "-1" in place and "Laundry (door code 4711)" in place
    assert lines.index(place) == 3  # after the site, before the time
    notice = render("alarm", lang, MessageContext(kind="not_ready", worker="Anna Hansen", detail="battery: 12 %", ref=4))
    assert "battery: 12 %" in notice.body and "Anna Hansen" in notice.body and "4" in notice.body
    assert not any(line.startswith(label) for line in render("alarm", lang, MessageContext(kind="panic", worker="A")).body.splitlines())


def test_status_names_an_unknown_beacon(url: str) -> None:
    from relay.store import DeviceEntry

    store = Store.from_url(url)
    store.register(DeviceEntry("lw-0001", ACCOUNT, 17, "Anna Hansen", "Vaskeriet"))
    now = time.time()
    store.store_event(Event("lw-0001", 1, "shift_start", now))  # the place is kept on shift only (issue 13)
    store.update_alive(Alive("lw-0001", now, 80, -90, "home", None, 5.0, "test", 0, beacon=BeaconSighting(STRANGER, -70, now)))
    row = collect(store, ["lw-0001"])[0]
    assert row.place == f"beacon {STRANGER} (not in registry)" and row.beacon == STRANGER
    store.update_alive(Alive("lw-0001", now, 80, -90, "home", None, 6.0, "test", 0))
    assert collect(store, ["lw-0001"])[0].place == ""  # no beacon heard any more

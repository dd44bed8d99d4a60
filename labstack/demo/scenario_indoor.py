"""Demo scenario ``indoor`` (issue 12): the night cleaner in the basement laundry — no GNSS
fix down there, but a BLE beacon on the laundry wall.

The relay's registry gets the site's places (a places file, validated like ``lonewatch
registry places import``); the device restarts indoors (the modem simulator has no fix) with
simulated beacons — the laundry's strong, the corridor's weak — and starts its shift: the
self-test runs (round trip through the relay, ARC link, modem, battery, place) and plays
``ready``. Then a finger holds the button: the pysiaalarm ARC decodes the room from the
alarm (its ADM-CID parser takes one extended-data block, so the place travels in ``I``), and
the first contact's SMS, in Danish, names building, floor and room.

Exit 0 only if the ARC decoded the room and the contact's SMS named it.
"""

from __future__ import annotations

import time

from .scenario_device import fail
from .scenarios import expect_arc, scenario
from .stack import DemoStack, _deep_merge, device_dict

LAUNDRY = "ib:fda50693-a4e2-4fb1-afcf-c6eb07647825:1:17"
CORRIDOR = "ib:fda50693-a4e2-4fb1-afcf-c6eb07647825:1:18"
ROOM = "Laundry"
PLACES = f"""# the demo site's beacons (lonewatch registry places import)
[[places]]
beacon = "{LAUNDRY}"
site = "Vestergade 12, basement laundry"
building = "Main building"
floor = "Basement"
room = "{ROOM}"
note = "behind the boiler, door code 4711"

[[places]]
beacon = "{CORRIDOR}"
site = "Vestergade 12, basement laundry"
building = "Main building"
floor = "Basement"
room = "Corridor"
"""


@scenario("indoor", "basement laundry, no GNSS fix, a BLE beacon: the ARC decodes the room, the contact's SMS names it")
def indoor(stack: DemoStack) -> bool:
    from device.beacon_sim import SimulatedScanner
    from device.config import DeviceConfig
    from relay.places import PlaceStore, load_places_toml
    from relay.registry import RegistryStore

    path = stack.workdir / "places.toml"
    path.write_text(PLACES, encoding="utf-8")
    store = stack.relay.store
    sites = [s.name for s in RegistryStore(store).load().sites]
    places = load_places_toml(path, sites=sites)
    PlaceStore(store).save(places)
    stack.tl.add("places_imported", file=path.name, places=len(places), laundry=places[0].label())

    # Indoors: the GNSS has no fix; two beacons in range, the laundry's is the strong one.
    stack.device.stop()
    stack.sim.gnss_fix = None
    scanner = SimulatedScanner({LAUNDRY: -58, CORRIDOR: -84}, jitter_db=2.0)
    base = device_dict(stack.mq.port, stack.workdir / "device-state", stack.sim.port, stack.device_password)
    over = {"beacons": {"source": "bluez", "scan_s": 0.2, "interval_s": 1.0},
            "timing": {"test_mode": True},
            "readiness": {"ack_wait_s": 5, "ready_timeout_s": 20, "recheck_s": 1}}
    stack.device_config = DeviceConfig.from_dict(_deep_merge(_deep_merge(base, stack.device_overrides), over))
    stack.device = stack.start_device(beacons=scanner)
    if not stack.device.link.connected.wait(15):
        return fail(stack, "the device did not connect to the broker")
    deadline = time.monotonic() + 10
    while not stack.device.modem_state.modem_ready and time.monotonic() < deadline:
        time.sleep(0.05)
    stack.tl.add("device_indoors", gnss_fix=stack.device.modem_state.position is not None,
                 beacons_in_range=2)  # fmt: skip
    if stack.device.modem_state.position is not None:
        return fail(stack, "the device still has a GNSS fix indoors")

    stack.device.shift(True, source="demo")
    ready = stack.tl.wait_for("readiness", 25, final=True)
    if ready is None or not ready.get("ready"):
        return fail(stack, f"the shift-start self-test did not say ready: {ready}")
    if stack.tl.wait_for("beacon_place", 10, beacon=LAUNDRY) is None and \
            (stack.device.place.beacon() is None or stack.device.place.beacon().id != LAUNDRY):
        return fail(stack, "the device did not take the laundry beacon as its place")

    stack.hold(2.5)
    step = stack.tl.wait_for("arc_ack", stack.timeout_s, code="122")
    if not expect_arc(stack, step, "122"):
        return False
    text = ""
    if stack.local_arc is not None:
        decoded = next((e for e in list(stack.local_arc.events) if e.get("code") == "122"), None)
        text = (decoded or {}).get("xdata", {}).get("I", "")
        stack.tl.add("arc_decoded_place", I=text, O=(decoded or {}).get("xdata", {}).get("O"),
                     R=(decoded or {}).get("xdata", {}).get("R"))  # fmt: skip
        if f"Main building / Basement / {ROOM}" not in text:
            return fail(stack, f"the ARC did not decode the room: I={text!r}")
    else:
        stack.tl.add("arc_decoded_place", note="external receiver: see its screen", xdata=step.get("xdata"))
    deadline = time.monotonic() + stack.timeout_s
    sms = None
    while sms is None and time.monotonic() < deadline:
        sms = next((t for n, t in list(stack.contact_sms) if "ALARM" in t and ROOM in t), None)
        time.sleep(0.1)
    if sms is None:
        return fail(stack, "no contact SMS named the room")
    line = next(line for line in sms.splitlines() if ROOM in line)
    stack.tl.add("contact_sms_place", line=line)
    return True

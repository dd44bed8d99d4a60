"""Demo scenarios of issue 13: ``card`` (the worker card in the worker's language and in
Arabic) and ``data-protection`` (positions only on shift, the retention purge, export and
erase of the demo worker).

Both work on the running demo installation: the worker comes from the relay's registry in
Redis, alive messages are the demo device's own (its ``alive()`` published on its link, as its
alive loop does), and the checks read what the relay stored.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

from protocol.messages import encode
from relay.card import card_for_worker
from relay.privacy import erase_worker, export_worker
from relay.registry import RegistryStore
from relay.retention import Purger, RetentionSection

from .scenarios import scenario
from .stack import DEVICE_ID, WORKER, DemoStack


def _fail(stack: DemoStack, reason: str) -> bool:
    stack.tl.add("error", reason=reason)
    return False


@scenario("card", "the demo worker's card as PDF in Danish and Arabic: one page each, text a reader finds")
def card(stack: DemoStack) -> bool:
    doc = RegistryStore(stack.relay.store).load()
    for language, expect in (("da", "Din alarmknap"), ("ar", "الخاص بك")):
        pdf = card_for_worker(doc, WORKER, language)
        path = stack.workdir / f"card-{language}.pdf"
        path.write_bytes(pdf)
        step: dict[str, Any] = {"language": language, "path": str(path), "bytes": len(pdf)}
        if shutil.which("pdftotext") and shutil.which("pdfinfo"):
            text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
            pages = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
            step["pages"] = int(next(line.split()[-1] for line in pages.splitlines() if line.startswith("Pages:")))
            if step["pages"] != 1 or expect not in text or WORKER not in text:
                stack.tl.add("card", **step)
                return _fail(stack, f"the {language} card is not one page with its title and the worker's name")
        elif not pdf.startswith(b"%PDF-"):
            return _fail(stack, "the card is no PDF")
        stack.tl.add("card", **step)
    return True


def _alive_and_wait(stack: DemoStack) -> dict[str, str]:
    """Publish the device's current alive and wait until the relay has stored it."""
    before = stack.relay.store.state(DEVICE_ID).get("last_seen", "")
    stack.device.link.publish("alive", encode(stack.device.alive()))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = stack.relay.store.state(DEVICE_ID)
        if state.get("last_seen", "") != before:
            return state
        time.sleep(0.05)
    return {}


def _wait_shift(stack: DemoStack, on: bool) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (stack.relay.store.supervision_state(DEVICE_ID).get("on_shift") == "1") == on:
            return True
        time.sleep(0.05)
    return False


@scenario("data-protection", "positions only on shift; retention purge; export and erase of the demo worker")
def data_protection(stack: DemoStack) -> bool:
    store = stack.relay.store
    off = _alive_and_wait(stack)
    stack.tl.add("alive_off_shift", position_stored="lat" in off, battery=off.get("battery_pct"))
    if not off or "lat" in off:
        return _fail(stack, "an alive off shift left a position at the relay")
    stack.device.shift(True)
    if not _wait_shift(stack, True):
        return _fail(stack, "the relay did not see the shift start")
    on = _alive_and_wait(stack)
    stack.tl.add("alive_on_shift", position_stored="lat" in on)
    if "lat" not in on:
        return _fail(stack, "an alive on shift stored no position")
    stack.device.shift(False)
    if not _wait_shift(stack, False) or "lat" in store.state(DEVICE_ID):
        return _fail(stack, "the position stayed after the shift ended")
    stack.tl.add("shift_ended", position_stored=False)
    # The shift's readiness result goes to the relay a moment after its checks end: let it
    # (and anything else queued) arrive first, so the purge below finds every shift event.
    stack.tl.wait_for("readiness", 20, final=True)
    deadline = time.monotonic() + 10
    while stack.device.queue.depth() and time.monotonic() < deadline:
        time.sleep(0.05)

    exported = export_worker(store, WORKER)
    kinds = [e["kind"] for e in exported["event_log"]]
    stack.tl.add("export", worker=WORKER, event_log=kinds, alarms=len(exported["alarms"]))
    if "shift_start" not in kinds or "shift_end" not in kinds:
        return _fail(stack, "the export lacks the worker's shift events")

    # A month on: shift events are past their 30 days, alarms would stay (365 days).
    counts = Purger(store, RetentionSection(events_days=30)).purge_once(time.time() + 31 * 86400)
    left = [f["kind"] for f in store.event_log()]
    stack.tl.add("purge", days_later=31, removed_from_log=counts["event_log"], left=left)
    if any(k in ("shift_start", "shift_end") for k in left):
        return _fail(stack, "the purge left shift events older than events_days")

    done = erase_worker(store, WORKER)
    stack.tl.add("erase", **{k: done[k] for k in ("pseudonym", "alarms_anonymised", "devices_removed")})
    if RegistryStore(store).load().worker(WORKER) is not None or store.state(DEVICE_ID):
        return _fail(stack, "the worker is still in the registry or their device state is kept")
    return True

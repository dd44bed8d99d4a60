"""The console in Arabic (issue 13 "Texts in catalogs"): a real ``lonewatch console run``
process with ``[console] language = "ar"`` in Debian's chromium (Playwright). The page is
right to left (``<html dir="rtl">``), the texts come from the Arabic catalog, the header and
the queue's first column start on the right, and the role is shown translated."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.users import UserStore
from labstack.console_runner import ConsoleProcess
from relay.alarms import AlarmStore
from relay.registry import ArcAccount, Contact, Device, RegistryDoc, RegistryStore, Site, Worker
from relay.store import Store, device_key

from .consolerig import chromium, keep_screenshot, screenshot_on_failure, sign_in

pytestmark = pytest.mark.integration

PASSWORD = "viewer-password-1"


@pytest.fixture
def arabic_console(redis_server, tmp_path: Path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'[redis]\nurl = "{redis_server.url}"\n\n[console]\nlanguage = "ar"\n')
    store = Store.from_url(redis_server.url)
    UserStore(store).add("vic", "viewer", PASSWORD, name="Vic Viewer")
    RegistryStore(store).save(RegistryDoc(accounts=(ArcAccount("1234"),), workers=(Worker("Anna Hansen", 17, "ar"),),
                                          sites=(Site("Depot", timezone="Asia/Amman"),),
                                          devices=(Device("lw-0001", worker="Anna Hansen", site="Depot", account="1234"),)))
    store.r.hset(device_key("lw-0001", "state"), mapping={"last_seen": 1.0, "battery_pct": 15, "signal_dbm": -71})
    contacts = (Contact("Per Jensen", "manager", phone="+4520110001"),)
    fields = {"device": "lw-0001", "kind": "panic", "worker": "Anna Hansen", "site": "Depot", "escalate_after_s": 120,
              "max_rounds": 3, "policy": "contacts_only", "lat": 55.6, "lon": 12.5}
    assert AlarmStore(store).open("lw-0001:7", fields, contacts, escalate=False, detail="test") == 1
    with ConsoleProcess(cfg, tmp_path / "console.log") as console:
        yield console


def test_arabic_queue_is_right_to_left(arabic_console, tmp_path: Path) -> None:
    console = arabic_console
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 600})
        with screenshot_on_failure(page, tmp_path, "queue-ar"):
            sign_in(page, console.url, "vic", PASSWORD)
            page.wait_for_selector("#queue-rows tr[data-alarm='lw-0001:7']")
            assert page.get_attribute("html", "dir") == "rtl" and page.get_attribute("html", "lang") == "ar"
            assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
            assert "قائمة الإنذارات" in page.inner_text("header nav")  # "Alarm queue" from the catalog
            assert "مُشاهِد" in page.inner_text("header .who")  # the role "viewer", translated
            width = page.evaluate("document.documentElement.clientWidth")
            brand = page.locator("header .brand").bounding_box()
            assert brand["x"] > width / 2, "the header does not start on the right"
            first_th = page.locator("#queue thead th").first.bounding_box()
            last_th = page.locator("#queue thead th").last.bounding_box()
            assert first_th["x"] > last_th["x"], "the queue's columns do not run right to left"
            pos = page.locator("#queue-rows .pos").first
            assert pos.evaluate("e => getComputedStyle(e).direction") == "ltr"  # a position reads as written
            shot = tmp_path / "queue-ar.png"
            page.screenshot(path=str(shot), full_page=True)
            keep_screenshot(shot)
            page.goto(console.url + "/alarm/lw-0001:7")
            page.wait_for_selector("#alarm-facts dd.pos")
            assert "55.600000, 12.500000" in page.inner_text("#alarm-facts dd.pos")
            shot = tmp_path / "alarm-ar.png"
            page.screenshot(path=str(shot), full_page=True)
            keep_screenshot(shot)
            page.goto(console.url + "/workers")
            assert "بطاقة العامل" in page.inner_text("#workers")  # the "Worker card" button
            assert page.locator("#workers .battery .ltr").first.inner_text() == "15 %"
            for name in ("workers-ar", "figures-ar"):
                if name == "figures-ar":
                    page.goto(console.url + "/figures?month=2026-11")
                    assert page.inner_text("h1").endswith("2026-11")  # the month reads as written
                    assert page.locator("h1 .ltr").evaluate("e => getComputedStyle(e).direction") == "ltr"
                shot = tmp_path / f"{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                keep_screenshot(shot)

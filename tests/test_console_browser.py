"""The console in a real browser (issue 13 "Browser tests"): Debian's chromium driven by
Playwright, on the real stack — Mosquitto, Redis, relay, the simulated device with its
MockFactory button, pysiaalarm as the ARC, the relay's modem simulator carrying the
contacts' SMS — and ``lonewatch console run`` as its own process.

No timing asserts: the ≤ 2 s display latency is measured in bench (b_console); here the
alarm must appear, waiting on the condition.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from labstack.console_runner import ConsoleProcess, demo_users
from labstack.demo.scenario_contacts import raised_alarm, set_site, wait_alarm
from labstack.demo.stack import CONTACTS, DemoStack
from labstack.timeline import Timeline
from relay.alarms import AlarmStore

from .consolerig import chromium, keep_screenshot, screenshot_on_failure, sign_in

pytestmark = pytest.mark.integration

#: Seconds before the second contact would be told without an acknowledgement.
ESCALATE_AFTER_S = 8


@pytest.fixture
def rig(tmp_path: Path):
    """DemoStack (first contact told at once, the second after ESCALATE_AFTER_S), demo users
    and a console process; yields ``(stack, console, passwords)``."""
    (tmp_path / "demo").mkdir()
    with DemoStack(Timeline(live=False), tmp_path / "demo") as stack:
        set_site(stack, policy="arc_then_contacts", escalate_after_s=ESCALATE_AFTER_S)
        passwords = demo_users(stack.relay.store)
        console = ConsoleProcess(stack.relay_config_path, tmp_path / "console.log").start()
        try:
            yield stack, console, passwords
        finally:
            console.stop()


def _sms_to(stack: DemoStack, phone: str) -> list[str]:
    return [text for number, text in list(stack.contact_sms) if number == phone]


def _wait(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_button_hold_to_queue_take_charge_resolve_figures(rig, tmp_path: Path) -> None:
    stack, console, pw = rig
    (first, _, first_phone, _), (second, _, second_phone, _) = CONTACTS
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 820})
        with screenshot_on_failure(page, tmp_path, "flow"):
            sign_in(page, console.url, "operator", pw["operator"])
            page.wait_for_selector("body[data-live=live]")
            page.wait_for_selector("#queue-rows tr.empty")
            # Figures of this month before: no genuine alarm.
            page.goto(console.url + "/figures")
            genuine_before = int(page.inner_text("#figures td.fig-all.outcome-genuine"))
            page.goto(console.url + "/")
            page.wait_for_selector("body[data-live=live]")

            stack.hold(2.5)  # a finger on the button
            alarm_id = raised_alarm(stack, 1, 20)
            assert alarm_id is not None, "the relay did not store the alarm"
            row = page.wait_for_selector(f"#queue-rows tr[data-alarm='{alarm_id}']", timeout=20_000)
            text = row.inner_text()
            assert "Anna Hansen" in text and "Vestergade" in text and "Silent panic" in text
            assert page.evaluate("window.lwConsole.chimes") >= 1, "no alarm sound for a new alarm"
            assert _wait(lambda: _sms_to(stack, first_phone)), f"{first} got no alarm SMS"
            page.wait_for_function("document.querySelector(\"#queue-rows tr[data-alarm='%s']\").innerText.includes('ACKed')"
                                   % alarm_id, timeout=20_000)
            shot = tmp_path / "console-queue.png"
            page.screenshot(path=str(shot), full_page=True)
            keep_screenshot(shot)

            # Take charge from the queue: the same acknowledgement as an SMS reply.
            row.query_selector("button.take").click()
            page.wait_for_selector(f"#queue-rows tr.state-acked[data-alarm='{alarm_id}']")
            alarm = wait_alarm(stack, alarm_id, {"acked"}, 10)
            assert alarm is not None and alarm.get("acked_by") == "Lise Operator" and alarm.get("ack_via") == "console"
            # The first contact is told who has it; the second is never told at all.
            assert _wait(lambda: any("Lise Operator" in t for t in _sms_to(stack, first_phone))), \
                f"{first} was not told who took the alarm"
            acked_at = float(alarm.get("acked_at"))
            # Proving an absence: wait past the moment the second contact would have been told.
            while time.time() < acked_at + ESCALATE_AFTER_S + 2:
                time.sleep(0.2)
            assert _sms_to(stack, second_phone) == [], f"{second} got an SMS although the alarm was taken"
            assert not any(e.get("what") == "escalated" and e.get("contact") == second
                           for e in AlarmStore(stack.relay.store).history(alarm_id))

            # Resolve with an outcome and a note on the alarm's page.
            page.click(f"#queue-rows tr[data-alarm='{alarm_id}'] td.kind a")
            page.wait_for_selector("#resolve-form")
            # The open alarm page follows the history by itself (a note made elsewhere shows up).
            AlarmStore(stack.relay.store).note(alarm_id, "note", "written by another operator", contact="Per Jensen")
            page.wait_for_selector("#history-rows tr.what-note", timeout=10_000)
            page.select_option("#resolve-form select[name=outcome]", "genuine")
            page.fill("#resolve-form input[name=note]", "Worker slipped on the stairs; first aid given")
            page.click("#resolve-form button[type=submit]")
            page.wait_for_selector("#outcome")
            history = page.inner_text("#history")
            for what in ("opened", "escalated", "arc_acked", "sent", "acknowledged", "resolved"):
                assert what in history, f"history lacks {what}"
            assert "Worker slipped on the stairs" in history
            shot = tmp_path / "console-history.png"
            page.screenshot(path=str(shot), full_page=True)
            keep_screenshot(shot)

            # Gone from the queue; counted in the monthly figures.
            page.goto(console.url + "/")
            page.wait_for_selector("#queue-rows tr.empty")
            page.goto(console.url + "/figures")
            assert int(page.inner_text("#figures td.fig-all.outcome-genuine")) == genuine_before + 1
            assert page.inner_text("#figures td.fig-all.ttc-median") != "—"
            csv = page.request.get(console.url + "/figures.csv").text()
            assert "Vestergade 12, basement laundry" in csv and "silent_panic" in csv
            for name in ("figures", "workers"):
                if name == "workers":
                    page.goto(console.url + "/workers")
                    assert "Anna Hansen" in page.inner_text("#workers tr[data-device='lw-demo-0001']")
                shot = tmp_path / f"console-{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                keep_screenshot(shot)


def test_viewer_cannot_take_charge(rig, tmp_path: Path) -> None:
    stack, console, pw = rig
    with chromium() as browser:
        page = browser.new_page()
        with screenshot_on_failure(page, tmp_path, "viewer"):
            sign_in(page, console.url, "viewer", pw["viewer"])
            page.click("#sound-toggle")  # this viewer wants no sound; it stays off after a reload
            page.reload()
            page.wait_for_selector("body[data-live=live]")
            assert page.inner_text("#sound-toggle") == "Sound: off"
            stack.hold(2.5)
            alarm_id = raised_alarm(stack, 1, 20)
            assert alarm_id is not None
            row = page.wait_for_selector(f"#queue-rows tr[data-alarm='{alarm_id}']", timeout=20_000)
            assert page.evaluate("window.lwConsole.chimes") == 0, "the sound played although switched off"
            assert row.query_selector("button.take") is None, "a viewer is offered take charge"
            # Forge the form a viewer is not shown, with the viewer's own valid CSRF token.
            token = page.evaluate("document.querySelector('form[action=\"/logout\"] input[name=csrf]').value")
            resp = page.request.post(f"{console.url}/alarm/{alarm_id}/take", form={"csrf": token})
            assert resp.status == 403
            alarm = AlarmStore(stack.relay.store).get(alarm_id)
            assert alarm is not None and alarm.state == "open" and not alarm.get("acked_by")


def test_alarm_raised_while_disconnected_shows_after_reconnect(rig, tmp_path: Path) -> None:
    stack, console, pw = rig
    with chromium() as browser:
        page = browser.new_page()
        with screenshot_on_failure(page, tmp_path, "reconnect"):
            sign_in(page, console.url, "operator", pw["operator"])
            page.wait_for_selector("body[data-live=live]")
            connects = page.evaluate("window.lwConsole.connects")
            console.kill()  # the browser loses its connection
            page.wait_for_selector("body[data-live=reconnecting]")
            stack.hold(2.5)
            alarm_id = raised_alarm(stack, 1, 20)
            assert alarm_id is not None
            assert page.query_selector(f"#queue-rows tr[data-alarm='{alarm_id}']") is None
            console.start()  # same port: the page reconnects by itself
            page.wait_for_selector(f"#queue-rows tr[data-alarm='{alarm_id}']", timeout=30_000)
            assert page.evaluate("window.lwConsole.connects") >= connects


def test_wrong_password_and_missing_csrf_refused_in_the_browser(rig, tmp_path: Path) -> None:
    stack, console, pw = rig
    with chromium() as browser:
        page = browser.new_page()
        with screenshot_on_failure(page, tmp_path, "refusals"):
            page.goto(console.url + "/login")
            page.fill("input[name=username]", "operator")
            page.fill("input[name=password]", "not-the-password")
            page.click("form[action='/login'] button[type=submit]")
            assert "Wrong user name or password" in page.inner_text("#login-error")
            assert page.query_selector("#queue") is None
            # The same form with its security token taken out (a forged form) is refused.
            page.fill("input[name=username]", "operator")
            page.fill("input[name=password]", pw["operator"])
            page.evaluate("document.querySelector('form[action=\"/login\"] input[name=csrf]').remove()")
            page.click("form[action='/login'] button[type=submit]")
            assert "expired or was not sent by this page" in page.inner_text("#login-error")
            sign_in(page, console.url, "operator", pw["operator"])
            stack.hold(2.5)
            alarm_id = raised_alarm(stack, 1, 20)
            assert alarm_id is not None
            row = page.wait_for_selector(f"#queue-rows tr[data-alarm='{alarm_id}']", timeout=20_000)
            page.evaluate("document.querySelectorAll('#queue-rows input[name=csrf]').forEach(e => e.remove())")
            row.query_selector("button.take").click()
            assert "security token missing or wrong" in page.inner_text("#problem")
            alarm = AlarmStore(stack.relay.store).get(alarm_id)
            assert alarm is not None and alarm.state == "open"


def test_alarm_page_usable_when_no_map_tile_loads(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    with DemoStack(Timeline(live=False), tmp_path / "demo") as stack:
        with open(stack.relay_config_path, "a") as fh:  # tiles from a server that is not there
            fh.write('\n[console]\ntile_url = "http://127.0.0.1:9/tiles/{z}/{x}/{y}.png"\nlanguage = "da"\n')
        pw = demo_users(stack.relay.store)
        with ConsoleProcess(stack.relay_config_path, tmp_path / "console.log") as console, chromium() as browser:
            page = browser.new_page()
            with screenshot_on_failure(page, tmp_path, "map"):
                sign_in(page, console.url, "viewer", pw["viewer"])
                assert "Alarmkø" in page.inner_text("h1")  # [console] language = "da"
                stack.hold(2.5)
                alarm_id = raised_alarm(stack, 1, 20)
                assert alarm_id is not None
                row = page.wait_for_selector(f"#queue-rows tr[data-alarm='{alarm_id}']")
                assert "Stille alarm" in row.inner_text()
                shot = tmp_path / "console-queue-da.png"
                page.screenshot(path=str(shot), full_page=True)
                keep_screenshot(shot)
                row.query_selector("td.kind a").click()
                page.wait_for_selector(".map.map-failed", timeout=15_000)
                assert page.is_visible(".map-note") and "Kortet kunne ikke hentes" in page.inner_text(".map-note")
                assert "55.668571, 12.576131" in page.inner_text("dd.pos")
                assert page.query_selector("#take-form") is None  # a viewer gets no forms
                shot = tmp_path / "console-alarm-no-tiles.png"
                page.screenshot(path=str(shot), full_page=True)
                keep_screenshot(shot)

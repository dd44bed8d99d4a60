"""Demo scenario of the console (issue 13): ``lonewatch demo --scenario console``.

A console process beside the local installation; an operator signs in (over HTTP, as a
browser would: cookie, CSRF token from the page), watches the live queue (Server-Sent
Events), the worker holds the button, the alarm shows in the queue, the operator takes
charge — the same acknowledgement as an SMS reply — so the first contact is told who has
it and the second contact is never told; then resolves it as genuine and the monthly
figures count it. Exit 0 only if all of that happened.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
import time
import urllib.parse
import urllib.request

from relay.alarms import AlarmStore
from labstack.console_runner import ConsoleProcess, demo_users
from .scenario_contacts import fail, raised_alarm, set_site, wait_alarm
from .scenarios import scenario
from .stack import CONTACTS, DemoStack

ESCALATE_AFTER_S = 6


class ConsoleClient:
    """A minimal browser: cookie jar, CSRF token taken from the last page, form posts."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.token = ""

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as resp:
            text = resp.read().decode()
        m = re.search(r'name="csrf" value="([^"]+)"', text)
        if m:
            self.token = m.group(1)
        return text

    def post(self, path: str, **form: str) -> tuple[int, str]:
        data = urllib.parse.urlencode({"csrf": self.token, **form}).encode()
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def watch(self, seen: dict[str, float], stop: threading.Event) -> threading.Thread:
        """Read the live feed in a thread; ``seen`` gets alarm id → time first listed."""

        def run() -> None:
            try:
                with self.opener.open(self.base + "/events", timeout=30) as resp:
                    for raw in resp:
                        if stop.is_set():
                            return
                        line = raw.decode().strip()
                        if line.startswith("data:"):
                            for alarm_id in json.loads(line[5:])["ids"]:
                                seen.setdefault(alarm_id, time.time())
            except OSError:
                return

        t = threading.Thread(target=run, name="demo-console-sse", daemon=True)
        t.start()
        return t


@scenario("console", "a console operator sees the alarm appear live, takes charge (the second contact is never "
          "told), resolves it as genuine; the monthly figures count it")
def console_scenario(stack: DemoStack) -> bool:
    (first, _, first_phone, _), (second, _, second_phone, _) = CONTACTS
    set_site(stack, policy="arc_then_contacts", escalate_after_s=ESCALATE_AFTER_S)
    passwords = demo_users(stack.relay.store)
    console = ConsoleProcess(stack.relay_config_path, stack.workdir / "console.log").start()
    stop = threading.Event()
    try:
        stack.tl.add("console_up", url=console.url, login="operator")
        web = ConsoleClient(console.url)
        web.get("/login")
        web.post("/login", username="operator", password=passwords["operator"], next="/")
        if "Alarm queue" not in web.get("/"):
            return fail(stack, "the operator could not sign in")
        seen: dict[str, float] = {}
        web.watch(seen, stop)
        time.sleep(0.5)
        stack.hold(2.5)
        alarm_id = raised_alarm(stack, 1, stack.timeout_s)
        if alarm_id is None:
            return fail(stack, "the relay did not store the alarm")
        deadline = time.monotonic() + stack.timeout_s
        while alarm_id not in seen and time.monotonic() < deadline:
            time.sleep(0.02)
        alarm = AlarmStore(stack.relay.store).get(alarm_id)
        if alarm_id not in seen or alarm is None:
            return fail(stack, "the alarm did not appear in the console's live queue")
        stack.tl.add("console_shown", alarm=alarm_id,
                     stored_to_shown_ms=round((seen[alarm_id] - float(alarm.get("opened_at"))) * 1000, 1))
        web.get(f"/alarm/{alarm_id}")
        web.post(f"/alarm/{alarm_id}/take")
        alarm = wait_alarm(stack, alarm_id, {"acked"}, 10)
        if alarm is None or alarm.get("ack_via") != "console":
            return fail(stack, "take charge in the console did not acknowledge the alarm")
        stack.tl.add("console_take_charge", alarm=alarm_id, by=alarm.get("acked_by"))
        deadline = time.monotonic() + stack.timeout_s
        while time.monotonic() < deadline and not any(n == first_phone and alarm.get("acked_by") in t
                                                      for n, t in list(stack.contact_sms)):
            time.sleep(0.05)
        if not any(n == first_phone and alarm.get("acked_by") in t for n, t in list(stack.contact_sms)):
            return fail(stack, f"{first} was not told who has the alarm")
        while time.time() < float(alarm.get("acked_at")) + ESCALATE_AFTER_S + 1.5:
            time.sleep(0.1)  # past the moment the second contact would have been told
        if any(n == second_phone for n, _ in list(stack.contact_sms)):
            return fail(stack, f"{second} got an SMS although the alarm was taken")
        stack.tl.add("second_contact_not_told", contact=second, waited_s=ESCALATE_AFTER_S + 1.5)
        web.get(f"/alarm/{alarm_id}")
        web.post(f"/alarm/{alarm_id}/resolve", outcome="genuine", note="demo: the worker was helped")
        if AlarmStore(stack.relay.store).get(alarm_id).get("outcome") != "genuine":
            return fail(stack, "resolving in the console did not record the outcome")
        csv = web.get("/figures.csv")
        row = next((line for line in csv.splitlines() if line.split(",")[1:2] == ["(all sites)"]), "")
        stack.tl.add("console_resolved", alarm=alarm_id, outcome="genuine", figures=row)
        if ",1," not in row:
            return fail(stack, "the monthly figures do not count the alarm")
        return True
    finally:
        stop.set()
        console.stop()

"""A new alarm shown in the console ≤ 2 s after the relay stored it (SPEC §6, issue 13).

Workload: a throwaway Redis, ``lonewatch console run`` as its own process (default
``poll_s`` 0.25 s), Debian's chromium headless through Playwright signed in on the alarm
queue (live by Server-Sent Events). Alarms are opened with
:meth:`relay.alarms.AlarmStore.open` — the call the relay's escalation makes when it stores
an alarm — with ``now`` = the stored time; a MutationObserver in the page records
``Date.now()`` when the alarm's row appears. Both clocks are this machine's system clock.
Alarms come at random gaps (0.3–1.2 s) so they fall anywhere in the poll cycle.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

from console.users import UserStore
from labstack.console_runner import ConsoleProcess
from labstack.servers import RedisServer
from relay.alarms import AlarmStore
from relay.registry import Contact
from relay.store import Store

from .stats import Figure, Spread, percentile

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
_OBSERVE = """() => { window.lwShown = {};
  new MutationObserver(() => { const t = Date.now() / 1000;
    document.querySelectorAll('#queue-rows tr[data-alarm]').forEach(r => {
      if (!(r.dataset.alarm in window.lwShown)) window.lwShown[r.dataset.alarm] = t; });
  }).observe(document.querySelector('#queue-rows'), {childList: true, subtree: true}); }"""


def _one_run(page, store: Store, run: int, n_alarms: int) -> list[float]:
    alarms = AlarmStore(store)
    stored: dict[str, float] = {}
    contacts = (Contact("P", "manager", phone="+4520110001"),)
    for i in range(n_alarms):
        alarm_id = f"lw-bench-{run}:{i}"
        now = time.time()
        alarms.open(alarm_id, {"device": f"lw-bench-{run}", "kind": "panic", "worker": f"Worker {i}", "site": "Bench",
                               "escalate_after_s": 3600, "max_rounds": 1, "policy": "contacts_only"},
                    contacts, escalate=False, detail="bench", now=now)
        stored[alarm_id] = now
        time.sleep(random.uniform(0.3, 1.2))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = page.evaluate("window.lwShown")
        if all(a in shown for a in stored):
            break
        time.sleep(0.05)
    shown = page.evaluate("window.lwShown")
    missing = [a for a in stored if a not in shown]
    if missing:
        raise RuntimeError(f"{len(missing)} alarm(s) never shown in the console: {missing[:3]}")
    return [shown[a] - stored[a] for a in stored]


def run(runs: int = 3, n_alarms: int = 15) -> list[Figure]:
    from playwright.sync_api import sync_playwright

    maxima, medians, all_lat = [], [], []
    with tempfile.TemporaryDirectory(prefix="lonewatch-bench-console-") as tmp, RedisServer().start() as redis:
        work = Path(tmp)
        cfg = work / "relay.toml"
        cfg.write_text(f'[redis]\nurl = "{redis.url}"\n')
        store = Store.from_url(redis.url)
        UserStore(store).add("bench", "viewer", "bench-password-1")
        with ConsoleProcess(cfg, work / "console.log") as console, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page()
                page.goto(console.url + "/login")
                page.fill("input[name=username]", "bench")
                page.fill("input[name=password]", "bench-password-1")
                page.click("form[action='/login'] button[type=submit]")
                page.wait_for_selector("body[data-live=live]")
                page.evaluate(_OBSERVE)
                for r in range(runs):
                    lat = _one_run(page, store, r, n_alarms)
                    all_lat += lat
                    maxima.append(max(lat))
                    medians.append(statistics.median(lat))
            finally:
                browser.close()
    worst = max(maxima)
    wl = (f"{runs} runs × {n_alarms} alarms at random 0.3–1.2 s gaps; Redis + console process (poll_s 0.25 s) + "
          f"headless chromium on the live queue (SSE); stored = AlarmStore.open(now), shown = MutationObserver Date.now()")
    return [Figure("alarm stored → shown in the console (max per run)", "s", Spread.of(maxima), goal="≤ 2 s",
                   met=worst <= 2.0, workload=wl, fmt="{:.2f}",
                   note=f"median {statistics.median(all_lat):.2f} s, p99 {percentile(all_lat, 99):.2f} s, "
                        f"worst {worst:.2f} s over {len(all_lat)} alarms",
                   extra={"latencies_s": [round(x, 4) for x in all_lat]})]

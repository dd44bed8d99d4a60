"""Browser-test rig for the console: Debian's chromium driven by Playwright (never a
downloaded browser), a console process beside a :class:`labstack.demo.stack.DemoStack`,
sign-in helpers and screenshots on failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Debian's chromium (installed by `make setup`).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def chromium() -> Iterator[object]:
    """A headless chromium (Playwright ``Browser``), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def keep_screenshot(path: Path) -> None:
    """Copy a screenshot to ``$LONEWATCH_SCREENSHOTS`` when set (to look at it by hand)."""
    target = os.environ.get("LONEWATCH_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


@contextmanager
def screenshot_on_failure(page, tmp_path: Path, name: str) -> Iterator[None]:
    """On any failure inside the block: a full-page screenshot ``<name>-failure.png`` in
    ``tmp_path`` (its path is added to the error), then the error goes on."""
    try:
        yield
    except BaseException as exc:
        shot = tmp_path / f"{name}-failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            keep_screenshot(shot)
            exc.add_note(f"screenshot of the page: {shot}")
        except Exception as shot_exc:  # the browser itself may be gone
            exc.add_note(f"no screenshot: {shot_exc}")
        raise


def sign_in(page, base: str, login: str, password: str) -> None:
    """Fill in the sign-in form like a person and wait for the alarm queue."""
    page.goto(base + "/login")
    page.fill("input[name=username]", login)
    page.fill("input[name=password]", password)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_selector("#queue")

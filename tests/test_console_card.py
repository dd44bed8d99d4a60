"""The worker card from the console (issue 13 "Worker card … a button in the console"), over
HTTP against a real ``lonewatch console run`` process on a real Redis: the workers page and
the alarm page link to ``/card/<worker>``; the answer is a one-page PDF (pdfinfo) in the
worker's language (pdftotext); a viewer may download it, a signed-out client may not; an
unknown worker is a 404 page."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from console.users import UserStore
from labstack.console_runner import ConsoleProcess
from relay.alarms import AlarmStore
from relay.registry import ArcAccount, Contact, Device, RegistryDoc, RegistryStore, Worker
from relay.store import Store

pytestmark = pytest.mark.integration

PASSWORD = "viewer-password-1"


@pytest.fixture
def web(redis_server, tmp_path: Path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'[redis]\nurl = "{redis_server.url}"\n\n[console]\nlanguage = "en"\n')
    store = Store.from_url(redis_server.url)
    RegistryStore(store).save(RegistryDoc(accounts=(ArcAccount("1234"),),
                                          workers=(Worker("Anna Hansen", 17, "da"), Worker("Ahmad Karimi", 18, "ar")),
                                          devices=(Device("lw-0001", worker="Anna Hansen", account="1234"),)))
    UserStore(store).add("vic", "viewer", PASSWORD, name="Vic Viewer")
    with ConsoleProcess(cfg, tmp_path / "console.log") as console:
        yield console, store


@contextmanager
def _viewer(console: ConsoleProcess) -> Iterator[httpx.Client]:
    """A client signed in as the viewer (who may look, not change)."""
    with httpx.Client(base_url=console.url, follow_redirects=False, timeout=30) as c:
        _sign_in(c)
        yield c


def _sign_in(c: httpx.Client) -> None:
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
    r = c.post("/login", data={"csrf": token, "username": "vic", "password": PASSWORD, "next": "/"})
    assert r.status_code == 303, r.text


def _pdf_facts(pdf: bytes, tmp_path: Path, name: str) -> tuple[int, str]:
    path = tmp_path / name
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))  # type: ignore[union-attr]
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return pages, " ".join(text.split())


def test_viewer_downloads_a_one_page_card_in_the_workers_language(web, tmp_path: Path) -> None:
    console, _ = web
    with _viewer(console) as c:
        page = c.get("/workers").text
        assert 'href="/card/Anna%20Hansen"' in page and "Worker card" in page  # the button
        r = c.get("/card/Anna%20Hansen")
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        assert r.content.startswith(b"%PDF-")
        assert 'filename="worker-card-Anna-Hansen.pdf"' in r.headers["content-disposition"]
        pages, text = _pdf_facts(r.content, tmp_path, "anna.pdf")
        assert pages == 1 and "Anna Hansen" in text and "Din alarmknap" in text  # Danish, her language
        r = c.get("/card/Ahmad%20Karimi")
        assert r.status_code == 200
        pages, text = _pdf_facts(r.content, tmp_path, "ahmad.pdf")
        assert pages == 1 and "Ahmad Karimi" in text and "Your alarm button" not in text and "زر" in text


def test_alarm_page_links_to_the_card(web) -> None:
    console, store = web
    fields = {"device": "lw-0001", "kind": "panic", "worker": "Anna Hansen", "site": "Depot", "escalate_after_s": 120,
              "max_rounds": 3, "policy": "contacts_only"}
    AlarmStore(store).open("lw-0001:7", fields, (Contact("Per Jensen", "manager", phone="+4520110001"),),
                           escalate=False, detail="test")
    with _viewer(console) as c:
        page = c.get("/alarm/lw-0001:7").text
        assert 'id="worker-card" href="/card/Anna%20Hansen"' in page


def test_signed_out_gets_no_card(web) -> None:
    console, _ = web
    with httpx.Client(base_url=console.url, follow_redirects=False, timeout=10) as c:
        r = c.get("/card/Anna%20Hansen")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert b"%PDF" not in r.content


def test_unknown_worker_is_a_404_page(web) -> None:
    console, _ = web
    with _viewer(console) as c:
        r = c.get("/card/Nobody")
        assert r.status_code == 404 and "There is no such worker in the registry." in r.text
        assert r.headers["content-type"].startswith("text/html")

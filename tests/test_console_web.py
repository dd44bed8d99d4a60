"""The console over HTTP (a real ``lonewatch console run`` process on a real Redis): sign-in,
wrong password, CSRF, login throttling, roles, sessions that end, audit trail, headers.

Alarms are opened with :class:`relay.alarms.AlarmStore` exactly as the relay's escalation
opens them (the full chain with a device is in test_console_browser.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from console.audit import Audit
from console.users import UserStore
from labstack.console_runner import ConsoleProcess
from relay.alarms import AlarmStore
from relay.registry import Contact
from relay.store import Store

pytestmark = pytest.mark.integration

PASSWORDS = {"ada": "operator-password-1", "vic": "viewer-password-1", "root": "admin-password-1"}


@pytest.fixture
def web(redis_server, tmp_path: Path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'[redis]\nurl = "{redis_server.url}"\n\n[console]\nlogin_max_failures = 5\nlogin_window_s = 60\n\nlogin_max_failures_per_address = 8\n')
    store = Store.from_url(redis_server.url)
    users = UserStore(store)
    users.add("ada", "operator", PASSWORDS["ada"], name="Ada Operator")
    users.add("vic", "viewer", PASSWORDS["vic"], name="Vic Viewer")
    users.add("root", "admin", PASSWORDS["root"])
    with ConsoleProcess(cfg, tmp_path / "console.log") as console:
        yield console, store


def _token(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def _client(console: ConsoleProcess) -> httpx.Client:
    return httpx.Client(base_url=console.url, follow_redirects=False, timeout=10)


def _sign_in(client: httpx.Client, login: str, password: str | None = None) -> httpx.Response:
    token = _token(client.get("/login").text)
    return client.post("/login", data={"csrf": token, "username": login, "password": password or PASSWORDS[login],
                                       "next": "/"})


def _open_alarm(store: Store, alarm_id: str = "lw-0001:7") -> str:
    contacts = (Contact("Per Jensen", "manager", phone="+4520110001"),)
    fields = {"device": "lw-0001", "kind": "panic", "worker": "Anna Hansen", "site": "Depot", "escalate_after_s": 120,
              "max_rounds": 3, "policy": "arc_then_contacts", "lat": 55.6, "lon": 12.5}
    assert AlarmStore(store).open(alarm_id, fields, contacts, escalate=True, detail="test") == 1
    return alarm_id


def test_pages_need_a_session(web) -> None:
    console, _ = web
    with _client(console) as c:
        for path in ("/", "/workers", "/figures", "/figures.csv", "/admin", "/alarm/lw-0001:7", "/events"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), path


def test_wrong_password_refused_and_audited(web) -> None:
    console, store = web
    with _client(console) as c:
        r = _sign_in(c, "ada", "not-her-password")
        assert r.status_code == 401 and "Wrong user name or password" in r.text
        assert c.get("/").status_code == 303  # still signed out
        r = _sign_in(c, "nobody", "whatever-password")
        assert r.status_code == 401
    entries = Audit(store).recent()
    assert [e["outcome"] for e in entries if e["action"] == "login"][:2] == ["wrong_password", "wrong_password"]
    assert all("not-her-password" not in str(e) for e in entries), "a password reached the audit trail"


def test_login_without_csrf_token_refused(web) -> None:
    console, _ = web
    with _client(console) as c:
        c.get("/login")
        r = c.post("/login", data={"username": "ada", "password": PASSWORDS["ada"], "next": "/"})
        assert r.status_code == 403
        r = c.post("/login", data={"csrf": "forged", "username": "ada", "password": PASSWORDS["ada"]})
        assert r.status_code == 403
        assert c.get("/").status_code == 303


def test_form_without_csrf_token_refused(web) -> None:
    console, store = web
    alarm_id = _open_alarm(store)
    with _client(console) as c:
        assert _sign_in(c, "ada").status_code == 303
        token = _token(c.get("/").text)
        assert c.post(f"/alarm/{alarm_id}/take", data={}).status_code == 403
        assert c.post(f"/alarm/{alarm_id}/take", data={"csrf": token + "x"}).status_code == 403
        # A cross-site post carrying the right token is refused by its Origin too.
        r = c.post(f"/alarm/{alarm_id}/take", data={"csrf": token}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert AlarmStore(store).get(alarm_id).state == "open"
        r = c.post(f"/alarm/{alarm_id}/take", data={"csrf": token})
        assert r.status_code == 303
    alarm = AlarmStore(store).get(alarm_id)
    assert alarm.state == "acked" and alarm.get("acked_by") == "Ada Operator" and alarm.get("ack_via") == "console"
    refused = [e for e in Audit(store).recent() if e["action"] == "take_charge" and e["outcome"] == "refused"]
    assert len(refused) == 3


def test_login_throttled_after_failures(web) -> None:
    console, store = web
    with _client(console) as c:
        for _ in range(5):
            assert _sign_in(c, "ada", "wrong-password-x").status_code == 401
        # This (name, address) now waits 2**5 = 32 s: even the right password is refused unchecked.
        r = _sign_in(c, "ada")
        assert r.status_code == 429
    assert any(e["outcome"] == "throttled" for e in Audit(store).recent())


def _from(console: ConsoleProcess, addr: str) -> httpx.Client:
    """A client seen at ``addr`` (X-Forwarded-For from the trusted proxy 127.0.0.1)."""
    return httpx.Client(base_url=console.url, follow_redirects=False, timeout=10, headers={"X-Forwarded-For": addr})


def test_attacker_cannot_lock_the_real_user_out(web) -> None:
    console, store = web
    with _from(console, "203.0.113.66") as attacker, _from(console, "198.51.100.7") as office:
        for _ in range(5):
            assert _sign_in(attacker, "ada", "guess-password-x").status_code == 401
        assert _sign_in(attacker, "ada").status_code == 429  # the attacker's address waits
        assert _sign_in(office, "ada").status_code == 303  # the real Ada elsewhere signs in
    outcomes = [(e["outcome"], e.get("addr")) for e in Audit(store).recent() if e["action"] == "login"]
    assert ("throttled", "203.0.113.66") in outcomes and ("ok", "198.51.100.7") in outcomes
    assert outcomes.count(("wrong_password", "203.0.113.66")) == 5


def test_address_spraying_blocked_and_good_sign_in_clears_it(web) -> None:
    console, store = web
    with _from(console, "192.0.2.10") as office:
        for name in ("u1", "u2", "u3", "u4", "u5", "u6", "u7"):  # 7 names, 1 failure each: below 8
            assert _sign_in(office, name, "spray-password-1").status_code == 401
        assert _sign_in(office, "ada").status_code == 303  # clears the address's counter
    with _from(console, "192.0.2.10") as office:
        for name in ("u1", "u2", "u3", "u4", "u5", "u6", "u7"):
            assert _sign_in(office, name, "spray-password-1").status_code == 401  # counted afresh
        assert _sign_in(office, "u8", "spray-password-1").status_code == 401  # the 8th
        assert _sign_in(office, "vic").status_code == 429  # the address sprays: everyone there waits
    with _from(console, "192.0.2.11") as other:
        assert _sign_in(other, "vic").status_code == 303


def test_back_off_grows_exponentially_and_is_capped(redis_server) -> None:
    from console.security import LoginThrottle

    now = [1000.0]
    t = LoginThrottle(Store.from_url(redis_server.url), 5, 300, addr_max_failures=50, backoff_max_s=900,
                      clock=lambda: now[0])
    for _ in range(4):
        t.failed("Ada", "10.0.0.1")
    assert not t.blocked("ada", "10.0.0.1")
    t.failed("ada", "10.0.0.1")  # 5th: 32 s from now
    assert t.blocked("ada", "10.0.0.1") and not t.blocked("ada", "10.0.0.2") and not t.blocked("bob", "10.0.0.1")
    now[0] += 31.9
    assert t.blocked("ada", "10.0.0.1")
    now[0] += 0.2
    assert not t.blocked("ada", "10.0.0.1")
    t.failed("ada", "10.0.0.1")  # 6th: 64 s, counted from this failure (not from the first)
    now[0] += 63.9
    assert t.blocked("ada", "10.0.0.1")
    assert [t.delay_s(k) for k in (4, 5, 6, 9, 10, 40)] == [0, 32, 64, 512, 900, 900]
    t.succeeded("ada", "10.0.0.1")
    assert not t.blocked("ada", "10.0.0.1")


def test_viewer_reads_but_cannot_write(web) -> None:
    console, store = web
    alarm_id = _open_alarm(store)
    with _client(console) as c:
        assert _sign_in(c, "vic").status_code == 303
        page = c.get("/")
        assert alarm_id in page.text and 'class="take"' not in page.text
        token = _token(page.text)
        for action, data in (("take", {}), ("resolve", {"outcome": "test"}), ("note", {"note": "hello"})):
            r = c.post(f"/alarm/{alarm_id}/{action}", data={"csrf": token, **data})
            assert r.status_code == 403, action
        assert c.get("/admin").status_code == 403
    alarm = AlarmStore(store).get(alarm_id)
    assert alarm.state == "open" and not alarm.get("outcome")
    assert [e["what"] for e in AlarmStore(store).history(alarm_id)] == ["opened"]


def test_operator_resolves_with_outcome_and_note(web) -> None:
    console, store = web
    alarm_id = _open_alarm(store)
    with _client(console) as c:
        _sign_in(c, "ada")
        token = _token(c.get(f"/alarm/{alarm_id}").text)
        r = c.post(f"/alarm/{alarm_id}/resolve", data={"csrf": token, "outcome": "nonsense"})
        assert r.status_code == 400
        r = c.post(f"/alarm/{alarm_id}/resolve", data={"csrf": token, "outcome": "false_alarm", "note": "pressed by mistake"})
        assert r.status_code == 303
        page = c.get(f"/alarm/{alarm_id}").text
        assert "false_alarm" in page and "pressed by mistake" in page
        assert alarm_id not in c.get("/").text  # no longer in the queue
        r = c.post(f"/alarm/{alarm_id}/resolve", data={"csrf": token, "outcome": "genuine"})
        assert "already" in r.headers["location"]
    alarm = AlarmStore(store).get(alarm_id)
    # Resolving an alarm nobody had took charge first (the same acknowledgement).
    assert alarm.state == "acked" and alarm.get("outcome") == "false_alarm" and alarm.get("resolved_by") == "Ada Operator"
    whats = [e["what"] for e in AlarmStore(store).history(alarm_id)]
    assert whats == ["opened", "acknowledged", "resolved"]
    actions = [e["action"] for e in Audit(store).recent() if e["target"] == alarm_id]
    assert "resolve" in actions and "take_charge" in actions


def test_sign_out_ends_the_session_everywhere(web) -> None:
    console, store = web
    with _client(console) as c:
        _sign_in(c, "ada")
        cookie = c.cookies.get("lwconsole")
        token = _token(c.get("/").text)
        assert c.post("/logout", data={"csrf": token}).status_code == 303
    with _client(console) as replay:
        replay.cookies.set("lwconsole", cookie)
        assert replay.get("/").status_code == 303, "a signed-out session cookie still works"


def test_password_change_and_removal_end_sessions(web) -> None:
    console, store = web
    with _client(console) as c:
        _sign_in(c, "ada")
        assert c.get("/").status_code == 200
        UserStore(store).passwd("ada", "a-brand-new-password")
        assert c.get("/").status_code == 303
        assert _sign_in(c, "ada", "a-brand-new-password").status_code == 303
        UserStore(store).remove("ada")
        assert c.get("/").status_code == 303


def test_cookie_and_security_headers(web) -> None:
    console, _ = web
    with _client(console) as c:
        r = c.get("/login")
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie  # plain http here
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
    with _client(console) as c:
        # Behind the TLS proxy (trusted address 127.0.0.1): the cookie is Secure.
        r = c.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in r.headers["set-cookie"].lower()


def test_every_asset_is_served_by_the_console(web) -> None:
    console, _ = web
    with _client(console) as c:
        _sign_in(c, "ada")
        html = c.get("/").text
        for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert ref.startswith("/"), f"external reference {ref}"
            if ref.startswith("/static/"):
                assert c.get(ref).status_code == 200, ref


def test_workers_on_shift_offline_and_low_battery_stand_out(web, tmp_path: Path) -> None:
    import time

    from protocol.messages import Alive, Position
    from relay.registry import RegistryStore, import_registry_file
    from relay.store import device_key

    console, store = web
    reg = tmp_path / "registry.toml"
    reg.write_text('[[accounts]]\naccount = "1234AB"\n\n[[sites]]\nname = "Depot"\naccount = "1234AB"\n\n'
                   + "".join(f'[[workers]]\nname = "{w}"\nnumber = {n}\n\n[[devices]]\nid = "{d}"\nworker = "{w}"\nsite = "Depot"\n\n'
                             for w, n, d in (("Anna", 1, "lw-0001"), ("Bo", 2, "lw-0002"), ("Cai", 3, "lw-0003"))))
    import_registry_file(RegistryStore(store), reg)
    store.update_alive(Alive("lw-0001", time.time(), 80, -71, "home", Position(55.6, 12.5, 4.0, time.time()), 1.0, "t", 0))
    store.update_alive(Alive("lw-0002", time.time(), 9, -101, "home", None, 1.0, "t", 0))
    store.r.hset(device_key("lw-0001", "sup"), "on_shift", "1")
    store.r.hset(device_key("lw-0001", "state"), "place", '{"building": "A", "floor": "1", "room": "Laundry"}')
    with _client(console) as c:
        _sign_in(c, "vic")
        html = c.get("/workers").text
    rows = {m.group(2): m.group(1) for m in re.finditer(r'<tr class="([^"]*)" data-device="([^"]+)"', html)}
    assert "offline" not in rows["lw-0001"] and "low-battery" not in rows["lw-0001"]
    assert "low-battery" in rows["lw-0002"]
    assert "offline" in rows["lw-0003"]  # never heard
    assert "A, 1, Laundry" in html and "-101 dBm" in html
    assert html.index('data-device="lw-0001"') < html.index('data-device="lw-0002"')  # on shift first


def test_names_are_escaped_not_run(web) -> None:
    console, store = web
    contacts = (Contact("<b>Per</b>", "manager", phone="+4520110001"),)
    AlarmStore(store).open("lw-0009:1", {"device": "lw-0009", "kind": "panic", "worker": "<img src=x onerror=alert(1)>",
                                         "site": "S", "escalate_after_s": 120, "max_rounds": 3}, contacts,
                           escalate=False, detail="t")
    with _client(console) as c:
        _sign_in(c, "ada")
        for path in ("/", "/alarm/lw-0009:1"):
            html = c.get(path).text
            assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html, path


def test_two_consoles_share_sessions_and_see_each_others_writes(web, tmp_path: Path) -> None:
    console, store = web
    alarm_id = _open_alarm(store)
    with ConsoleProcess(console.relay_config, tmp_path / "console-2.log") as other, _client(console) as a:
        _sign_in(a, "ada")
        token = _token(a.get("/").text)
        with httpx.Client(base_url=other.url, follow_redirects=False, timeout=10) as b:
            b.cookies.set("lwconsole", a.cookies.get("lwconsole"))
            assert b.get("/").status_code == 200, "a session of one console is not good on the other"
            assert a.post(f"/alarm/{alarm_id}/take", data={"csrf": token}).status_code == 303
            row = re.search(r'<tr class="([^"]*)" data-alarm="%s"' % re.escape(alarm_id), b.get("/").text)
            assert row and "state-acked" in row.group(1)


def test_live_feed_sends_the_queue_at_once(web) -> None:
    console, store = web
    alarm_id = _open_alarm(store)
    with _client(console) as c:
        _sign_in(c, "vic")
        with c.stream("GET", "/events") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    import json

                    data = json.loads(line[5:])
                    assert data["ids"] == [alarm_id] and data["urgent"] == [alarm_id] and data["redis_ok"]
                    assert "Take charge" not in data["html"]  # rendered for the viewer
                    break


def test_redis_down_says_so_and_changes_nothing(web, redis_server, wait_until) -> None:
    console, store = web
    alarm_id = _open_alarm(store)
    with _client(console) as c:
        _sign_in(c, "ada")
        token = _token(c.get("/").text)
        redis_server.stop()
        try:
            r = c.get("/")
            assert r.status_code == 503 and "does not answer" in r.text
            r = c.post(f"/alarm/{alarm_id}/take", data={"csrf": token})
            assert r.status_code == 503 and "nothing was changed" in r.text
            assert wait_until(lambda: c.get("/healthz").status_code == 503, 15)
        finally:
            redis_server.restart()
        assert wait_until(lambda: c.get("/healthz").status_code == 200, 15)
        assert c.get("/").status_code == 200  # the session survived in Redis
        assert c.post(f"/alarm/{alarm_id}/take", data={"csrf": token}).status_code == 303
    assert AlarmStore(Store.from_url(redis_server.url)).get(alarm_id).state == "acked"


def test_admin_manages_users_in_the_web_and_others_cannot(web) -> None:
    console, store = web
    with _client(console) as admin:
        _sign_in(admin, "root")
        token = _token(admin.get("/admin").text)
        r = admin.post("/admin/users/add", data={"csrf": token, "login": "lise", "role": "operator", "name": "Lise O",
                                                 "password": "a long passphrase"})
        assert r.status_code == 303
        assert admin.post("/admin/users/add", data={"csrf": token, "login": "x", "role": "operator",
                                                    "password": "short"}).status_code == 400
        assert admin.post("/admin/users/remove", data={"csrf": token, "login": "root"}).status_code == 400
        with _client(console) as lise:
            assert _sign_in(lise, "lise", "a long passphrase").status_code == 303
            lise_token = _token(lise.get("/").text)
            for path, data in (("/admin/users/add", {"login": "evil", "role": "admin", "password": "0123456789ab"}),
                               ("/admin/users/remove", {"login": "root"}),
                               ("/admin/users/passwd", {"login": "root", "password": "0123456789ab"})):
                assert lise.post(path, data={"csrf": lise_token, **data}).status_code == 403, path
            assert admin.post("/admin/users/passwd", data={"csrf": token, "login": "lise",
                                                           "password": "another passphrase"}).status_code == 303
            assert lise.get("/").status_code == 303  # her session ended with the new password
        assert admin.post("/admin/users/remove", data={"csrf": token, "login": "lise"}).status_code == 303
        assert admin.post("/admin/users/remove", data={"csrf": token, "login": "lise"}).status_code == 404
    assert UserStore(store).get("lise") is None and UserStore(store).get("evil") is None
    done = [(e["user"], e["action"], e["outcome"]) for e in Audit(store).recent()]
    assert ("root", "user_add", "ok") in done and ("lise", "user_add", "refused") in done
    assert ("root", "user_remove", "ok") in done and ("root", "user_passwd", "ok") in done


def test_alarm_page_fragment_carries_new_history(web) -> None:
    import json

    console, store = web
    alarm_id = _open_alarm(store)
    with _client(console) as c:
        _sign_in(c, "vic")
        first = json.loads(c.get(f"/alarm/{alarm_id}/fragment").text)
        AlarmStore(store).note(alarm_id, "sent", "alarm: 1 part(s)", contact="Per Jensen", channel="sms-modem")
        second = json.loads(c.get(f"/alarm/{alarm_id}/fragment").text)
        assert second["entries"] == first["entries"] + 1 and "sms-modem" in second["history"]
        assert c.get("/alarm/lw-0001:404/fragment").status_code == 404


def test_retention_purge_ends_unused_sessions(web) -> None:
    import time

    from relay.retention import Purger, RetentionSection
    from console.security import SESSIONS_INDEX

    console, store = web
    with _client(console) as c:
        _sign_in(c, "ada")
        assert c.get("/").status_code == 200
        assert store.r.zcard(SESSIONS_INDEX) == 1
        counts = Purger(store, RetentionSection(sessions_days=1)).purge_once(now=time.time() + 2 * 86400)
        assert counts["sessions"] == 1 and store.r.zcard(SESSIONS_INDEX) == 0
        assert c.get("/").status_code == 303  # signed out by the purge

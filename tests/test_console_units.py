"""Console parts without a browser: users and argon2 hashes, the ``lonewatch console user``
commands, ``[console]`` config validation, monthly figures and their CSV, the queue order,
the change feed. Real Redis (fixture), injected clocks."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from console import actions, figures, queries
from console.audit import Audit
from console.config import load_console_config
from console.errors import Forbidden, NotFound, UserError
from console.live import Feed
from console.security import LoginThrottle, csrf_ok, origin_ok
from console.users import User, UserStore, console_key
from protocol.configfile import ConfigError
from relay.alarms import AlarmStore
from relay.registry import Contact
from relay.store import Store


@pytest.fixture
def store(redis_module) -> Store:
    s = Store.from_url(redis_module.url)
    s.r.flushall()
    return s


OP = User("ada", "operator", "Ada Operator", 1)
VIEWER = User("vic", "viewer", "Vic Viewer", 1)


def _open(store: Store, alarm_id: str, *, kind: str = "panic", site: str = "Depot", opened: float, policy: str = "arc_then_contacts") -> None:
    fields = {"device": alarm_id.split(":")[0], "kind": kind, "worker": "W", "site": site, "escalate_after_s": 120,
              "max_rounds": 3, "policy": policy}
    AlarmStore(store).open(alarm_id, fields, (Contact("P", "manager", phone="+4520110001"),), escalate=True,
                           detail="t", now=opened)


# --- users ------------------------------------------------------------------------------


def test_password_stored_as_argon2id_hash_only(store: Store) -> None:
    UserStore(store).add("Per", "operator", "correct horse battery", name="Per Jensen")
    raw = json.loads(store.r.hget(console_key("users"), "per"))
    assert raw["hash"].startswith("$argon2id$") and "correct horse" not in json.dumps(raw)
    users = UserStore(store)
    assert users.authenticate("PER", "correct horse battery") == User("per", "operator", "Per Jensen", 1)
    assert users.authenticate("per", "correct horse batterY") is None
    assert users.authenticate("nobody", "correct horse battery") is None
    assert users.authenticate("../bad name", "x") is None


@pytest.mark.parametrize(("login", "role", "password", "says"), [
    ("", "operator", "long enough pw", "user name"),
    ("has space", "operator", "long enough pw", "user name"),
    ("ok", "boss", "long enough pw", "role"),
    ("ok", "viewer", "short", "at least 10"),
])
def test_bad_user_input_refused(store: Store, login: str, role: str, password: str, says: str) -> None:
    with pytest.raises(UserError, match=says):
        UserStore(store).add(login, role, password)
    assert UserStore(store).all() == []


def test_duplicate_and_missing_users(store: Store) -> None:
    users = UserStore(store)
    users.add("ada", "operator", "long enough pw")
    with pytest.raises(UserError, match="exists"):
        users.add("ada", "admin", "another long pw")
    with pytest.raises(NotFound):
        users.remove("bob")
    with pytest.raises(NotFound):
        users.passwd("bob", "long enough pw")
    users.passwd("ada", "the new long pw")
    assert users.get("ada").gen == 2 and users.session_valid("ada", 1) is None and users.session_valid("ada", 2)


def test_cli_user_add_passwd_remove(store: Store, redis_module, tmp_path: Path) -> None:
    run = CliRunner().invoke
    url = ["--redis", redis_module.url]
    r = run(main, ["console", "user", "add", "lise", "--role", "operator", "--name", "Lise O", "--password-stdin", *url],
            input="a long passphrase\n")
    assert r.exit_code == 0, r.output
    assert UserStore(store).authenticate("lise", "a long passphrase") is not None
    r = run(main, ["console", "user", "add", "lise", "--role", "viewer", "--password-stdin", *url], input="whatever pw 1\n")
    assert r.exit_code == 2 and "exists" in r.output
    r = run(main, ["console", "user", "passwd", "lise", "--password-stdin", *url], input="short\n")
    assert r.exit_code == 2 and "at least" in r.output
    r = run(main, ["console", "user", "passwd", "lise", "--password-stdin", *url], input="another long one\n")
    assert r.exit_code == 0 and UserStore(store).authenticate("lise", "another long one") is not None
    r = run(main, ["console", "user", "list", *url])
    assert "lise" in r.output and "operator" in r.output
    assert run(main, ["console", "user", "remove", "lise", *url]).exit_code == 0
    assert run(main, ["console", "user", "remove", "lise", *url]).exit_code == 1
    actions_done = [e["action"] for e in Audit(store).recent()]
    assert actions_done[:3] == ["user_remove", "user_passwd", "user_add"]
    assert all(e["user"].startswith("cli") for e in Audit(store).recent())


def test_cli_console_run_refuses_a_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n\n[console]\nlisten = "nowhere"\n')
    r = CliRunner().invoke(main, ["console", "run", "-c", str(cfg)])
    assert r.exit_code == 2 and "relay.toml:5: console.listen" in r.output


# --- config -----------------------------------------------------------------------------


def test_console_table_validated_with_lines_and_relay_accepts_it(tmp_path: Path) -> None:
    from relay.config import load_relay_config

    cfg = tmp_path / "relay.toml"
    cfg.write_text('[redis]\nurl = "redis://127.0.0.1:6390/0"\n\n[console]\nlisten = "0.0.0.0:8443"\nlanguage = "da"\n'
                   'tile_url = "https://tiles.example/{z}/{x}/{y}.png"\ncookie_secure = "always"\n')
    c = load_console_config(cfg)
    assert c.settings.port == 8443 and c.settings.host == "0.0.0.0" and c.settings.language == "da"
    assert c.redis_url.endswith(":6390/0") and "6390" not in repr(c)
    assert load_relay_config(cfg).redis.url.endswith(":6390/0")  # the relay ignores [console]
    cfg.write_text('[redis]\nurl = "redis://127.0.0.1:6390/0"\n\n[console]\ntile_url = "https://x/a.png"\n'
                   'cookie_secure = "maybe"\npoll_s = 99\ncolour = "red"\n')
    with pytest.raises(ConfigError) as err:
        load_console_config(cfg)
    text = str(err.value)
    for line, key in ((5, "tile_url"), (6, "cookie_secure"), (7, "poll_s"), (8, "colour")):
        assert f"relay.toml:{line}: console.{key}" in text


# --- security helpers -------------------------------------------------------------------


def test_csrf_and_origin_rules() -> None:
    assert csrf_ok("abc", "abc") and not csrf_ok("abc", "abd") and not csrf_ok("abc", None) and not csrf_ok(None, None)
    assert not csrf_ok("", "")
    assert origin_ok(None, "console.example") and origin_ok("https://console.example", "console.example")
    assert not origin_ok("https://evil.example", "console.example") and not origin_ok("null", "console.example")


def test_throttle_counts_per_name_and_address(store: Store) -> None:
    """Failures count per (name, address): an attacker elsewhere cannot lock the real user out;
    an address that sprays many names is blocked for every name."""
    now = [1000.0]
    t = LoginThrottle(store, max_failures=2, window_s=60, addr_max_failures=3, clock=lambda: now[0])
    t.failed("ada", "10.0.0.1")
    assert not t.blocked("ada", "10.0.0.1")
    t.failed("ada", "10.0.0.1")
    assert t.blocked("ada", "10.0.0.1"), "the pair waits after max_failures"
    assert not t.blocked("ada", "10.0.0.3"), "the real user elsewhere is not locked out"
    t.failed("bob", "10.0.0.1")
    assert t.blocked("carl", "10.0.0.1"), "the address is blocked for any name after spraying"
    assert not t.blocked("carl", "10.0.0.2")


# --- actions ----------------------------------------------------------------------------


def test_take_charge_is_the_relay_acknowledgement(store: Store) -> None:
    _open(store, "lw-0001:1", opened=1000.0)
    assert actions.take_charge(store, OP, "lw-0001:1") == ("acked", "Ada Operator")
    alarm = AlarmStore(store).get("lw-0001:1")
    assert alarm.state == "acked" and alarm.get("ack_via") == "console"
    assert store.r.zscore("lw:{esc}:due", "lw-0001:1") is None, "escalation did not stop"
    assert actions.take_charge(store, User("bo", "admin", "Bo", 1), "lw-0001:1") == ("already", "Ada Operator")
    assert actions.take_charge(store, OP, "lw-0001:404") == ("missing", "")
    with pytest.raises(Forbidden):
        actions.take_charge(store, VIEWER, "lw-0001:1")
    with pytest.raises(Forbidden):
        actions.add_note(store, VIEWER, "lw-0001:1", "x")
    with pytest.raises(UserError):
        actions.add_note(store, OP, "lw-0001:1", "   ")
    assert actions.add_note(store, OP, "lw-0001:404", "x") is False


def test_resolve_a_cancelled_alarm_without_taking_charge(store: Store) -> None:
    _open(store, "lw-0001:2", opened=1000.0)
    AlarmStore(store).close("lw-0001:2", "cancelled", "cancelled by the worker")
    assert actions.resolve(store, OP, "lw-0001:2", "false_alarm", "  pressed\n by mistake ") == ("resolved", "false_alarm")
    alarm = AlarmStore(store).get("lw-0001:2")
    assert alarm.state == "cancelled" and not alarm.get("acked_by") and alarm.get("resolve_note") == "pressed by mistake"
    assert actions.resolve(store, OP, "lw-0001:2", "genuine") == ("already", "false_alarm")
    assert actions.resolve(store, OP, "lw-0001:3", "genuine") == ("missing", "")


# --- queue order --------------------------------------------------------------------------


def test_queue_most_urgent_then_newest(store: Store) -> None:
    for i, t in enumerate((100.0, 200.0, 300.0, 400.0)):
        _open(store, f"lw-0001:{i}", opened=t)
    AlarmStore(store).ack("lw-0001:3", "P", "sms")           # newest, but someone has it
    AlarmStore(store).close("lw-0001:2", "cancelled", "x")   # the worker cancelled
    actions.resolve(store, OP, "lw-0001:0", "test")          # resolved: leaves the queue
    rows = queries.queue(queries.load_alarms(store), now=500.0)
    assert [r["id"] for r in rows] == ["lw-0001:1", "lw-0001:3", "lw-0001:2"]
    assert rows[0]["needs_someone"] and rows[0]["since_s"] == 300.0 and rows[0]["told"] == []


# --- figures ------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    assert figures.percentile([], 90) is None
    assert figures.percentile([5.0], 90) == 5.0
    assert figures.percentile([float(i) for i in range(1, 11)], 90) == 9.0
    assert figures.percentile([float(i) for i in range(1, 11)], 50) == 5.0


def test_monthly_figures_by_kind_outcome_site_and_csv(store: Store) -> None:
    start, _ = figures.month_range("2026-11")
    plan = [  # id, kind, site, seconds to take charge (None: not taken), outcome
        ("a:1", "panic", "Depot", 30, "genuine"), ("a:2", "panic", "Depot", 60, "false_alarm"),
        ("a:3", "man_down", "Depot", 90, "test"), ("b:1", "lost_contact", "Office", None, None),
        ("b:2", "silent_panic", "Office", 120, "false_alarm"),
    ]
    for i, (alarm_id, kind, site, ttc, outcome) in enumerate(plan):
        opened = start + 86400 * (i + 1)
        _open(store, alarm_id, kind=kind, site=site, opened=opened)
        if ttc is not None:
            AlarmStore(store).ack(alarm_id, "P", "console", now=opened + ttc)
            actions.resolve(store, OP, alarm_id, outcome)
    _open(store, "c:1", opened=start - 10)  # October: not counted
    fig = figures.monthly(store, "2026-11")
    assert fig["alarms"] == 5 and fig["by_kind"] == {"lost_contact": 1, "man_down": 1, "panic": 2, "silent_panic": 1}
    assert fig["by_outcome"]["false_alarm"] == 2 and fig["by_outcome"]["unresolved"] == 1
    assert fig["ttc_median_s"] == 75.0 and fig["ttc_p90_s"] == 120.0
    assert fig["false_alarm_share"] == 0.5
    assert fig["sites"]["Depot"]["alarms"] == 3 and fig["sites"]["Office"]["false_alarm_share"] == 1.0
    rows = list(csv.DictReader(io.StringIO(figures.figures_csv(fig))))
    assert [r["site"] for r in rows] == ["(all sites)", "Depot", "Office"]
    assert rows[1]["take_charge_median_s"] == "60.0" and rows[0]["false_alarm_share"] == "0.500"
    # The facts outlive the alarm records (which expire after 30 days) and hold no names.
    for alarm_id, *_ in plan:
        store.r.delete(f"lw:{{esc}}:alarm:{alarm_id}")
    again = figures.monthly(store, "2026-11")
    assert again["alarms"] == 5 and again["ttc_median_s"] == 75.0
    facts = store.r.hgetall(console_key("facts:2026-11"))
    assert all(b'"worker"' not in v for v in facts.values())
    with pytest.raises(ValueError):
        figures.monthly(store, "November")


def test_figures_count_a_workers_cancel_as_false_alarm(store: Store) -> None:
    start, _ = figures.month_range("2026-10")
    _open(store, "d:1", opened=start + 100)
    AlarmStore(store).close("d:1", "cancelled", "worker")
    fig = figures.monthly(store, "2026-10")
    assert fig["by_outcome"]["cancelled_by_worker"] == 1 and fig["false_alarm_share"] == 1.0


def test_csv_cells_cannot_become_formulas(store: Store) -> None:
    start, _ = figures.month_range("2026-09")
    _open(store, "e:1", site="=HYPERLINK(\"http://x\")", opened=start + 100)
    text = figures.figures_csv(figures.monthly(store, "2026-09"))
    assert "\n2026-09,'=HYPERLINK" in text.replace("\r", "").replace('"', "")


# --- feed ---------------------------------------------------------------------------------


def test_feed_version_grows_on_visible_changes_only(store: Store) -> None:
    async def scenario() -> list[int]:
        feed = Feed(store, poll_s=10)
        await feed.start(background=False)  # this test does the polling
        seen = [feed.snapshot.version]
        assert await feed.poll_once() is False  # nothing changed
        _open(store, "f:1", opened=1000.0)
        assert await feed.poll_once() is True
        seen.append(feed.snapshot.version)
        AlarmStore(store).set_fields("f:1", arc_state="acked")
        assert await feed.poll_once() is True
        seen.append(feed.snapshot.version)
        snap = await feed.wait_change(feed.snapshot.version, 0.05)  # times out: same snapshot
        seen.append(snap.version)
        await feed.stop()
        return seen

    v0, v1, v2, v3 = asyncio.run(scenario())
    assert v0 < v1 < v2 == v3

"""``lonewatch registry …`` and ``lonewatch alarm …`` through click's CliRunner against a real
Redis: import/export/list/add/remove, validation errors with file:line and exit 2, alarm
list/ack/history, --json output, exit 3 when Redis is unreachable, an example in every --help."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from protocol.messages import Event
from cli.main import main
from relay.escalation import Escalation
from labstack.servers import CONF_DIR, RedisServer, free_port
from relay.registry import RegistryStore
from relay.store import Store

EXAMPLE = str(CONF_DIR / "registry.example.toml")


@pytest.fixture
def url(redis_module: RedisServer) -> str:
    Store.from_url(redis_module.url).r.flushall()
    return redis_module.url


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_every_command_has_an_example_in_its_help() -> None:
    def walk(cmd: click.Command, path: list[str]) -> Iterator[list[str]]:
        yield path
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])

    for group in ("registry", "alarm"):
        for path in walk(main.commands[group], [group]):
            result = run(*path, "--help")
            assert result.exit_code == 0 and "Example" in result.output, path


def test_import_list_export_round_trip(url: str, tmp_path: Path) -> None:
    result = run("registry", "import", EXAMPLE, "--redis", url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"accounts": 1, "workers": 2, "sites": 2, "devices": 2, "removed_devices": 0}
    contacts = json.loads(run("registry", "list", "contacts", "--json", "--redis", url).output)
    assert [(c["of"], c["position"], c["name"]) for c in contacts] == [
        ("worker:Anna Hansen", 1, "Mette Hansen"), ("site:Plejehjemmet Solgården", 1, "Karin Olsen"),
        ("site:Vaskeriet Vesterbro", 1, "Per Jensen"), ("site:Vaskeriet Vesterbro", 2, "Omar Haddad")]
    out = tmp_path / "export.toml"
    assert run("registry", "export", "-o", str(out), "--redis", url).exit_code == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # names and phone numbers
    assert run("registry", "import", str(out), "--replace", "--redis", url).exit_code == 0
    assert run("registry", "export", "--redis", url).output == out.read_text()
    assert "lw-0001" in run("registry", "list", "--redis", url).output


def test_bad_file_is_refused_with_its_lines_and_nothing_written(url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[workers]]\nname = "Anna"\nnumber = 0\n\n[[devices]]\nid = "LW"\nworker = "Ole"\n')
    result = run("registry", "import", str(bad), "--redis", url)
    assert result.exit_code == 2
    assert f"{bad}:3: workers[0].number: must be an integer 1..999, got 0" in result.output
    assert f"{bad}:6: devices[0].id:" in result.output and f'{bad}:7: devices[0].worker: unknown worker "Ole"' in result.output
    assert json.loads(run("registry", "list", "workers", "--json", "--redis", url).output) == []


def test_a_partial_file_merges_into_the_stored_registry(url: str, tmp_path: Path) -> None:
    run("registry", "import", EXAMPLE, "--redis", url)
    part = tmp_path / "part.toml"
    part.write_text('[[workers]]\nname = "Ole"\nnumber = 19\n\n[[devices]]\nid = "lw-0003"\nworker = "Ole"\n'
                    'site = "Vaskeriet Vesterbro"\n')
    result = run("registry", "import", str(part), "--redis", url)
    assert result.exit_code == 0, result.output
    assert Store.from_url(url).device("lw-0003").account == "1234AB"  # type: ignore[union-attr]
    assert run("registry", "import", str(part), "--replace", "--redis", url).exit_code == 2  # alone it is incomplete


def test_add_update_and_remove(url: str) -> None:
    r = url
    assert run("registry", "add", "account", "abc123", "--name", "Firma", "--redis", r).exit_code == 0
    assert run("registry", "add", "worker", "Ole", "--number", "5", "--language", "pl", "--redis", r).exit_code == 0
    assert run("registry", "add", "site", "Kontoret", "--address", "Gade 1", "--policy", "contacts_only",
               "--escalate-after", "30", "--redis", r).exit_code == 0
    assert run("registry", "add", "contact", "Per", "--site", "Kontoret", "--role", "manager",
               "--phone", "+45 20 11 00 01", "--redis", r).exit_code == 0
    assert run("registry", "add", "contact", "Eva", "--site", "Kontoret", "--role", "guard",
               "--email", "eva@example.org", "--position", "1", "--redis", r).exit_code == 0
    assert run("registry", "add", "device", "lw-0007", "--worker", "Ole", "--site", "Kontoret",
               "--account", "abc123", "--redis", r).exit_code == 0
    assert run("registry", "add", "site", "Kontoret", "--address", "Gade 2", "--policy", "contacts_only",
               "--redis", r).exit_code == 0  # an update keeps the contacts
    resolved = RegistryStore(Store.from_url(r)).resolve("lw-0007")
    assert resolved is not None and resolved.site.address == "Gade 2"  # type: ignore[union-attr]
    assert [(c.name, c.phone) for c in resolved.contacts] == [("Eva", ""), ("Per", "+4520110001")]
    assert resolved.entry.zone == 5 and resolved.entry.account == "ABC123"

    bad = run("registry", "add", "contact", "Kim", "--site", "Kontoret", "--role", "guard", "--phone", "12", "--redis", r)
    assert bad.exit_code == 2 and "not a phone number" in bad.output
    assert run("registry", "add", "contact", "Kim", "--site", "Nowhere", "--role", "guard", "--phone", "+4520110009",
               "--redis", r).exit_code == 2
    assert run("registry", "add", "contact", "Kim", "--role", "guard", "--redis", r).exit_code == 2  # no --site/--worker
    clash = run("registry", "remove", "worker", "Ole", "--redis", r)
    assert clash.exit_code == 2 and 'unknown worker "Ole"' in clash.output  # still worn by lw-0007
    assert run("registry", "remove", "contact", "Eva", "--of", "Kontoret", "--redis", r).exit_code == 0
    assert run("registry", "remove", "device", "lw-0007", "--redis", r).exit_code == 0
    assert Store.from_url(r).device("lw-0007") is None
    assert run("registry", "remove", "device", "lw-0007", "--redis", r).exit_code == 1


def test_alarm_list_ack_history(url: str) -> None:
    store = Store.from_url(url)
    run("registry", "import", EXAMPLE, "--redis", url)
    esc = Escalation(store, RegistryStore(store), {}, name="t")
    esc.on_event(Event(device="lw-0001", seq=42, kind="man_down", ts=1_800_000_000.0))
    esc.tick()
    rows = json.loads(run("alarm", "list", "--json", "--redis", url).output)
    assert [(r["id"], r["state"], r["kind"], r["told"], r["contacts"]) for r in rows] == [
        ("lw-0001:42", "open", "man_down", 1, 3)]
    assert "lw-0001:42" in run("alarm", "list", "--redis", url).output

    first = run("alarm", "ack", "lw-0001:42", "--by", "Per Jensen", "--json", "--redis", url)
    assert first.exit_code == 0 and json.loads(first.output) == {"alarm": "lw-0001:42", "outcome": "acked", "by": "Per Jensen"}
    again = run("alarm", "ack", "lw-0001:42", "--by", "Omar", "--redis", url)
    assert again.exit_code == 0 and "already acknowledged by Per Jensen" in again.output
    assert run("alarm", "ack", "lw-0001:99", "--by", "Omar", "--redis", url).exit_code == 1
    assert run("alarm", "ack", "lw-0001:42", "--by", " ", "--redis", url).exit_code == 2
    assert json.loads(run("alarm", "list", "--json", "--redis", url).output) == []
    assert len(json.loads(run("alarm", "list", "--all", "--json", "--redis", url).output)) == 1

    history = json.loads(run("alarm", "history", "lw-0001:42", "--json", "--redis", url).output)
    assert [h["what"] for h in history] == ["opened", "escalated", "acknowledged"]
    assert history[-1]["contact"] == "Per Jensen" and history[-1]["detail"].startswith("by cli")
    assert "acknowledged" in run("alarm", "history", "lw-0001:42", "--redis", url).output
    assert run("alarm", "history", "nope", "--redis", url).exit_code == 1


def test_redis_unreachable_and_bad_config(tmp_path: Path) -> None:
    down = run("alarm", "list", "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert down.exit_code == 3 and "unreachable" in down.output
    cfg = tmp_path / "relay.toml"
    cfg.write_text("[redis]\nurl = 5\n")
    bad = run("registry", "list", "-c", str(cfg))
    assert bad.exit_code == 2 and f"{cfg}:2: redis.url" in bad.output

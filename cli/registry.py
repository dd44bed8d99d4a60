"""``lonewatch registry …`` and ``lonewatch alarm …`` (SPEC §5 registry admin; issue 4).

Both talk to the relay's Redis: ``--redis URL`` (or ``LONEWATCH_REDIS_URL``), else the
``[redis] url`` of ``-c relay.toml`` (default ``/etc/lonewatch/relay.toml``). Human output by
default, ``--json`` for scripts. Exit codes as :mod:`cli.main`: 0 done, 1 the thing asked
for did not happen (unknown alarm, already closed), 2 usage or validation error (file:line),
3 Redis unreachable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from protocol.errors import LonewatchError

EXIT_FAILED, EXIT_CONFIG, EXIT_MISSING = 1, 2, 3
_KINDS = ("workers", "sites", "contacts", "accounts", "devices")


def _redis_options(fn: Callable) -> Callable:
    fn = click.option("-c", "--config", "config_path", default="/etc/lonewatch/relay.toml", show_default=True,
                      envvar="LONEWATCH_RELAY_CONFIG", type=click.Path(dir_okay=False),
                      help="relay.toml whose [redis] url to use.")(fn)
    return click.option("--redis", "redis_url", envvar="LONEWATCH_REDIS_URL", metavar="URL",
                        help="Redis URL (overrides the config file), e.g. redis://localhost:6379/0.")(fn)


def _store(config_path: str, redis_url: str | None):
    from relay.config import load_relay_config
    from relay.store import Store

    if not redis_url:
        try:
            redis_url = load_relay_config(config_path).redis.url
        except LonewatchError as exc:
            _fail(str(exc), EXIT_CONFIG)
    store = Store.from_url(redis_url)  # type: ignore[arg-type]
    try:
        store.ping()
    except LonewatchError as exc:
        _fail(f"relay Redis unreachable: {exc}", EXIT_MISSING)
    return store


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` and turn registry/Redis errors into messages and exit codes."""
    from protocol.configfile import ConfigError

    from relay.store import StoreError

    try:
        return fn()
    except ConfigError as exc:
        _fail("the registry would be invalid, nothing changed:\n" + str(exc), EXIT_CONFIG)
    except StoreError as exc:
        _fail(f"relay Redis: {exc}", EXIT_MISSING)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=None))


# =========================================================================== registry


@click.group("registry")
def registry() -> None:
    """Workers, sites, contacts, ARC accounts and devices in the relay's Redis.

    \b
    Example:
      lonewatch registry import /etc/lonewatch/registry.toml
      lonewatch registry list contacts --json
    """


@registry.command("import")
@click.argument("path", type=click.Path(dir_okay=False, exists=True))
@click.option("--replace", is_flag=True, help="Make the registry exactly the file (entries not in it are removed).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@_redis_options
def registry_import(path: str, replace: bool, as_json: bool, config_path: str, redis_url: str | None) -> None:
    """Validate a registry TOML file and load it (merged by name unless --replace).

    Every problem is printed as file:line and nothing is written (exit 2).

    \b
    Example:
      lonewatch registry import registry.toml --redis redis://localhost:6379/0
    """
    from relay.registry import RegistryStore, import_registry_file, load_registry_toml

    if replace:
        _guard(lambda: load_registry_toml(path))  # the file alone must be complete
    store = _store(config_path, redis_url)
    counts = _guard(lambda: import_registry_file(RegistryStore(store), path, replace=replace))
    if as_json:
        _echo_json(counts)
    else:
        click.echo(", ".join(f"{v} {k}" for k, v in counts.items()) + f" (from {path})")


@registry.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (mode 0600) instead of stdout.")
@_redis_options
def registry_export(output: str | None, config_path: str, redis_url: str | None) -> None:
    """Print the registry as TOML that `registry import` reads back.

    The file holds names, phone numbers and e-mail addresses: it is created mode 0600.

    \b
    Example:
      lonewatch registry export -o registry-backup.toml
    """
    from relay.registry import RegistryStore, dump_registry_toml

    store = _store(config_path, redis_url)
    text = dump_registry_toml(_guard(lambda: RegistryStore(store).load()))
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        from cli.outputs import cannot_write

        cannot_write(exc, output)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    click.echo(f"wrote {output}")


@registry.command("list")
@click.argument("kind", type=click.Choice(_KINDS), default="devices")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@_redis_options
def registry_list(kind: str, as_json: bool, config_path: str, redis_url: str | None) -> None:
    """List one kind of registry entry (contacts with the site/worker they belong to).

    \b
    Example:
      lonewatch registry list sites
    """
    from relay.registry import RegistryStore

    store = _store(config_path, redis_url)
    data = _guard(lambda: RegistryStore(store).load()).to_dict()
    if kind == "contacts":
        rows = [{"of": f"{owner[:-1]}:{item['name']}", "position": i + 1, **c}
                for owner in ("workers", "sites") for item in data.get(owner, [])
                for i, c in enumerate(item.get("contacts", []))]
    else:
        rows = [{k: v for k, v in item.items() if k != "contacts"} | (
                {"contacts": len(item["contacts"])} if "contacts" in item else {}) for item in data.get(kind, [])]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"no {kind}")
    for row in rows:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))


@registry.group("add")
def registry_add() -> None:
    """Add or update one entry (the whole registry is validated before anything is written).

    \b
    Example:
      lonewatch registry add worker "Anna Hansen" --number 17 --language da
    """


def _change(config_path: str, redis_url: str | None, edit: Callable[[dict[str, Any]], None], what: str) -> None:
    from relay.registry import RegistryStore

    store = _store(config_path, redis_url)
    _guard(lambda: RegistryStore(store).change(edit))
    click.echo(what)


def _upsert(data: dict[str, Any], kind: str, key: str, item: dict[str, Any]) -> str:
    items = data.setdefault(kind, [])
    for i, old in enumerate(items):
        if old.get(key) == item[key]:
            if "contacts" in old and "contacts" not in item:
                item["contacts"] = old["contacts"]  # updating a site/worker keeps its contacts
            if "voice_numbers" in old and "voice_numbers" not in item:
                item["voice_numbers"] = old["voice_numbers"]  # and its voice lines (issue 11)
            items[i] = item
            return "updated"
    items.append(item)
    return "added"


def _clean(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v not in (None, "")}


@registry_add.command("worker")
@click.argument("name")
@click.option("--number", type=int, required=True, help="Worker number = Contact ID zone (1-999).")
@click.option("--language", default="da", show_default=True, help="da, en, pl, ro, uk or ar.")
@_redis_options
def add_worker(name: str, number: int, language: str, config_path: str, redis_url: str | None) -> None:
    """Add or update a worker.

    \b
    Example:
      lonewatch registry add worker "Anna Hansen" --number 17 --language da
    """
    item = _clean(name=name, number=number, language=language)
    _change(config_path, redis_url, lambda d: _upsert(d, "workers", "name", item), f"worker {name!r} saved")


@registry_add.command("site")
@click.argument("name")
@click.option("--address", default="", help="Street address shown to contacts.")
@click.option("--escape-routes", default="", help="Escape-route notes shown to contacts.")
@click.option("--alarm-system", default="", help="Alarm-system notes shown to contacts.")
@click.option("--policy", type=click.Choice(["arc_then_contacts", "contacts_only", "arc_only"]),
              default="arc_then_contacts", show_default=True)
@click.option("--escalate-after", "escalate_after_s", type=int, default=120, show_default=True,
              help="Seconds without acknowledgement before the next contact is told.")
@click.option("--account", default="", help="Default SIA account of the site's devices.")
@click.option("--timezone", default="", help="IANA time zone for times in messages, e.g. Europe/Copenhagen.")
@click.option("--lat", type=float, help="Latitude (map link when a device has no fix).")
@click.option("--lon", type=float, help="Longitude.")
@click.option("--voice-number", "voice_numbers", multiple=True,
              help="A voice line called after the account's for listen-in (repeat; replaces the list).")
@_redis_options
def add_site(name: str, address: str, escape_routes: str, alarm_system: str, policy: str, escalate_after_s: int,
             account: str, timezone: str, lat: float | None, lon: float | None, config_path: str,
             redis_url: str | None, voice_numbers: tuple[str, ...] = ()) -> None:
    """Add or update a site (its contacts are kept).

    \b
    Example:
      lonewatch registry add site "Vaskeriet" --address "Vestergade 12, København" --policy contacts_only
    """
    item = _clean(name=name, address=address, escape_routes=escape_routes, alarm_system=alarm_system, policy=policy,
                  escalate_after_s=escalate_after_s, account=account, timezone=timezone, lat=lat, lon=lon)
    if voice_numbers:
        item["voice_numbers"] = list(voice_numbers)
    _change(config_path, redis_url, lambda d: _upsert(d, "sites", "name", item), f"site {name!r} saved")


@registry_add.command("contact")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["manager", "employer", "safety_representative", "guard", "colleague"]))
@click.option("--site", help="Add to this site's contact list.")
@click.option("--worker", help="Add to this worker's contact list.")
@click.option("--phone", default="", help="Phone number, e.g. +4520123456.")
@click.option("--email", default="", help="E-mail address.")
@click.option("--language", default="da", show_default=True, help="da, en, pl, ro, uk or ar.")
@click.option("--position", type=int, help="Place in the list, 1 = told first (default: last; same name: kept).")
@_redis_options
def add_contact(name: str, role: str, site: str | None, worker: str | None, phone: str, email: str, language: str,
                position: int | None, config_path: str, redis_url: str | None) -> None:
    """Add or update a contact of a site or of a worker.

    \b
    Example:
      lonewatch registry add contact "Per Jensen" --site Vaskeriet --role manager --phone "+45 20 12 34 57"
    """
    if bool(site) == bool(worker):
        raise click.UsageError("give exactly one of --site and --worker")
    kind, owner = ("sites", site) if site else ("workers", worker)
    contact = _clean(name=name, role=role, phone=phone, email=email, language=language)

    def edit(d: dict[str, Any]) -> None:
        for item in d.get(kind, []):
            if item["name"] == owner:
                contacts = item.setdefault("contacts", [])
                old = next((i for i, c in enumerate(contacts) if c["name"] == name), None)
                if old is not None:
                    contacts.pop(old)
                at = (position - 1) if position else (old if old is not None else len(contacts))
                contacts.insert(max(0, min(at, len(contacts))), contact)
                return
        _fail(f"no {kind[:-1]} named {owner!r}", EXIT_CONFIG)

    _change(config_path, redis_url, edit, f"contact {name!r} of {kind[:-1]} {owner!r} saved")


@registry_add.command("account")
@click.argument("account")
@click.option("--name", default="", help="Customer name as the ARC knows it.")
@click.option("--notes", default="")
@click.option("--voice-number", "voice_numbers", multiple=True,
              help="The ARC's voice line for listen-in calls, in order (repeat; replaces the list).")
@_redis_options
def add_account(account: str, name: str, notes: str, config_path: str, redis_url: str | None,
                voice_numbers: tuple[str, ...] = ()) -> None:
    """Add or update an ARC (SIA DC-09) account.

    \b
    Example:
      lonewatch registry add account 1234AB --name "Rengøring Nord ApS"
    """
    item = _clean(account=account.upper(), name=name, notes=notes)
    if voice_numbers:
        item["voice_numbers"] = list(voice_numbers)
    _change(config_path, redis_url, lambda d: _upsert(d, "accounts", "account", item), f"account {account.upper()} saved")


@registry_add.command("device")
@click.argument("device_id")
@click.option("--worker", required=True, help="Worker (must exist).")
@click.option("--site", default="", help="Site (must exist).")
@click.option("--account", default="", help="SIA account (default: the site's).")
@_redis_options
def add_device(device_id: str, worker: str, site: str, account: str, config_path: str, redis_url: str | None) -> None:
    """Add or update a device: whose it is, where, which ARC account.

    \b
    Example:
      lonewatch registry add device lw-0001 --worker "Anna Hansen" --site Vaskeriet
    """
    item = _clean(id=device_id, worker=worker, site=site, account=account.upper())
    _change(config_path, redis_url, lambda d: _upsert(d, "devices", "id", item), f"device {device_id} saved")


@registry.command("remove")
@click.argument("kind", type=click.Choice(["worker", "site", "account", "device", "contact"]))
@click.argument("name")
@click.option("--of", "owner", help="For a contact: the site or worker it belongs to.")
@_redis_options
def registry_remove(kind: str, name: str, owner: str | None, config_path: str, redis_url: str | None) -> None:
    """Remove an entry (refused while devices still refer to it).

    \b
    Example:
      lonewatch registry remove contact "Per Jensen" --of Vaskeriet
    """
    key = {"account": "account", "device": "id"}.get(kind, "name")

    def edit(d: dict[str, Any]) -> None:
        if kind == "contact":
            for owner_kind in ("sites", "workers"):
                for item in d.get(owner_kind, []):
                    if owner in (None, item["name"]):
                        before = len(item.get("contacts", []))
                        item["contacts"] = [c for c in item.get("contacts", []) if c["name"] != name]
                        if len(item["contacts"]) < before:
                            return
            _fail(f"no contact {name!r}" + (f" of {owner!r}" if owner else ""), EXIT_FAILED)
        items = d.get(kind + "s", [])
        kept = [i for i in items if str(i.get(key, "")).upper() != name.upper()] if kind == "account" else [
            i for i in items if i.get(key) != name]
        if len(kept) == len(items):
            _fail(f"no {kind} {name!r}", EXIT_FAILED)
        d[kind + "s"] = kept

    _change(config_path, redis_url, edit, f"{kind} {name!r} removed")


# =========================================================================== alarm


@click.group("alarm")
def alarm() -> None:
    """Open alarms, acknowledgement and history (escalation to contacts).

    \b
    Example:
      lonewatch alarm list
      lonewatch alarm ack lw-0001:42 --by "Per Jensen"
    """


def _when(ts: str) -> str:
    try:
        return datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return ts


def _alarm_dict(a: Any) -> dict[str, Any]:
    keys = ("device", "worker", "site", "policy", "opened_at", "occurred_at", "acked_by", "acked_at", "arc_state")
    return {"id": a.id, "state": a.state, "kind": a.kind, "ref": a.ref, "told": a.notified,
            "contacts": len(a.contacts), **{k: a.get(k) for k in keys if a.get(k)}}


@alarm.command("list")
@click.option("--all", "all_", is_flag=True, help="Also alarms that are acknowledged, cancelled or restored.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@_redis_options
def alarm_list(all_: bool, limit: int, as_json: bool, config_path: str, redis_url: str | None) -> None:
    """List open alarms (still escalating, or nobody answered), newest first.

    \b
    Example:
      lonewatch alarm list --all --json
    """
    from relay.alarms import AlarmStore

    store = _store(config_path, redis_url)
    alarms = _guard(lambda: AlarmStore(store).recent(limit, open_only=not all_))
    rows = [_alarm_dict(a) for a in alarms]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no open alarms" if not all_ else "no alarms")
    for r in rows:
        ack = f"  acknowledged by {r['acked_by']}" if r.get("acked_by") else ""
        click.echo(f"{r['id']:<24} {r['state']:<11} {r['kind']:<15} ref {r['ref']:<4} {r.get('worker', '')} @ "
                   f"{r.get('site', '')}  opened {_when(r.get('opened_at', ''))}  told {r['told']}/{r['contacts']}{ack}")


@alarm.command("ack")
@click.argument("alarm_id")
@click.option("--by", "by", required=True, help="Who takes the alarm (name shown to the other contacts).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@_redis_options
def alarm_ack(alarm_id: str, by: str, as_json: bool, config_path: str, redis_url: str | None) -> None:
    """Acknowledge an alarm: escalation stops, the contacts told so far are told who took it.

    Exit 1 if the alarm is unknown or was cancelled/restored; acknowledging twice is fine
    (exit 0, says who was first).

    \b
    Example:
      lonewatch alarm ack lw-0001:42 --by "Per Jensen"
    """
    from relay.alarms import AlarmStore

    if not by.strip():
        raise click.BadParameter("must not be empty", param_hint="--by")
    store = _store(config_path, redis_url)
    outcome, who = _guard(lambda: AlarmStore(store).ack(alarm_id, by.strip(), "cli"))
    if as_json:
        _echo_json({"alarm": alarm_id, "outcome": outcome, "by": who})
    else:
        click.echo({"acked": f"{alarm_id} acknowledged by {who}",
                    "already": f"{alarm_id} was already acknowledged by {who}",
                    "closed": f"{alarm_id} is {who}: nothing to acknowledge",
                    "missing": f"no alarm {alarm_id}"}[outcome])
    if outcome in ("closed", "missing"):
        sys.exit(EXIT_FAILED)


@alarm.command("history")
@click.argument("alarm_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of entries.")
@_redis_options
def alarm_history(alarm_id: str, as_json: bool, config_path: str, redis_url: str | None) -> None:
    """Everything that happened to an alarm: opened, contacts told, delivery results, ARC
    answers, replies, acknowledgement, cancel/restore.

    \b
    Example:
      lonewatch alarm history lw-0001:42
    """
    from relay.alarms import AlarmStore

    store = _store(config_path, redis_url)
    entries = _guard(lambda: AlarmStore(store).history(alarm_id))
    if not entries:
        _fail(f"no history for alarm {alarm_id}", EXIT_FAILED)
    if as_json:
        _echo_json(entries)
        return
    for e in entries:
        who = f" [{e['contact']}]" if e.get("contact") else ""
        via = f" ({e['channel']})" if e.get("channel") else ""
        click.echo(f"{_when(e.get('at', ''))}  {e.get('what', ''):<16}{who}{via} {e.get('detail', '')}")


from cli.places import places as _places  # noqa: E402  (issue 12: lonewatch registry places …)

registry.add_command(_places)

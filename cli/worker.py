"""``lonewatch worker export|erase`` and ``lonewatch retention purge`` (issue 13, data
protection: docs/data-protection.md; :mod:`relay.privacy`, :mod:`relay.retention`).

Both talk to the relay's Redis like ``lonewatch registry`` (``--redis URL`` or the ``[redis]
url`` of ``-c relay.toml``; the ``[retention]`` days come from that file when it is readable,
else the defaults). Exit codes as :mod:`cli.main`: 0 done, 1 refused (unknown worker, open
alarm), 2 config error, 3 Redis unreachable.
"""

from __future__ import annotations

import json
import os

import click

from cli.registry import EXIT_CONFIG, EXIT_FAILED, _echo_json, _fail, _guard, _redis_options, _store


def _retention(config_path: str):
    from protocol.errors import LonewatchError

    from relay.config import load_relay_config
    from relay.retention import RetentionSection

    if not os.path.exists(config_path):
        return RetentionSection()
    try:
        return load_relay_config(config_path).retention
    except LonewatchError as exc:
        _fail(str(exc), EXIT_CONFIG)


@click.group("worker")
def worker() -> None:
    """What the relay holds about a worker: export it (JSON) or erase it.

    \b
    Examples:
      lonewatch worker export "Anna Hansen" -o anna.json
      lonewatch worker erase "Anna Hansen" --yes
    """


@worker.command("export")
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the JSON here (mode 0600) instead of stdout.")
@_redis_options
def worker_export(name: str, output: str | None, config_path: str, redis_url: str | None) -> None:
    """Everything held about the worker NAME as JSON: registry entry and contacts, devices,
    last state, events, event log entries, alarms with their history, dead letters."""
    from relay.privacy import UnknownWorker, export_worker

    store = _store(config_path, redis_url)
    try:
        data = _guard(lambda: export_worker(store, name, retention=_retention(config_path)))
    except UnknownWorker as exc:
        _fail(str(exc), EXIT_FAILED)
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if output:
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # personal data: owner only
        except OSError as exc:
            from cli.outputs import cannot_write

            cannot_write(exc, output)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        click.echo(f"{output}: {len(data['event_log'])} log entries, {len(data['alarms'])} alarms", err=True)
    else:
        click.echo(text)


@worker.command("erase")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_redis_options
def worker_erase(name: str, yes: bool, as_json: bool, config_path: str, redis_url: str | None) -> None:
    """Erase the worker NAME and their devices from the registry and delete their events,
    positions and device state. Their alarm records stay, anonymised (the law requires them;
    docs/data-protection.md). Refused while one of their alarms is open."""
    from relay.privacy import ErasureRefused, UnknownWorker, erase_worker

    store = _store(config_path, redis_url)
    if not yes:
        click.confirm(f"Erase {name} (alarm records are kept anonymised)?", abort=True)
    try:
        done = _guard(lambda: erase_worker(store, name))
    except (UnknownWorker, ErasureRefused) as exc:
        _fail(str(exc), EXIT_FAILED)
    if as_json:
        _echo_json(done)
        return
    click.echo(f"erased {name}: {done['alarms_anonymised']} alarm(s) kept as {done['pseudonym']}, "
               f"{done['event_records_deleted'] + done['event_log_deleted']} event entries and "
               f"{done['dead_letters_deleted']} dead letter(s) deleted; devices removed from the registry: "
               f"{', '.join(done['devices_removed']) or 'none'}")
    if done["devices_removed"]:
        # The broker's password file / CA are not in Redis: the credentials still work until
        # the installer removes them (a decommissioned device must not keep publishing).
        click.echo("note: their broker credentials still work — remove them: "
                   + "; ".join(f"mosquitto_passwd -D <broker-dir>/passwd {d} (password) or "
                               f"lonewatch pki revoke {d} (certificate)" for d in done["devices_removed"]), err=True)


@click.group("retention")
def retention() -> None:
    """Data kept no longer than needed: the [retention] days of relay.toml.

    \b
    Example:
      lonewatch retention purge -c /etc/lonewatch/relay.toml
    """


@retention.command("purge")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@_redis_options
def retention_purge(as_json: bool, config_path: str, redis_url: str | None) -> None:
    """Remove now what is older than its retention (the relay also does it every
    purge_interval_s)."""
    from relay.retention import Purger

    section = _retention(config_path)
    store = _store(config_path, redis_url)
    counts = _guard(lambda: Purger(store, section).purge_once())
    if as_json:
        _echo_json(counts)
        return
    for what, n in counts.items():
        click.echo(f"{what:<20} {n}")


__all__ = ["retention", "worker"]

"""``lonewatch registry places import|export|list`` (issue 12): which BLE beacon hangs in which
building, floor and room (:mod:`relay.places`).

Redis and exit codes as :mod:`cli.registry`: 0 done, 2 the file is invalid (every problem with
its ``file:line``; a beacon listed twice names both lines; nothing is stored), 3 Redis
unreachable.
"""

from __future__ import annotations

import sys

import click

from cli.registry import _echo_json, _guard, _redis_options, _store


@click.group("places")
def places() -> None:
    """BLE beacons → site, building, floor, room, note (the worker's place in an alarm).

    \b
    Example:
      lonewatch registry places import places.toml
      lonewatch registry places list --json
    """


@places.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Drop the places not in the file (default: merge by beacon).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_redis_options
def places_import(path: str, replace: bool, as_json: bool, config_path: str, redis_url: str | None) -> None:
    """Validate a places TOML file ([[places]] tables) and store its places.

    Every problem is printed as file:line (a beacon listed twice names its first line) and
    nothing is written (exit 2). Sites must exist in the registry.

    \b
    Example:
      lonewatch registry places import places.toml --redis redis://localhost:6379/0
    """
    from relay.places import PlaceStore, load_places_toml
    from relay.registry import RegistryStore

    store = _store(config_path, redis_url)

    def run() -> tuple[int, int]:
        sites = [s.name for s in RegistryStore(store).load().sites]
        loaded = load_places_toml(path, sites=sites)
        return len(loaded), PlaceStore(store).save(loaded, replace_all=replace)

    n, total = _guard(run)
    if as_json:
        _echo_json({"imported": n, "places": total})
    else:
        click.echo(f"imported {n} place(s) from {path}; the registry holds {total}")


@places.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file (default: stdout).")
@_redis_options
def places_export(output: str | None, config_path: str, redis_url: str | None) -> None:
    """Print every place as TOML that `registry places import` reads back.

    \b
    Example:
      lonewatch registry places export -o places-backup.toml
    """
    from relay.places import PlaceStore, dump_places_toml

    store = _store(config_path, redis_url)
    text = dump_places_toml(_guard(lambda: PlaceStore(store).load()))
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        click.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)


@places.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_redis_options
def places_list(as_json: bool, config_path: str, redis_url: str | None) -> None:
    """One line per beacon: site, building / floor / room, note.

    \b
    Example:
      lonewatch registry places list
    """
    from relay.places import PlaceStore

    store = _store(config_path, redis_url)
    rows = _guard(lambda: PlaceStore(store).load())
    if as_json:
        _echo_json([p.to_dict() for p in rows])
        return
    if not rows:
        click.echo("no places")
        return
    for p in rows:
        click.echo(f"{p.beacon}  {p.site}: {p.label()}" + (f"  ({p.note})" if p.note else ""))

"""``lonewatch card``: the worker card as a PDF (issue 13, :mod:`relay.card`).

The worker comes from the relay's registry in Redis (``--redis URL`` or the ``[redis] url`` of
``-c relay.toml``, as ``lonewatch registry``) or from a registry TOML file (``--registry``).
Exit codes as :mod:`cli.main`: 0 written, 1 unknown worker or no font, 2 usage or config
error, 3 Redis unreachable.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from cli.registry import EXIT_CONFIG, EXIT_FAILED, _fail, _guard, _redis_options, _store
from i18n import LANGUAGES


@click.command("card")
@click.option("--worker", "worker_name", required=True, metavar="NAME", help="The worker (registry name).")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, writable=True),
              help="PDF file to write.")
@click.option("--language", type=click.Choice(LANGUAGES), help="Language of the card (default: the worker's).")
@click.option("--registry", "registry_path", type=click.Path(dir_okay=False, exists=True),
              help="Read the worker from this registry TOML instead of the relay's Redis.")
@click.option("--device-config", "device_config", type=click.Path(dir_okay=False, exists=True),
              help="The worker's device.toml: the card states its [timing] gestures and [device] silent.")
@_redis_options
def card(worker_name: str, output: str, language: str | None, registry_path: str | None,
         device_config: str | None, config_path: str, redis_url: str | None) -> None:
    """Write the one-page card for a worker, in their language: what the button does and
    what each vibration means, with pictures.

    \b
    Examples:
      lonewatch card --worker "Anna Hansen" -o anna.pdf
      lonewatch card --worker "Anna Hansen" -o anna-ar.pdf --language ar --redis redis://localhost:6379/0
      lonewatch card --worker "Anna Hansen" -o anna.pdf --device-config lab/lw-0042/device.toml
    """
    from protocol.errors import LonewatchError

    from relay.card import CardError, CardTimings, card_for_worker
    from relay.registry import RegistryStore, load_registry_toml

    if registry_path:
        try:
            doc = load_registry_toml(registry_path)
        except LonewatchError as exc:
            _fail(str(exc), EXIT_CONFIG)
    else:
        doc = _guard(lambda: RegistryStore(_store(config_path, redis_url)).load())
    timings = CardTimings()
    if device_config:
        from device.config import load_device_config

        try:
            dc = load_device_config(device_config)
        except LonewatchError as exc:
            _fail(str(exc), EXIT_CONFIG)
        t = dc.timing
        timings = CardTimings(hold_s=t.hold_s, cancel_presses=t.cancel_presses, cancel_window_s=t.cancel_window_s,
                              checkin_presses=t.checkin_presses, checkin_window_s=t.checkin_window_s,
                              checkin_default_s=t.checkin_default_s, silent=dc.device.silent)
        mandown = getattr(dc, "mandown", None)  # [mandown] (issue 10), when the device has it
        if mandown is not None and mandown.enabled:
            timings = dataclasses.replace(timings, mandown=True, prealarm_s=mandown.prealarm_s,
                                          pause_presses=mandown.pause_presses,
                                          pause_window_s=mandown.pause_window_s, pause_max_s=mandown.pause_max_s)
    try:
        pdf = card_for_worker(doc, worker_name, language, timings=timings)
    except CardError as exc:
        _fail(str(exc), EXIT_FAILED)
    try:
        Path(output).write_bytes(pdf)
    except OSError as exc:
        from cli.outputs import cannot_write

        cannot_write(exc, output)
    lang = language or doc.worker(worker_name).language  # type: ignore[union-attr]
    click.echo(f"{output}: card for {worker_name} ({lang}), {len(pdf)} bytes")

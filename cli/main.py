"""The ``lonewatch`` command (click). Human output by default, ``--json`` for scripts.

Exit codes: 0 success, 1 the thing checked failed (e.g. the demo's ARC did not ACK),
2 usage or configuration error (file:line messages), 3 a required server is missing.
"""

from __future__ import annotations

import logging
import sys

import click

from protocol.errors import LonewatchError

EXIT_FAILED, EXIT_CONFIG, EXIT_MISSING = 1, 2, 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """lonewatch — panic button for lone workers, and the relay that gets help.

    \b
    Examples:
      lonewatch demo                 # the whole chain on this machine
      lonewatch demo --json          # the same timeline as JSON lines
      lonewatch relay run -c /etc/lonewatch/relay.toml
    """
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON lines (one object per step).")
@click.option("--arc", "arc_addr", metavar="HOST:PORT", help="Send to this external SIA DC-09 receiver instead of starting one.")
@click.option("--scenario", default="panic", show_default=True, metavar="NAME",
              help="What to show; `lonewatch demo --list` names them all.")
@click.option("--list", "list_", is_flag=True, help="List the scenarios and exit.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="Seconds to wait for the outcome (e.g. the ARC's ACK) before failing.")
@click.option("--keep", is_flag=True, help="Keep the demo's work directory (configs, logs) for inspection.")
@click.option("--console", "console_", is_flag=True, help="Also open the web console beside the demo (prints its URL and a login; Ctrl-C ends).")
def demo(as_json: bool, arc_addr: str | None, scenario: str, list_: bool, timeout_s: float, keep: bool, console_: bool) -> None:
    """Hold the button of a simulated device and follow the alarm to a real ARC receiver.

    Starts a throwaway Mosquitto and Redis on free ports, one relay, one simulated device
    (gpiozero MockFactory pins + modem simulator on a pseudo-terminal) and pysiaalarm as the
    ARC. Exit 0 only if the ARC received and acknowledged the alarm.

    \b
    Example:
      lonewatch demo --json | jq -c 'select(.step=="arc_ack")'
    """
    from labstack.demo import run_demo
    from labstack.demo.scenarios import load_all
    from labstack.servers import MissingServerError

    scenarios = load_all()
    if list_:
        for name, (_, description) in sorted(scenarios.items()):
            click.echo(f"{name:<16} {description}")
        return
    if scenario not in scenarios:
        raise click.BadParameter(f"unknown scenario {scenario!r}; choose one of {', '.join(sorted(scenarios))}", param_hint="--scenario")
    if arc_addr is not None and not _valid_hostport(arc_addr):
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:12128", param_hint="--arc")
    try:
        code = run_demo(scenario=scenario, as_json=as_json, arc_addr=arc_addr, keep=keep, timeout_s=timeout_s,
                        **({"console": True} if console_ else {}))
    except MissingServerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_MISSING)
    sys.exit(code)


def _valid_hostport(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


from cli.registry import alarm as _alarm_group, registry as _registry_group  # noqa: E402

main.add_command(_registry_group)  # lonewatch registry import/export/list/add/remove
main.add_command(_alarm_group)  # lonewatch alarm list/ack/history
main.add_command(__import__("cli.card").card.card)  # lonewatch card --worker NAME -o card.pdf
main.add_command(__import__("cli.worker").worker.worker)  # lonewatch worker export|erase NAME
main.add_command(__import__("cli.worker").worker.retention)  # lonewatch retention purge
main.add_command(__import__("cli.console").console.console)  # lonewatch console run|user (issue 13)
main.add_command(__import__("cli.survey").survey.survey)  # lonewatch survey run/report (issue 12)

from cli.install import INSTALL_COMMANDS  # noqa: E402  (pki provision flash doctor test-alarm status lab completion)

for _command in INSTALL_COMMANDS:
    main.add_command(_command)


@main.group()
def relay() -> None:
    """Run and inspect the relay service.

    \b
    Example:
      lonewatch relay run -c /etc/lonewatch/relay.toml
    """


@relay.command("run")
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False), help="relay.toml")
def relay_run(path: str) -> None:
    """Run the relay until SIGTERM.

    \b
    Example:
      lonewatch relay run -c /etc/lonewatch/relay.toml
    """
    from relay.app import run_forever
    from relay.config import load_relay_config

    cfg = _load(load_relay_config, path)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    try:
        run_forever(cfg)
    except LonewatchError as exc:  # e.g. the [registry] file is missing or invalid (file:line), Redis down
        from relay.store import StoreError

        click.echo(f"error: {exc}" if isinstance(exc, StoreError) else str(exc), err=True)
        sys.exit(EXIT_MISSING if isinstance(exc, StoreError) else EXIT_CONFIG)


@main.group()
def device() -> None:
    """Run the device daemon (on the Pi) and talk to it.

    \b
    Example:
      lonewatch device shift start     # tell the running daemon the shift began
    """


@device.command("run")
@click.option("-c", "--config", "path", default="/etc/lonewatch/device.toml", show_default=True, type=click.Path(dir_okay=False))
def device_run(path: str) -> None:
    """Run the device daemon until SIGTERM (real GPIO pins and modem).

    \b
    Example:
      lonewatch device run -c /etc/lonewatch/device.toml
    """
    from device.config import load_device_config
    from device.service import run_forever

    cfg = _load(load_device_config, path)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    run_forever(cfg)


__import__("cli.device").device.register(device)  # lonewatch device shift|checkin|status
main.add_command(__import__("cli.mandown").mandown.mandown)  # lonewatch mandown replay|record (issue 10)


@main.command("check-config")
@click.argument("kind", type=click.Choice(["device", "relay", "registry"]))
@click.argument("path", type=click.Path(dir_okay=False))
def check_config(kind: str, path: str) -> None:
    """Validate a config file and print every problem as file:line (exit 2 if any).
    Warnings (valid, but probably not what you want) go to stderr and do not fail.

    \b
    Example:
      lonewatch check-config device /etc/lonewatch/device.toml
    """
    if kind == "device":
        from device.config import load_device_config as loader
    elif kind == "relay":
        from relay.config import load_relay_config as loader  # type: ignore[assignment]
    else:
        from relay.registry import load_registry_toml as loader  # type: ignore[assignment]
    cfg = _load(loader, path)
    from cli.check_extra import extra_warnings

    warnings = config_warnings(kind, cfg, path) + extra_warnings(kind, cfg, path)  # exits 2 on errors
    for warning in warnings:
        click.echo(f"{path}: warning: {warning}", err=True)
    click.echo(f"{path}: ok")


def config_warnings(kind: str, cfg, path: str) -> list[str]:
    """What a valid config may still get wrong for a lone worker: no SMS fallback (SPEC §2:
    an alarm without the relay's ack goes by SMS), or secrets readable by other users."""
    import os
    import stat

    out: list[str] = []
    if kind == "device" and not cfg.sms.recipients:
        out.append("no [sms] fallback numbers: an alarm the relay does not confirm is NOT sent by SMS")
    secrets = {"device": lambda c: c.mqtt.password or c.modem.sim_pin, "relay": lambda c: c.mqtt.password}.get(kind)
    if secrets is not None and secrets(cfg) and stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        out.append(f"holds secrets but is readable by others (mode {stat.S_IMODE(os.stat(path).st_mode):o}); chmod 600 it")
    return out


def _load(loader, path: str):
    try:
        return loader(path)
    except LonewatchError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as exc:
        click.echo(f"{path}: {exc.strerror}", err=True)
        sys.exit(EXIT_CONFIG)

"""``lonewatch device shift|checkin|status``: talk to the running device daemon on the Pi over
its control socket (:mod:`device.control`). Registered on the ``lonewatch device`` group by
:func:`register`.

Exit codes (as the rest of ``lonewatch``): 0 done, 1 the daemon refused (e.g. already on shift),
2 configuration error, 3 the daemon is not running or not reachable.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from protocol.errors import LonewatchError

EXIT_REFUSED, EXIT_CONFIG, EXIT_UNREACHABLE = 1, 2, 3
DEFAULT_CONFIG = "/etc/lonewatch/device.toml"

_config_option = click.option("-c", "--config", "path", default=DEFAULT_CONFIG, show_default=True,
                              type=click.Path(dir_okay=False), help="device.toml (for the state directory)")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the daemon's reply as JSON.")


def _ask(path: str, req: dict[str, Any], as_json: bool) -> None:
    from device.config import load_device_config
    from device.control import ControlError, request

    try:
        cfg = load_device_config(path)
    except LonewatchError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_CONFIG)
    try:
        reply = request(cfg.device.state_dir, req)
    except ControlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    if as_json:
        click.echo(json.dumps(reply, ensure_ascii=False))
    elif reply.get("ok"):
        click.echo(_human(req["cmd"], reply))
    else:
        click.echo(f"refused: {reply.get('error', 'unknown reason')}", err=True)
    sys.exit(0 if reply.get("ok") else EXIT_REFUSED)


def _human(cmd: str, reply: dict[str, Any]) -> str:
    if cmd == "status":
        lines = []
        for key, value in reply.items():
            if key != "ok":
                lines.append(f"{key:<14} {value}")
        return "\n".join(lines)
    extra = f" ({reply['duration_s']} s)" if "duration_s" in reply else ""
    return f"{reply['kind']} queued as {reply['id']}{extra}"


def register(group: click.Group) -> None:
    """Add ``shift``, ``checkin`` and ``status`` to the ``lonewatch device`` group."""

    @group.command("shift")
    @click.argument("action", type=click.Choice(["start", "end"]))
    @_config_option
    @_json_option
    def shift(action: str, path: str, as_json: bool) -> None:
        """Start or end the worker's shift (sends shift_start / shift_end; while on shift the
        relay supervises the worker for lost contact).

        \b
        Example:
          lonewatch device shift start
        """
        _ask(path, {"cmd": f"shift_{action}"}, as_json)

    @group.command("checkin")
    @click.argument("action", type=click.Choice(["start", "done"]))
    @click.option("--duration", "duration_s", type=int, default=None, metavar="SECONDS",
                  help="Check-in length for start (default: timing.checkin_default_s).")
    @_config_option
    @_json_option
    def checkin(action: str, duration_s: int | None, path: str, as_json: bool) -> None:
        """Start a check-in timer or report the running one done (like two short presses).

        \b
        Example:
          lonewatch device checkin start --duration 1800
        """
        req: dict[str, Any] = {"cmd": f"checkin_{action}"}
        if duration_s is not None:
            req["duration_s"] = duration_s
        _ask(path, req, as_json)

    @group.command("status")
    @_config_option
    @_json_option
    def status(path: str, as_json: bool) -> None:
        """Show the running daemon's state: shift, check-in, open alarm, queue, link, modem,
        battery and any health problem.

        \b
        Example:
          lonewatch device status --json
        """
        _ask(path, {"cmd": "status"}, as_json)

"""Installer and operator commands of ``lonewatch`` (issue 5): ``pki``, ``provision``,
``flash``, ``doctor``, ``test-alarm``, ``status``, ``lab``, ``completion``. Registered on the
main group in :mod:`cli.main`; the work is done in :mod:`installer.pki`, :mod:`installer.provision`,
:mod:`installer.flash`/:mod:`installer.bootpart`, :mod:`device.doctor`, :mod:`relay.status_report`
and :mod:`labstack.installer_lab` — these are only the command-line faces.

Exit codes as in :mod:`cli.main`: 0 success, 1 the thing checked failed, 2 usage or
configuration error, 3 a required server or tool is missing; ``doctor`` exits with the number
of failed checks.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from protocol.errors import LonewatchError

from cli.install_common import (  # noqa: F401  (exit codes and helpers; re-exported)
    DEVICE_TOML, EXIT_CONFIG, EXIT_FAILED, EXIT_MISSING, RELAY_TOML, _echo_json, _fail, _load_device, _load_relay, _redis_url,
)
from cli.pki import pki


@click.command()
@click.argument("device_id")
@click.option("--worker", required=True, help="Who wears it (a worker in the registry, or a name).")
@click.option("--site", required=True, help="Where they work (a site in the registry, or a name).")
@click.option("--account", help="SIA account at the ARC (3-16 hex); default: the site's / the one registered.")
@click.option("--zone", type=click.IntRange(1, 999), help="Contact ID zone = worker number (for a worker not in the registry).")
@click.option("--language", default="da", show_default=True, help="Language of SMS texts (da en pl ro uk ar).")
@click.option("--broker-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The broker's directory with passwd and acl.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where device.toml (0600) and the credentials are written; one directory per device.")
@click.option("--broker-host", help="Name devices dial (in the server certificate). Default: the relay config's.")
@click.option("--broker-port", type=click.IntRange(1, 65535), help="Default: the relay config's, else 8883.")
@click.option("--auth", type=click.Choice(["password", "certificate"]), default="password", show_default=True)
@click.option("--pki-dir", type=click.Path(file_okay=False, path_type=Path), help="The CA (needed for --auth certificate).")
@click.option("--relay-config", type=click.Path(dir_okay=False), help=f"relay.toml (its Redis holds the registry) [{RELAY_TOML}]")
@click.option("--redis-url", help="The relay's Redis, instead of --relay-config.")
@click.option("--no-register", is_flag=True, help="Only the files and the broker; no registry entry.")
@click.option("--device-dir", default="/etc/lonewatch", show_default=True, help="Where the credentials live on the device.")
@click.option("--state-dir", default="/var/lib/lonewatch", show_default=True, help="The device's state directory (queue).")
@click.option("--fallback-number", "fallback", multiple=True, help="E.164 SMS fallback number; repeat for more.")
@click.option("--broker-pid-file", type=click.Path(dir_okay=False, path_type=Path), help="Mosquitto's pid file, to reload it.")
@click.option("--rotate", is_flag=True, help="Issue new credentials (the old device.toml stops working).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def provision(device_id: str, worker: str, site: str, account: str | None, zone: int | None, language: str,
              broker_dir: Path, out: Path, broker_host: str | None, broker_port: int | None, auth: str,
              pki_dir: Path | None, relay_config: str | None, redis_url: str | None, no_register: bool,
              device_dir: str, state_dir: str, fallback: tuple[str, ...], broker_pid_file: Path | None,
              rotate: bool, as_json: bool) -> None:
    """Create a device's broker credentials, device.toml and registry entry (idempotent).

    \b
    Example:
      lonewatch provision lw-0042 --worker "Anna Hansen" --site "Vestergade 12" \\
          --account 1234AB --zone 42 --broker-dir /etc/mosquitto/lonewatch \\
          --broker-host mqtt.example.com --out ./lw-0042
    """
    from installer.provision import ProvisionError, ProvisionRequest
    from installer.provision import provision as run

    path = relay_config or (RELAY_TOML if Path(RELAY_TOML).exists() else None)
    cfg = _load_relay(path) if path else None
    if cfg is None and not (no_register or redis_url):
        _fail("no relay registry to register in: give --relay-config FILE or --redis-url URL (or --no-register)")
    if cfg is None and not broker_host:
        _fail("give --broker-host (the name devices dial), or --relay-config to take the relay's")
    host = broker_host or (cfg.mqtt.host if cfg else "")
    port = broker_port or (cfg.mqtt.port if cfg else 8883)
    url = None if no_register else (redis_url or (cfg.redis.url if cfg else None))
    req = ProvisionRequest(
        device_id=device_id, worker=worker, site=site, broker_dir=broker_dir, out_dir=out, broker_host=host,
        broker_port=port, auth=auth, account=account, zone=zone, language=language, fallback_numbers=fallback,
        pki_dir=pki_dir, device_dir=device_dir, state_dir=state_dir, redis_url=url,
        broker_pid_file=broker_pid_file, rotate=rotate,
    )  # fmt: skip
    try:
        result = run(req)
    except ProvisionError as exc:
        _fail(str(exc))
    except LonewatchError as exc:  # mosquitto_passwd missing and friends
        _fail(str(exc), EXIT_MISSING)
    except OSError as exc:
        from cli.outputs import cannot_write

        cannot_write(exc, out)
    if as_json:
        _echo_json(result.as_dict())
        return
    click.echo(f"provisioned {device_id}: {'new credentials' if result.new_credentials else 'credentials kept'}")
    for f in result.files:
        click.echo(f"  wrote {f}")
    if result.entry:
        e = result.entry
        click.echo(f"  registry: account {e.account}, zone {e.zone}, worker {e.worker!r}, site {e.site!r}")
    click.echo(f"  {result.reload}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    click.echo(f"next: lonewatch flash <raspios.img.xz> /dev/sdX --config {result.config}")


# --------------------------------------------------------------------------- flash


def _boot_file(value: str) -> tuple[Path, str]:
    src, _, name = value.partition(":")
    return Path(src), name or Path(src).name


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--config", "config", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The device.toml from provision (ca.crt etc. next to it are taken along).")
@click.option("--sha256", "expect_sha256", help="Published SHA-256 of IMAGE (as downloaded); checked while reading.")
@click.option("--uart-modem", is_flag=True, help="Modem HAT on the UART: enable_uart=1, dtoverlay=disable-bt, serial console off.")
@click.option("--wheel", "wheels", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Another wheel for the card (flash always builds the lonewatch wheel and fetches the device's "
                   "dependencies itself); repeat.")
@click.option("--boot-file", "boot_files", multiple=True, metavar="SRC[:NAME]",
              help="Another file for the boot partition, e.g. userconf.txt or ssh; repeat.")
@click.option("--boot-mount", default="/boot/firmware", show_default=True, help="Where the OS mounts the boot partition (/boot before Bookworm).")
@click.option("--yes", is_flag=True, help="Do not ask before erasing a card.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def flash(image: Path, target: Path, config: Path, expect_sha256: str | None, uart_modem: bool,
          wheels: tuple[Path, ...], boot_files: tuple[str, ...], boot_mount: str, yes: bool, as_json: bool) -> None:
    """Write a Raspberry Pi OS image to an SD card (or image file), verify it, add the device.

    TARGET is the whole card (/dev/sdX, /dev/mmcblk0) or an image file. Mounted disks and
    the system disk are refused.

    \b
    Example:
      lonewatch flash 2025-11-24-raspios-trixie-armhf-lite.img.xz /dev/sdb \\
          --config ./lw-0042/device.toml --sha256 <published checksum>
    """
    from importlib.metadata import PackageNotFoundError, version

    from installer.bootpart import BootPartitionError, install_lonewatch
    from installer.flash import FlashError, TargetRefused, claim, open_image, probe_target, read_back, write_image

    cfg = _load_device(str(config))
    warnings = []
    if cfg.mqtt.tls and cfg.mqtt.ca_file and not cfg.mqtt.ca_file.startswith("/etc/lonewatch/"):
        warnings.append(f"device.toml's ca_file is {cfg.mqtt.ca_file}; the first boot puts ca.crt in /etc/lonewatch/")
    try:
        with open_image(image) as reader:
            file_size = reader.file_size
        tgt = probe_target(target, image=image)
    except TargetRefused as exc:
        _fail(str(exc), EXIT_FAILED)
    except FlashError as exc:
        _fail(str(exc))
    from installer.supply import SupplyError, build_supply
    try:  # before the card is touched: a failure here leaves it as it was
        supply = build_supply(given=wheels)
    except SupplyError as exc:
        _fail(str(exc), EXIT_FAILED)
    card_files = [*supply.files, *(w for w in wheels if w not in supply.wheels)]
    if tgt.kind == "block" and not yes:
        click.confirm(f"Erase everything on {tgt.description}?", abort=True, err=True)
    out = sys.stderr if as_json else sys.stdout
    try:
        ver = version("lonewatch")
    except PackageNotFoundError:
        ver = ""
    try:
        with claim(tgt) as claimed:  # nobody mounts the card until we are done with it
            with click.progressbar(length=file_size, label="writing ", file=out) as bar:
                written = write_image(image, tgt, progress=bar.update, expect_sha256=expect_sha256, claimed=claimed)
            with click.progressbar(length=written.length, label="verifying", file=out) as bar:
                back = read_back(target, written.length, progress=bar.update)
            if back != written.sha256:
                _fail(f"{target}: what was read back differs from the image (SHA-256 {back} ≠ {written.sha256}): "
                      "the card is faulty or fake — use another one", EXIT_FAILED)
            files = install_lonewatch(target, config, wheels=card_files, extra=[_boot_file(b) for b in boot_files],
                                      uart_modem=uart_modem, boot_mount=boot_mount, version=supply.version or ver)
    except TargetRefused as exc:
        _fail(str(exc), EXIT_FAILED)
    except FlashError as exc:
        _fail(str(exc), EXIT_FAILED)
    except BootPartitionError as exc:
        _fail(str(exc), EXIT_MISSING if "not installed" in str(exc) else EXIT_FAILED)
    result = {"target": str(target), "device": cfg.device.id, "bytes": written.length, "sha256": written.sha256,
              "image_file_sha256": written.file_sha256, "verified": True, "boot_files": files, "warnings": warnings,
              "lonewatch_wheel": supply.wheels[0].name}
    if as_json:
        _echo_json(result)
        return
    click.echo(f"wrote {written.length / 1e6:.1f} MB to {target}, read back and verified (SHA-256 {written.sha256[:16]}…)")
    click.echo(f"device {cfg.device.id}: {len(files)} file(s) in the boot partition; the first boot installs "
               "the device service")
    for w in warnings:
        click.echo(f"warning: {w}")


# --------------------------------------------------------------------------- doctor, test-alarm


@click.command()
@click.option("-c", "--config", "path", default=DEVICE_TOML, show_default=True, type=click.Path(dir_okay=False))
@click.option("--simulate", is_flag=True, help="Modem simulator and a simulated finger instead of the hardware.")
@click.option("--skip", "skip", multiple=True, type=click.Choice(["button", "modem", "broker", "relay", "clock"]),
              help="Leave a group of checks out; repeat.")
@click.option("--button-timeout", default=15.0, show_default=True, type=click.FloatRange(1, 300), help="Seconds to wait for the press.")
@click.option("--relay-timeout", default=15.0, show_default=True, type=click.FloatRange(1, 300), help="Seconds to wait for the relay's ack.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def doctor(path: str, simulate: bool, skip: tuple[str, ...], button_timeout: float, relay_timeout: float, as_json: bool) -> None:
    """Check this device end to end; exit code = number of failed checks.

    Button ("press now"), modem SIM/registration/signal/GNSS, broker TLS login, a test
    event to the relay and back, clock offset. Stop the device service first.

    \b
    Example:
      sudo systemctl stop lonewatch-device && sudo lonewatch doctor; sudo systemctl start lonewatch-device
      lonewatch doctor -c ./lw-0042/device.toml --simulate --json
    """
    import contextlib

    from device.doctor import Doctor, simulated_hardware

    cfg = _load_device(path)
    marks = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "skip"}

    def report(check) -> None:
        if as_json:
            return
        colour = {"pass": "green", "warn": "yellow", "fail": "red"}.get(check.status)
        click.echo(click.style(f"{marks[check.status]:<5}", fg=colour) + f"{check.name:<19} {check.detail}")
        if check.fix and check.status in ("warn", "fail"):
            click.echo(f"{'':<24} fix: {check.fix}")

    def prompt(text: str) -> None:
        click.echo(click.style(f">>> {text}", bold=True), err=as_json)

    with (simulated_hardware(cfg) if simulate else contextlib.nullcontext((cfg, None, None))) as (cfg2, factory, finger):
        doc = Doctor(cfg2, report=report, prompt=prompt, pin_factory=factory, finger=finger,
                     button_timeout_s=button_timeout, relay_timeout_s=relay_timeout)
        results = doc.run(frozenset(skip))
    failures = doc.failures
    if as_json:
        _echo_json({"device": cfg.device.id, "simulated": simulate, "failures": failures,
                    "checks": [c.as_dict() for c in results]})
    else:
        click.echo(f"\n{failures} check(s) failed" if failures else "\nall checks passed")
    sys.exit(min(failures, 125))


@click.command("test-alarm")
@click.option("-c", "--config", "path", default=DEVICE_TOML, show_default=True, type=click.Path(dir_okay=False))
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds to wait for the ARC's ACK.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def test_alarm(path: str, timeout_s: float, as_json: bool) -> None:
    """Send a test event (Contact ID 601) end to end and show the ARC's ACK and the latency.

    Runs with the device's credentials (its device.toml and queue); exit 0 only when the
    ARC acknowledged.

    \b
    Example:
      sudo lonewatch test-alarm
      lonewatch test-alarm -c ./lw-0042/device.toml --json
    """
    from device.doctor import RoundTripError, TestEventSession

    cfg = _load_device(path)
    try:
        with TestEventSession(cfg, source="test-alarm") as session:
            session.connect()
            trip = session.send_test(wait_arc=True, timeout_s=timeout_s)
    except RoundTripError as exc:
        if as_json:
            _echo_json({"device": cfg.device.id, "ok": False, "error": str(exc), "fix": exc.fix})
        else:
            click.echo(f"FAIL {exc}\n     fix: {exc.fix}", err=True)
        sys.exit(EXIT_FAILED)
    ok = trip.arc is not None
    result = {"device": cfg.device.id, "ok": ok, "event": trip.event_id, "contact_id": "601",
              "received_ms": round(trip.received_after_s * 1000, 1),
              "arc_ack_ms": None if trip.arc_after_s is None else round(trip.arc_after_s * 1000, 1),
              "arc": trip.arc, "arc_failed": trip.arc_failed}
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"test event {trip.event_id} (Contact ID 601)")
        click.echo(f"  relay received it      after {result['received_ms']:.0f} ms")
        if ok:
            arc = trip.arc or {}
            relay_part = f" (relay → ARC {arc['latency_ms']} ms)" if "latency_ms" in arc else ""
            click.echo(f"  ARC ACK from {arc.get('receiver', '?'):<10} after {result['arc_ack_ms']:.0f} ms{relay_part}")
        elif trip.arc_failed:
            click.echo(f"  ARC did NOT take it: {trip.arc_failed} — the relay keeps trying; check the ARC link")
        else:
            click.echo(f"  no ARC ACK within {timeout_s:.0f} s — does the relay have an ARC receiver configured, "
                       "and does the ARC know this account?")
    sys.exit(0 if ok else EXIT_FAILED)


# --------------------------------------------------------------------------- status


def _echo_faults(url: str, as_json: bool) -> None:
    """Installation faults (issue 14) after the table; on stderr with --json (the JSON shape stays)."""
    from relay.faults_report import collect_faults, render_faults
    from relay.store import Store

    try:
        text = render_faults(collect_faults(Store.from_url(url).r))
    except Exception as exc:
        text = f"faults unknown: {type(exc).__name__}\n"
    if text:
        click.echo(text, nl=False, err=as_json)


@click.command()
@click.argument("devices", nargs=-1)
@click.option("--relay-config", type=click.Path(dir_okay=False), help=f"relay.toml [{RELAY_TOML}]")
@click.option("--redis-url", help="The relay's Redis, instead of --relay-config.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def status(devices: tuple[str, ...], relay_config: str | None, redis_url: str | None, as_json: bool) -> None:
    """Devices as the relay sees them: last seen, link, shift, battery, signal, open alarms.

    \b
    Example:
      lonewatch status --relay-config /etc/lonewatch/relay.toml
      lonewatch status lw-0042 --json | jq '.[0].battery_pct'
    """
    from relay.status_report import collect, render_table
    from relay.store import Store, StoreError

    url = _redis_url(relay_config, redis_url)
    try:
        rows = collect(Store.from_url(url), devices or None)
    except StoreError as exc:
        _fail(f"the relay's Redis is unreachable: {exc}", EXIT_MISSING)
    if as_json:
        _echo_json([r.as_dict() for r in rows])
    elif not rows:
        click.echo("no devices registered (lonewatch provision … registers one)")
    else:
        click.echo(render_table(rows), nl=False)
    _echo_faults(url, as_json)
    unknown = sorted(set(devices) - {r.device for r in rows})
    if unknown:
        click.echo(f"not registered: {', '.join(unknown)}", err=True)
        sys.exit(EXIT_FAILED)


# --------------------------------------------------------------------------- lab, completion


@click.command()
@click.option("--dir", "directory", default="lab", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the lab keeps its CA, configs and test image.")
@click.option("--account", default="1234AB", show_default=True, help="SIA account the lab's ARC accepts.")
@click.option("--auth", type=click.Choice(["password", "certificate"]), default=None,
              help="How devices log in: password, or certificate (provision --auth certificate --pki-dir lab/pki). "
                   "Default: as in the directory's last run, else password.")
def lab(directory: Path, account: str, auth: str | None) -> None:
    """Run a local relay side (TLS broker, Redis, ARC, relay) to try the installer commands.

    Runs until Ctrl-C. See README "Installing a device". Started again with the same --dir it
    keeps its ports, passwords, CA and Redis data (provisioned devices keep working); the
    relay logs to <dir>/relay.log.

    \b
    Example:
      lonewatch lab --dir ./lab &
      lonewatch provision lw-0042 --worker "Anna Hansen" --site "Vestergade 12" --account 1234AB \\
          --zone 42 --broker-dir lab/broker --relay-config lab/relay.toml --out lab/lw-0042 \\
          --device-dir "$PWD/lab/lw-0042" --state-dir "$PWD/lab/lw-0042/state"
    """
    from labstack.installer_lab import Lab, LabError
    from labstack.servers import MissingServerError

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with Lab(directory, account=account, auth=auth) as the_lab:
            info = the_lab.info
            assert info is not None
            click.echo(f"lab running in {info.directory} (Ctrl-C stops it)")
            click.echo(f"  broker   localhost:{info.broker_port} (TLS, {info.auth} login, files in {info.broker_dir})")
            click.echo(f"  CA       {info.pki_dir}")
            click.echo(f"  relay    {info.relay_config}")
            click.echo(f"  ARC      {info.arc} (pysiaalarm, account {info.account})")
            click.echo(f"  image    {info.image}")
            sys.stdout.flush()
            stop.wait()
    except MissingServerError as exc:
        _fail(str(exc), EXIT_MISSING)
    except LabError as exc:
        _fail(str(exc), EXIT_FAILED)
    except ModuleNotFoundError as exc:
        _fail(f"{exc.name} is missing: the lab needs the demo extra (pip install 'lonewatch[demo]')", EXIT_MISSING)
    click.echo("lab stopped")


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for lonewatch.

    \b
    Example:
      lonewatch completion bash > ~/.local/share/bash-completion/completions/lonewatch
      lonewatch completion zsh > "${fpath[1]}/_lonewatch"
      lonewatch completion fish > ~/.config/fish/completions/lonewatch.fish
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # click ships bash, zsh and fish
    click.echo(cls(root, {}, "lonewatch", "_LONEWATCH_COMPLETE").source())


#: What cli.main registers on the ``lonewatch`` group.
INSTALL_COMMANDS = (pki, provision, flash, doctor, test_alarm, status, lab, completion)

"""``lonewatch mandown replay|record`` (issue 10): tune a man-down profile from real traces.

* ``replay TRACE.csv [-c device.toml] [--profile NAME] [--json]`` runs the device's own
  detector (:mod:`device.mandown`) over a trace, faster than real time, and prints one line
  per state change (a JSON object with ``t_s`` and ``state`` with ``--json``). Thresholds:
  ``--profile NAME`` as that profile defines them, else the effective ``[mandown]`` of
  ``-c`` (profile plus its overrides), else the defaults.
* ``record OUT.csv --seconds N [-c device.toml]`` records a trace from the accelerometer of
  ``[mandown]`` (on the Pi: the LIS3DH), in the format ``replay`` reads.

Exit codes: 0 done, 2 bad trace / config / option (file:line messages), 3 sensor unusable.
"""

from __future__ import annotations

import json
import sys
import time

import click

from protocol.errors import LonewatchError

EXIT_CONFIG, EXIT_SENSOR = 2, 3


@click.group("mandown")
def mandown() -> None:
    """Man-down: replay traces through the detector, record traces on the Pi.

    \b
    Examples:
      lonewatch mandown replay fall.csv --profile cleaning
      lonewatch mandown record shift.csv --seconds 600 -c /etc/lonewatch/device.toml
    """


def _mandown_config(path: str | None):
    from device.mandown_config import MandownConfig

    if path is None:
        return MandownConfig()
    from device.config import load_device_config

    try:
        return load_device_config(path).mandown
    except LonewatchError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_CONFIG)


@mandown.command("replay")
@click.argument("trace_path", metavar="TRACE.csv", type=click.Path(dir_okay=False))
@click.option("-c", "--config", "path", type=click.Path(dir_okay=False), help="device.toml ([mandown] thresholds)")
@click.option("--profile", "profile", metavar="NAME", help="Use this profile (default, cleaning, guard, office or one of the config's).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per state change.")
def replay_cmd(trace_path: str, path: str | None, profile: str | None, as_json: bool) -> None:
    """Run the man-down detector over a trace and print its state changes.

    \b
    Example:
      lonewatch mandown replay fall.csv --json | jq -c 'select(.state=="man_down")'
    """
    from device.accel_trace import TraceError, load_trace
    from device.mandown import MandownDetector, replay

    cfg = _mandown_config(path)
    if profile is not None and profile not in cfg.profile_names():
        raise click.BadParameter(f"unknown profile {profile!r}; choose one of {', '.join(cfg.profile_names())}",
                                 param_hint="--profile")
    thresholds = cfg.named(profile) if profile else cfg.thresholds()
    try:
        trace = load_trace(trace_path)
    except TraceError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_CONFIG)
    detector = MandownDetector(thresholds, cfg.upright_axis)
    if not as_json:
        click.echo(f"{'t_s':>9}  state")
    for tr in replay(detector, trace.samples):
        if as_json:
            click.echo(json.dumps(tr.as_dict()))
        else:
            extra = " ".join(f"{k}={v}" for k, v in tr.detail.items())
            click.echo(f"{tr.t_s:9.2f}  {tr.state:<10} {extra}".rstrip())
    if not as_json:
        click.echo(f"{trace_path}: {len(trace.samples)} samples, {trace.duration_s:.1f} s at {trace.rate_hz:.0f} Hz, "
                   f"profile {profile or cfg.profile}, final state {detector.state}", err=True)


@mandown.command("record")
@click.argument("out_path", metavar="OUT.csv", type=click.Path(dir_okay=False, writable=True))
@click.option("--seconds", type=click.FloatRange(1, 24 * 3600), required=True, help="How long to record (sensor time).")
@click.option("-c", "--config", "path", default="/etc/lonewatch/device.toml", show_default=True,
              type=click.Path(dir_okay=False), help="device.toml ([mandown] sensor, I2C bus/address, rate)")
def record_cmd(out_path: str, seconds: float, path: str) -> None:
    """Record a trace from the man-down accelerometer (stop the device daemon first: it owns
    the sensor). The file replays with `lonewatch mandown replay`.

    \b
    Example:
      sudo systemctl stop lonewatch-device && lonewatch mandown record kneeling.csv --seconds 300
    """
    from device.accel import AccelError, WakeSettings
    from device.accel_trace import TraceSample, write_trace
    from device.mandown_watch import open_accelerometer

    cfg = _mandown_config(path)
    factory = None
    if cfg.sensor == "sim":
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
    try:
        accel = open_accelerometer(cfg, pin_factory=factory)
    except LonewatchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SENSOR if isinstance(exc, AccelError) else EXIT_CONFIG)
    rows: list[TraceSample] = []
    try:
        accel.configure(WakeSettings(upright_axis=cfg.upright_axis))
        accel.set_mode("off")  # nothing to wake: this command reads the FIFO itself
        start = accel.clock()
        first: float | None = None
        click.echo(f"recording {seconds:g} s at {accel.rate_hz:.0f} Hz to {out_path} …", err=True)
        period = 0.3 * 1.0 / max(getattr(accel, "speed", 1.0), 1.0)
        while accel.clock() - start < seconds:
            time.sleep(period)  # the FIFO holds 32 samples: read well before it overflows
            for s in accel.read_fifo():
                if first is None:
                    first = s.t
                if s.t - first <= seconds:
                    rows.append(TraceSample(s.t - first, s.ax, s.ay, s.az))
    except AccelError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SENSOR)
    finally:
        accel.close()
    n = write_trace(out_path, rows)
    click.echo(f"{out_path}: {n} samples", err=True)

"""``lonewatch survey run`` and ``lonewatch survey report`` (issue 12): record a coverage walk
of a site (:mod:`device.survey`) and turn it into a report for the site manager
(:mod:`installer.survey_report`).

Exit codes: 0 done; 1 the report found places where an alarm would fail (``report
--strict``) or the recording holds no usable sample (``report``); 2 bad usage or config; 3 hardware/servers missing.
"""

from __future__ import annotations

import sys
import threading

import click

from protocol.errors import LonewatchError


@click.group("survey")
def survey() -> None:
    """Radio coverage survey of a site before use: record a walk, then report.

    \b
    Example:
      lonewatch survey run -o walk.jsonl          (on the device; type the place, Enter)
      lonewatch survey report walk.jsonl -o report.html
    """


def _progress(s) -> None:
    rtt = "no MQTT" if s.mqtt_rtt_ms is None else f"{s.mqtt_rtt_ms:.0f} ms"
    dbm = "?" if s.dbm is None else f"{s.dbm} dBm"
    click.echo(f"#{s.i:<4} {dbm:>8}  {s.registration:<14} {rtt:>8}  SMS {'yes' if s.sms_ready else 'NO ':<3} "
               f"GNSS {'fix' if s.gnss_fix else '-  '}  {s.place or ''}", err=True)


@survey.command("run")
@click.option("-c", "--config", "config_path", default="/etc/lonewatch/device.toml", show_default=True,
              type=click.Path(dir_okay=False), help="device.toml (modem, broker account, beacons).")
@click.option("-o", "--output", default="survey.jsonl", show_default=True, type=click.Path(dir_okay=False),
              help="Where the samples go (JSON lines, appended).")
@click.option("--every", "every_s", type=click.FloatRange(0.2, 600),
              help="Seconds between samples  [default: 3; 0.5 with --simulate].")
@click.option("--duration", "duration_s", type=click.FloatRange(1, 86400),
              help="Stop after this many seconds (--simulate: the simulated walk has a fixed length of "
                   "28 samples, so --duration can only end it earlier).")
@click.option("--simulate", is_flag=True, help="Walk a simulated site (broker, modem and beacon simulators).")
def survey_run(config_path: str, output: str, every_s: float | None, duration_s: float | None, simulate: bool) -> None:
    """Record a walk: signal, registration, MQTT round trip, SMS readiness, GNSS, beacons.

    Type where you are and press Enter whenever you reach a new place (an empty line goes
    back to the place the beacon says); Ctrl-C ends the walk. Stop the device service first:
    it owns the modem port.

    \b
    Example:
      sudo systemctl stop lonewatch-device
      lonewatch survey run -o walk.jsonl --every 3
      lonewatch survey run --simulate -o demo-walk.jsonl
    """
    from device.survey import open_run

    try:
        run_file = open_run(output)
    except OSError as exc:
        from cli.outputs import cannot_write

        cannot_write(exc, output)
    with run_file as out:
        if simulate:
            from labstack.servers import MissingServerError
            from labstack.survey_sim import simulated_walk

            from labstack.survey_sim import WALK

            every_s = 0.5 if every_s is None else every_s
            fixed = 4 * len(WALK)
            if duration_s is not None and duration_s > (fixed - 1) * every_s:
                click.echo(f"notice: the simulated walk has a fixed length of {fixed} samples "
                           f"(about {(fixed - 1) * every_s:.0f} s at --every {every_s:g}); it ends before "
                           f"--duration {duration_s:g}", err=True)
            try:
                with simulated_walk(every_s=every_s, out=out, on_sample=_progress, duration_s=duration_s) as walk:
                    n = walk()
            except MissingServerError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(3)
        else:
            n = _real_run(config_path, out, 3.0 if every_s is None else every_s, duration_s)
    click.echo(f"{n} sample(s) in {output}; next: lonewatch survey report {output} -o report.html")


def _real_run(config_path: str, out, every_s: float, duration_s: float | None) -> int:
    from device.beacons import BeaconService, BeaconTracker, open_scanner
    from device.config import load_device_config
    from device.survey import HardwareProbe, MqttRtt, SurveyRecorder
    from modem.at import Modem
    from protocol.messages import Alive, encode
    from protocol.topics import topic

    try:
        cfg = load_device_config(config_path)
    except LonewatchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    modem = None
    if cfg.modem.enabled:
        modem = Modem(cfg.modem.port, baudrate=cfg.modem.baudrate, flavour=cfg.modem.flavour)
        try:
            modem.open()
            modem.init(cfg.modem.sim_pin or None)
        except (LonewatchError, OSError) as exc:
            click.echo(f"warning: modem unavailable ({exc}); signal and SMS will show as unknown", err=True)
            modem = None
    m = cfg.mqtt

    def alive() -> bytes:
        return encode(Alive(cfg.device.id, __import__("time").time(), None, None, "unknown", None, 0.0, "survey", 0))

    mqtt = MqttRtt(m.host, m.port, username=m.username or cfg.device.id, password=m.password,
                   topic_name=topic(cfg.device.id, "alive"), payload=alive, tls_ca=m.ca_file if m.tls else None)
    scanner = open_scanner(cfg.beacons.source, cfg.beacons.adapter)
    beacons = BeaconService(scanner, BeaconTracker(), scan_s=cfg.beacons.scan_s) if scanner else None
    probe = HardwareProbe(modem, mqtt, beacons)
    recorder = SurveyRecorder(probe, out, every_s=every_s, on_sample=_progress)
    stop = threading.Event()

    def typing() -> None:
        for line in sys.stdin:
            recorder.set_place(line)
            click.echo(f"place: {line.strip() or '(from the beacon)'}", err=True)

    threading.Thread(target=typing, name="survey-typing", daemon=True).start()
    try:
        return recorder.run(stop, duration_s=duration_s)
    except KeyboardInterrupt:
        return recorder.count
    finally:
        probe.close()
        if modem is not None:
            modem.close()


@survey.command("report")
@click.argument("run_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="The HTML report (the plot is also written as .png beside it).")
@click.option("--places", "places_file", type=click.Path(exists=True, dir_okay=False),
              help="A places file (registry places export) to name the beacons.")
@click.option("--strict", is_flag=True, help="Exit 1 if an alarm would fail somewhere on the walk.")
def survey_report(run_file: str, output: str, places_file: str | None, strict: bool) -> None:
    """Write a report: plot, table per place, places that depend on SMS or fail.

    A damaged or cut-off recording is read as far as it goes, with a warning per bad line.

    \b
    Example:
      lonewatch survey report walk.jsonl -o report.html --places places.toml
    """
    from installer.survey_report import beacon_names, load_survey, write_report

    names = {}
    if places_file:
        from relay.places import load_places_toml

        try:
            names = beacon_names(load_places_toml(places_file))
        except LonewatchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    try:
        result = load_survey(run_file, names=names)
    except OSError as exc:
        click.echo(f"error: cannot read {run_file}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if not result.samples:
        click.echo(f"error: {run_file} holds no usable sample (see the warnings above); no report written", err=True)
        sys.exit(1)
    try:
        png = write_report(result, output)
    except OSError as exc:
        from cli.outputs import cannot_write

        cannot_write(exc, output)
    risky = result.at_risk()
    for p in risky:
        click.echo(f"{'FAIL' if p.verdict == 'fail' else 'SMS only'}: {p.place}")
    click.echo(f"wrote {output} and {png} ({len(result.samples)} samples, {len(result.places())} places)")
    if strict and any(p.verdict == "fail" for p in risky):
        sys.exit(1)

"""Device configuration: ``/etc/lonewatch/device.toml`` → frozen :class:`DeviceConfig` (SPEC §2).

Built once at start; every problem is reported together with file:line
(:class:`protocol.configfile.ConfigError`). Standard library only: the file is also written
here by hand (:func:`render_device_toml`), since the Pi has no TOML writer.

This module holds :class:`DeviceConfig` and the reader/checker (:func:`load_device_config`);
the section dataclasses and constants live in :mod:`device.config_sections`, the writer in
:mod:`device.config_write` (issue 9 split); every name is re-exported here.

All durations are in seconds (``*_s``); GPIO pins are BCM numbers, ``0`` means "not wired".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from protocol.configfile import ConfigChecker, ConfigSource, TableReader, load_toml

from .config_sections import (
    BATTERY_SOURCES,
    BAUDRATES,
    CHECKIN_MIN_S,
    DEVICE_ID_PATTERN,
    E164_PATTERN,
    FIRMWARE_VERSION,
    LANGUAGES,
    MODEM_FLAVOURS,
    POWER_MODES,
    TEST_CHECKIN_MIN_S,
    BatteryConfig,
    DeviceSection,
    GpioConfig,
    ModemConfig,
    MqttConfig,
    ShiftConfig,
    SmsConfig,
    SmsRecipient,
    TimingConfig,
    WorkerConfig,
)
from .config_write import render_device_toml, write_device_config
from .place_config import BeaconConfig, ReadinessConfig, build_beacons, build_readiness
from .mandown_config import MandownConfig, read_mandown
from .shift import ScheduleError, parse_window
from .voiceconfig import VoiceConfig, read_voice

__all__ = [
    "BAUDRATES",
    "DEVICE_ID_PATTERN",
    "E164_PATTERN",
    "FIRMWARE_VERSION",
    "LANGUAGES",
    "DeviceConfig",
    "BatteryConfig",
    "DeviceSection",
    "GpioConfig",
    "ModemConfig",
    "MqttConfig",
    "ShiftConfig",
    "SmsConfig",
    "SmsRecipient",
    "TimingConfig",
    "WorkerConfig",
    "load_device_config",
    "render_device_toml",
    "write_device_config",
]


@dataclass(frozen=True)
class DeviceConfig:
    """The whole ``device.toml``. Build with :func:`load_device_config` or :meth:`from_dict`."""

    device: DeviceSection
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    modem: ModemConfig = field(default_factory=ModemConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    battery: BatteryConfig = field(default_factory=BatteryConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)  # [voice], device/voiceconfig.py
    beacons: BeaconConfig = field(default_factory=BeaconConfig)  # issue 12 (device.place_config)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    mandown: MandownConfig = field(default_factory=MandownConfig)

    @property
    def firmware(self) -> str:
        return FIRMWARE_VERSION

    @property
    def queue_path(self) -> Path:
        """``state_dir/queue.db`` (the durable event queue, :mod:`device.queue`)."""
        return Path(self.device.state_dir) / "queue.db"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> DeviceConfig:
        """Validate an in-memory document shaped like ``device.toml``.

        Raises:
            ConfigError: every problem found (no line numbers for dicts).
        """
        return _build(ConfigSource.from_dict(data, source))


def load_device_config(path: str | PathLike[str]) -> DeviceConfig:
    """Read and validate ``device.toml``.

    Raises:
        ConfigError: unreadable / non-UTF-8 / invalid TOML, or every schema problem found,
            one ``file:line: key: message`` line each; secret values shown as ``<hidden>``.
    """
    return _build(load_toml(path))


def _build(source: ConfigSource) -> DeviceConfig:
    checker = ConfigChecker(source)
    root = checker.root()

    t = root.table("device", required=True)
    device = DeviceSection(
        id=t.string("id", pattern=DEVICE_ID_PATTERN,
                    describe="a device id of 3-32 characters a-z, 0-9, - (not starting with -)"),
        state_dir=t.string("state_dir", DeviceSection.state_dir, nonempty=True),
        silent=t.boolean("silent", DeviceSection.silent),
        timezone=t.string("timezone", "", check=_check_timezone),
    )

    t = root.table("mqtt")
    mqtt = MqttConfig(
        host=t.string("host", MqttConfig.host, nonempty=True),
        port=t.integer("port", MqttConfig.port, min=1, max=65535),
        username=t.string("username", "") or device.id,
        password=t.string("password", ""),
        tls=t.boolean("tls", MqttConfig.tls),
        ca_file=t.string("ca_file", MqttConfig.ca_file),
        cert_file=t.string("cert_file", ""),
        key_file=t.string("key_file", ""),
        keepalive_s=t.integer("keepalive_s", MqttConfig.keepalive_s, min=5, max=600),
    )
    if bool(mqtt.cert_file) != bool(mqtt.key_file):
        t.problem("key_file" if mqtt.cert_file else "cert_file", "cert_file and key_file go together (client certificate login)")
    elif mqtt.cert_file and not mqtt.tls:
        t.problem("cert_file", "a client certificate needs tls = true")

    t = root.table("timing")
    d = TimingConfig
    test_mode = t.boolean("test_mode", d.test_mode)
    hold_s = t.number("hold_s", d.hold_s, min=0.5, max=10)
    timing = TimingConfig(
        hold_s=hold_s,
        alive_interval_s=t.integer("alive_interval_s", d.alive_interval_s, min=5, max=3600),
        resend_after_s=t.number("resend_after_s", d.resend_after_s, min=1, max=300),
        sms_fallback_after_s=t.number("sms_fallback_after_s", d.sms_fallback_after_s,
                                      min=1 if test_mode else 5, max=600),
        checkin_default_s=t.integer("checkin_default_s", d.checkin_default_s,
                                    min=TEST_CHECKIN_MIN_S if test_mode else CHECKIN_MIN_S,
                                    max=86400),
        cancel_presses=t.integer("cancel_presses", d.cancel_presses, min=2, max=10),
        cancel_window_s=t.number("cancel_window_s", d.cancel_window_s, min=0.2, max=10),
        checkin_presses=t.integer("checkin_presses", d.checkin_presses, min=2, max=10),
        checkin_window_s=t.number("checkin_window_s", d.checkin_window_s, min=0.2, max=10),
        bounce_s=t.number("bounce_s", d.bounce_s, min=0, max=0.5),
        min_press_s=t.number("min_press_s", d.min_press_s, min=0, max=0.5),
        max_press_s=t.number("max_press_s", min(d.max_press_s, hold_s / 2), min=0.2, max=10),
        checkin_warn_before_s=t.integer("checkin_warn_before_s", d.checkin_warn_before_s,
                                        min=0, max=3600),
        sms_retry_s=t.number("sms_retry_s", d.sms_retry_s, min=1 if test_mode else 5, max=600),
        test_mode=test_mode,
    )
    if 0.2 <= timing.max_press_s and 0.5 <= timing.hold_s <= timing.max_press_s:
        t.problem("max_press_s", f"must be shorter than timing.hold_s ({timing.hold_s:g})")
    elif 0 <= timing.min_press_s <= 0.5 and 0.2 <= timing.max_press_s <= timing.min_press_s:
        t.problem("min_press_s", f"must be shorter than timing.max_press_s ({timing.max_press_s:g})")
    checkin_min = TEST_CHECKIN_MIN_S if test_mode else CHECKIN_MIN_S
    if checkin_min <= timing.checkin_default_s <= timing.checkin_warn_before_s:
        t.problem("checkin_warn_before_s",
                  f"must be shorter than timing.checkin_default_s ({timing.checkin_default_s})")
    if timing.cancel_presses == timing.checkin_presses:
        t.problem("checkin_presses", "must differ from timing.cancel_presses "
                  f"(both {timing.cancel_presses}): the gestures would be ambiguous")

    t = root.table("gpio")
    g = GpioConfig
    gpio = GpioConfig(
        button_pin=t.integer("button_pin", g.button_pin, min=1, max=27),
        led_pin=t.integer("led_pin", g.led_pin, min=0, max=27),
        vibration_pin=t.integer("vibration_pin", g.vibration_pin, min=0, max=27),
        buzzer_pin=t.integer("buzzer_pin", g.buzzer_pin, min=0, max=27),
    )
    gpio_reader = t

    t = root.table("modem")
    modem = ModemConfig(
        enabled=t.boolean("enabled", ModemConfig.enabled),
        port=t.string("port", ModemConfig.port, nonempty=True),
        baudrate=t.integer("baudrate", ModemConfig.baudrate, choices=BAUDRATES),
        sim_pin=t.string("sim_pin", "", pattern=r"([0-9]{4,8})?",
                         describe="4 to 8 digits or empty"),
        flavour=t.string("flavour", ModemConfig.flavour, choices=MODEM_FLAVOURS),
        gnss=t.boolean("gnss", ModemConfig.gnss),
        power_pin=t.integer("power_pin", ModemConfig.power_pin, min=0, max=27),
        power_mode=t.string("power_mode", ModemConfig.power_mode, choices=POWER_MODES),
        power_active_high=t.boolean("power_active_high", ModemConfig.power_active_high),
        power_off_s=t.number("power_off_s", ModemConfig.power_off_s, min=0.5, max=60),
        sms_timeout_s=t.number("sms_timeout_s", ModemConfig.sms_timeout_s, min=5, max=300),
    )
    _check_distinct_pins(gpio, gpio_reader, modem, t)

    t = root.table("sms")
    sms = SmsConfig(
        fallback_numbers=tuple(t.string_list(
            "fallback_numbers", [], pattern=E164_PATTERN, unique=True,
            describe="an E.164 number like \"+4512345678\"")),
        language=t.string("language", SmsConfig.language, choices=LANGUAGES),
    )
    extra: list[SmsRecipient] = []
    seen = set(sms.fallback_numbers)
    for r in t.tables("fallback"):
        number = r.string("number", pattern=E164_PATTERN,
                          describe="an E.164 number like \"+4512345678\"")
        language = r.string("language", sms.language, choices=LANGUAGES)
        if number in seen:
            r.problem("number", f"{number} is already a fallback number")
        elif number:
            seen.add(number)
            extra.append(SmsRecipient(number, language))
    sms = SmsConfig(sms.fallback_numbers, sms.language, tuple(extra))

    t = root.table("worker")
    worker = WorkerConfig(name=t.string("name", "", max_len=64),
                          site=t.string("site", "", max_len=64))

    t = root.table("shift")
    entries = t.string_list("schedule", [])
    for i, entry in enumerate(entries):
        try:
            parse_window(entry)
        except ScheduleError as exc:
            checker.problem(t.keypath + ("schedule", i), str(exc))
    shift = ShiftConfig(schedule=tuple(entries))

    t = root.table("battery")
    b = BatteryConfig
    battery = BatteryConfig(
        source=t.string("source", b.source, choices=BATTERY_SOURCES),
        i2c_bus=t.integer("i2c_bus", b.i2c_bus, min=0, max=255),
        i2c_address=t.integer("i2c_address", b.i2c_address, min=0x03, max=0x77),
        low_pct=t.integer("low_pct", b.low_pct, min=1, max=90),
        restore_pct=t.integer("restore_pct", b.restore_pct, min=2, max=100),
        poll_s=t.number("poll_s", b.poll_s, min=1 if test_mode else 10, max=3600),
    )
    if 1 <= battery.low_pct <= 90 and 2 <= battery.restore_pct <= battery.low_pct:
        t.problem("restore_pct", f"must be above battery.low_pct ({battery.low_pct}): "
                  "the gap is the hysteresis that stops low/restore flapping")

    voice = read_voice(root.table("voice"), test_mode=test_mode)
    beacons = build_beacons(root.table("beacons"), test_mode)
    readiness = build_readiness(root.table("readiness"), test_mode)

    pins = {getattr(gpio, k): f"gpio.{k}" for k in ("button_pin", "led_pin", "vibration_pin", "buzzer_pin")}
    mandown = read_mandown(root.table("mandown"), {**pins, modem.power_pin: "modem.power_pin"},
                           {"timing.cancel_presses": timing.cancel_presses, "timing.checkin_presses": timing.checkin_presses})

    checker.finish()
    return DeviceConfig(device=device, mqtt=mqtt, timing=timing, gpio=gpio, modem=modem,
                        sms=sms, worker=worker, shift=shift, battery=battery, voice=voice, beacons=beacons,
                        readiness=readiness, mandown=mandown)


def _check_timezone(name: str) -> str | None:
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return (f"unknown time zone {name!r}; use an IANA name like \"Europe/Copenhagen\" "
                "(is the tzdata package installed?)")
    return None


def _check_distinct_pins(gpio: GpioConfig, gpio_reader: TableReader, modem: ModemConfig,
                         modem_reader: TableReader) -> None:
    used: dict[int, str] = {}
    pins = [(gpio_reader, name, getattr(gpio, name))
            for name in ("button_pin", "led_pin", "vibration_pin", "buzzer_pin")]
    pins.append((modem_reader, "power_pin", modem.power_pin))
    for reader, name, pin in pins:
        if not isinstance(pin, int) or pin == 0:
            continue
        full = f"{reader.keypath[0]}.{name}"
        if pin in used:
            reader.problem(name, f"pin {pin} is already used by {used[pin]}")
        else:
            used[pin] = full

"""The sections of ``device.toml`` as frozen dataclasses, and the constants their rules use (SPEC §2).

Split out of :mod:`device.config` (issue 9: one responsibility a module); that module reads and
checks the file (:func:`device.config.load_device_config`) and re-exports every name here, so
``from device.config import TimingConfig`` keeps working. The sections of later issues live in
their own modules (:mod:`device.voiceconfig`, :mod:`device.place_config`,
:mod:`device.mandown_config`); the whole file is :class:`device.config.DeviceConfig`.

All durations are in seconds (``*_s``); GPIO pins are BCM numbers, ``0`` means "not wired".
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BAUDRATES",
    "BATTERY_SOURCES",
    "CHECKIN_MIN_S",
    "DEVICE_ID_PATTERN",
    "E164_PATTERN",
    "FIRMWARE_VERSION",
    "LANGUAGES",
    "MODEM_FLAVOURS",
    "POWER_MODES",
    "TEST_CHECKIN_MIN_S",
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
]

FIRMWARE_VERSION = "0.1.0"
"""Firmware version reported in alive messages; a code constant, not a config key."""

DEVICE_ID_PATTERN = r"[a-z0-9][a-z0-9-]{2,31}"
E164_PATTERN = r"\+[1-9][0-9]{6,14}"
LANGUAGES = ("da", "en", "pl", "ro", "uk", "ar")
BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
MODEM_FLAVOURS = ("auto", "sim7600", "quectel")
POWER_MODES = ("switch", "pwrkey")
BATTERY_SOURCES = ("none", "fake", "max17048")
#: Shortest check-in a device accepts, seconds; ``[timing] test_mode`` lowers it to
#: :data:`TEST_CHECKIN_MIN_S` for demos and tests only.
CHECKIN_MIN_S = 60
TEST_CHECKIN_MIN_S = 5


@dataclass(frozen=True)
class DeviceSection:
    """``[device]``: ``id`` (required, ``^[a-z0-9][a-z0-9-]{2,31}$``), ``state_dir`` (holds
    ``queue.db`` and the control socket), ``silent`` (alarm sent as silent panic, no buzzer),
    ``timezone`` (IANA name such as ``"Europe/Copenhagen"`` for local times in SMS texts and
    the shift schedule; ``""`` = the system's zone)."""

    id: str
    state_dir: str = "/var/lib/lonewatch"
    silent: bool = True
    timezone: str = ""


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``: broker connection. ``username`` defaults to the device id; ``ca_file`` ""
    means the system CA store."""

    host: str = "localhost"
    port: int = 8883
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = True
    ca_file: str = ""
    #: Client certificate login (``lonewatch provision --auth certificate``): both or neither;
    #: the certificate's CN is the device id.
    cert_file: str = ""
    key_file: str = ""
    #: Longer than the alive interval: the alive (QoS 1) keeps the link busy, so MQTT sends no
    #: extra PINGREQ between alives (radio wake-ups, cellular bytes; issue 5 power finding).
    keepalive_s: int = 90


@dataclass(frozen=True)
class TimingConfig:
    """``[timing]``: button gestures and delivery timers, all in seconds (SPEC §2).

    ``min_press_s``: a touch shorter than this is accidental and ignored; ``max_press_s``: a
    press longer than this (but shorter than ``hold_s``) is no short press and ends a press
    sequence (default 0.8 s, at most half of ``hold_s``); ``checkin_warn_before_s``: the warning vibration comes this long before a
    check-in expires; ``sms_retry_s``: first wait before a failed SMS is tried again (doubles,
    at most 10 minutes); ``test_mode``: allow check-ins from 5 s and SMS fallback from 1 s
    (demos and tests only — never on a worn device)."""

    hold_s: float = 2.0
    alive_interval_s: int = 60
    resend_after_s: float = 10.0
    sms_fallback_after_s: float = 20.0
    checkin_default_s: int = 1800
    cancel_presses: int = 3
    cancel_window_s: float = 2.0
    checkin_presses: int = 2
    checkin_window_s: float = 1.0
    bounce_s: float = 0.05
    min_press_s: float = 0.06
    max_press_s: float = 0.8
    checkin_warn_before_s: int = 60
    sms_retry_s: float = 30.0
    test_mode: bool = False


@dataclass(frozen=True)
class GpioConfig:
    """``[gpio]``: BCM pin numbers; ``0`` = not wired (the button must be wired)."""

    button_pin: int = 17
    led_pin: int = 27
    vibration_pin: int = 22
    buzzer_pin: int = 0


@dataclass(frozen=True)
class ModemConfig:
    """``[modem]``: the AT serial port — a path (best a stable udev name) or
    ``usb:VID:PID[:IF]`` (:mod:`modem.port`). ``sim_pin`` "" = no PIN; ``power_pin`` 0 =
    not wired, else the GPIO that power-cycles the modem (``power_mode`` ``"switch"``: supply
    switch, ``"pwrkey"``: the modem's power key; ``power_off_s`` seconds off);
    ``sms_timeout_s`` seconds to wait for each step of an SMS send."""

    enabled: bool = True
    port: str = "/dev/lonewatch-modem"
    baudrate: int = 115200
    sim_pin: str = field(default="", repr=False)
    flavour: str = "auto"
    gnss: bool = True
    power_pin: int = 0
    power_mode: str = "switch"
    power_active_high: bool = True
    power_off_s: float = 3.0
    sms_timeout_s: float = 60.0


@dataclass(frozen=True)
class SmsRecipient:
    """One SMS fallback recipient: E.164 ``number`` and the ``language`` of its texts."""

    number: str
    language: str


@dataclass(frozen=True)
class SmsConfig:
    """``[sms]``: who gets an alarm by SMS when the relay does not confirm it in time (SPEC §2).

    ``fallback_numbers`` (E.164) get texts in ``language``; ``fallback`` lists recipients with
    their own language, ``fallback = [{number = "+48601234567", language = "pl"}]``. Both may
    be used; a number may appear once. :attr:`recipients` is the combined list in order."""

    fallback_numbers: tuple[str, ...] = ()
    language: str = "da"
    fallback: tuple[SmsRecipient, ...] = ()

    @property
    def recipients(self) -> tuple[SmsRecipient, ...]:
        """Every recipient: ``fallback_numbers`` (in ``language``) then ``fallback``."""
        return tuple(SmsRecipient(n, self.language) for n in self.fallback_numbers) + self.fallback


@dataclass(frozen=True)
class ShiftConfig:
    """``[shift]``: ``schedule`` — weekly windows like ``"Mon-Fri 22:00-06:00"`` in the
    device's local time (:mod:`device.shift`); empty = shifts start/end by hand only."""

    schedule: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatteryConfig:
    """``[battery]``: the fuel gauge (:mod:`device.battery`). ``source`` ``"none"``,
    ``"fake"`` (demo/tests) or ``"max17048"`` (I2C ``i2c_bus``/``i2c_address``);
    ``low_battery`` is raised at or below ``low_pct`` %, ``battery_restore`` at or above
    ``restore_pct`` % (hysteresis); read every ``poll_s`` seconds."""

    source: str = "none"
    i2c_bus: int = 1
    i2c_address: int = 0x36
    low_pct: int = 20
    restore_pct: int = 30
    poll_s: float = 60.0


@dataclass(frozen=True)
class WorkerConfig:
    """``[worker]``: who wears the device and where; used in the SMS fallback text."""

    name: str = ""
    site: str = ""

"""Config files: device.toml, relay.toml, registry — errors with file:line, all at once,
defaults, round trip, file mode, secrets never echoed (SPEC §2, §3; STYLE "config")."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from device.config import (
    FIRMWARE_VERSION,
    DeviceConfig,
    load_device_config,
    render_device_toml,
    write_device_config,
)
from protocol.configfile import (
    ConfigChecker,
    ConfigError,
    ConfigProblem,
    ConfigSource,
    format_key,
    load_toml,
)
from protocol.errors import LonewatchError
from relay.config import RelayConfig, load_relay_config, redact_url


def write(tmp_path: Path, text: str, name: str = "device.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(fn, path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        fn(path)
    return str(info.value).splitlines()


# --------------------------------------------------------------------------- device.toml

DEVICE_BASE = """\
[device]
id = "lw-0001"
{device}
[mqtt]
{mqtt}
[timing]
{timing}
[gpio]
{gpio}
[modem]
{modem}
[sms]
{sms}
[worker]
{worker}
"""
# line of each placeholder in DEVICE_BASE
DEVICE_LINES = {"device": 3, "mqtt": 5, "timing": 7, "gpio": 9, "modem": 11, "sms": 13,
                "worker": 15}


def device_file(tmp_path: Path, section: str, line: str) -> Path:
    parts = {k: "" for k in DEVICE_LINES}
    parts[section] = line
    return write(tmp_path, DEVICE_BASE.format(**parts))


BAD_DEVICE_LINES = [
    ("mqtt", 'port = "abc"', "mqtt.port", 'must be an integer 1..65535, got "abc"'),
    ("mqtt", "port = 0", "mqtt.port", "must be an integer 1..65535, got 0"),
    ("mqtt", "port = 70000", "mqtt.port", "must be an integer 1..65535, got 70000"),
    ("mqtt", "port = true", "mqtt.port", "must be an integer 1..65535, got true"),
    ("mqtt", "port = 8883.0", "mqtt.port", "must be an integer 1..65535, got 8883.0"),
    ("mqtt", "tls = 1", "mqtt.tls", "must be true or false, got 1"),
    ("mqtt", 'tls = "yes"', "mqtt.tls", 'must be true or false, got "yes"'),
    ("mqtt", 'host = ""', "mqtt.host", 'must be a non-empty string, got ""'),
    ("mqtt", "keepalive_s = 1", "mqtt.keepalive_s", "must be an integer 5..600, got 1"),
    ("mqtt", "prot = 1883", "mqtt.prot", 'unknown key; did you mean "port"?'),
    ("mqtt", "password = 1234", "mqtt.password", "must be a string, got <hidden>"),
    ("device", "silent = 0", "device.silent", "must be true or false, got 0"),
    ("device", 'state_dir = ""', "device.state_dir", 'must be a non-empty string, got ""'),
    ("timing", "hold_s = 0.1", "timing.hold_s", "must be a number 0.5..10, got 0.1"),
    ("timing", "hold_s = true", "timing.hold_s", "must be a number 0.5..10, got true"),
    ("timing", "hold_s = nan", "timing.hold_s", "must be a number 0.5..10, got nan"),
    ("timing", "alive_interval_s = 4", "timing.alive_interval_s",
     "must be an integer 5..3600, got 4"),
    ("timing", "resend_after_s = 301", "timing.resend_after_s",
     "must be a number 1..300, got 301"),
    ("timing", "sms_fallback_after_s = 4.5", "timing.sms_fallback_after_s",
     "must be a number 5..600, got 4.5"),
    ("timing", "checkin_default_s = 59", "timing.checkin_default_s",
     "must be an integer 60..86400, got 59"),
    ("timing", "bounce_s = -0.01", "timing.bounce_s", "must be a number 0..0.5, got -0.01"),
    ("timing", "checkin_presses = 3", "timing.checkin_presses",
     "must differ from timing.cancel_presses (both 3): the gestures would be ambiguous"),
    ("timing", "hold = 2", "timing.hold", 'unknown key; did you mean "hold_s"?'),
    ("gpio", "button_pin = 0", "gpio.button_pin", "must be an integer 1..27, got 0"),
    ("gpio", "led_pin = 28", "gpio.led_pin", "must be an integer 0..27, got 28"),
    ("gpio", "vibration_pin = 17", "gpio.vibration_pin",
     "pin 17 is already used by gpio.button_pin"),
    ("gpio", "buzzer_pin = 27", "gpio.buzzer_pin", "pin 27 is already used by gpio.led_pin"),
    ("modem", "power_pin = 22", "modem.power_pin",
     "pin 22 is already used by gpio.vibration_pin"),
    ("modem", "baudrate = 1000", "modem.baudrate",
     "must be one of 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, got 1000"),
    ("modem", 'flavour = "Quectel"', "modem.flavour",
     'must be one of "auto", "sim7600", "quectel", got "Quectel"; did you mean "quectel"?'),
    ("modem", 'flavour = "sim7060"', "modem.flavour",
     'must be one of "auto", "sim7600", "quectel", got "sim7060"; did you mean "sim7600"?'),
    ("modem", 'sim_pin = "12a4"', "modem.sim_pin", "must be 4 to 8 digits or empty, got <hidden>"),
    ("modem", "sim_pin = 1234", "modem.sim_pin", "must be 4 to 8 digits or empty, got <hidden>"),
    ("modem", 'port = ""', "modem.port", 'must be a non-empty string, got ""'),
    ("sms", 'fallback_numbers = ["+4512345678", "004512345678"]', "sms.fallback_numbers[1]",
     'must be an E.164 number like "+4512345678", got "004512345678"'),
    ("sms", 'fallback_numbers = ["+4512345678", "+4512345678"]', "sms.fallback_numbers[1]",
     'duplicate "+4512345678"'),
    ("sms", 'fallback_numbers = "+4512345678"', "sms.fallback_numbers",
     'must be an array of strings, got "+4512345678"'),
    ("sms", 'language = "de"', "sms.language",
     'must be one of "da", "en", "pl", "ro", "uk", "ar", got "de"'),
    ("sms", 'language = "EN"', "sms.language",
     'must be one of "da", "en", "pl", "ro", "uk", "ar", got "EN"; did you mean "en"?'),
    ("worker", "name = " + '"' + "x" * 65 + '"', "worker.name",
     "must be at most 64 characters, got 65"),
    ("worker", "nmae = 'Anna'", "worker.nmae", 'unknown key; did you mean "name"?'),
]


@pytest.mark.parametrize("section,line,key,message", BAD_DEVICE_LINES,
                         ids=[f"{c[2]}={c[1][-20:]}" for c in BAD_DEVICE_LINES])
def test_bad_device_line_reports_file_line_key_message(tmp_path, section, line, key, message):
    path = device_file(tmp_path, section, line)
    lineno = DEVICE_LINES[section]
    assert errors_of(load_device_config, path) == [f"{path}:{lineno}: {key}: {message}"]


def test_device_id_required_and_pattern(tmp_path):
    path = write(tmp_path, "[device]\nsilent = false\n")
    assert errors_of(load_device_config, path) == [
        f"{path}:1: device.id: required key is missing"]
    path = write(tmp_path, '[device]\nid = "LW_1"\n')
    assert errors_of(load_device_config, path) == [
        f'{path}:2: device.id: must be a device id of 3-32 characters a-z, 0-9, - '
        f'(not starting with -), got "LW_1"']
    path = write(tmp_path, "[mqtt]\nport = 1883\n")
    assert errors_of(load_device_config, path) == [
        f"{path}: device: required table is missing"]


def test_all_device_errors_reported_together_in_file_order(tmp_path):
    path = write(tmp_path, """\
[device]
id = "lw-0001"
colour = "red"

[mqtt]
port = "abc"
tls = "yes"

[gpio]
led_pin = 17

[modem]
flavour = "nokia"
sim_pin = "secret-pin"

[mqqt]
host = "x"
""")
    with pytest.raises(ConfigError) as info:
        load_device_config(path)
    err = info.value
    assert isinstance(err, LonewatchError) and isinstance(err, ValueError)
    assert [(p.line, p.key) for p in err.problems] == [
        (3, "device.colour"), (6, "mqtt.port"), (7, "mqtt.tls"), (10, "gpio.led_pin"),
        (13, "modem.flavour"), (14, "modem.sim_pin"), (16, "mqqt")]
    assert err.problems[-1] == ConfigProblem(str(path), 16, "mqqt",
                                             'unknown table; did you mean "mqtt"?')
    assert len(str(err).splitlines()) == 7
    assert "secret-pin" not in str(err)


def test_device_defaults(tmp_path):
    cfg = load_device_config(write(tmp_path, '[device]\nid = "lw-0001"\n'))
    assert cfg.device.state_dir == "/var/lib/lonewatch" and cfg.device.silent is True
    assert cfg.mqtt.host == "localhost" and cfg.mqtt.port == 8883 and cfg.mqtt.tls is True
    assert cfg.mqtt.username == "lw-0001"  # defaults to the device id
    assert cfg.mqtt.password == "" and cfg.mqtt.keepalive_s == 90
    t = cfg.timing
    assert (t.hold_s, t.alive_interval_s, t.resend_after_s, t.sms_fallback_after_s) == (
        2.0, 60, 10.0, 20.0)
    assert (t.checkin_default_s, t.cancel_presses, t.cancel_window_s) == (1800, 3, 2.0)
    assert (t.checkin_presses, t.checkin_window_s, t.bounce_s) == (2, 1.0, 0.05)
    assert (cfg.gpio.button_pin, cfg.gpio.led_pin, cfg.gpio.vibration_pin,
            cfg.gpio.buzzer_pin) == (17, 27, 22, 0)
    m = cfg.modem
    assert (m.enabled, m.port, m.baudrate, m.sim_pin, m.flavour, m.gnss, m.power_pin) == (
        True, "/dev/lonewatch-modem", 115200, "", "auto", True, 0)
    assert cfg.sms.fallback_numbers == () and cfg.sms.language == "da"
    assert cfg.worker.name == "" and cfg.worker.site == ""
    assert cfg.firmware == FIRMWARE_VERSION
    assert cfg.queue_path == Path("/var/lib/lonewatch/queue.db")
    assert isinstance(cfg.timing.hold_s, float)
    # integers are fine where a number is expected, and come back as float
    cfg2 = DeviceConfig.from_dict({"device": {"id": "lw-0001"}, "timing": {"hold_s": 3}})
    assert cfg2.timing.hold_s == 3.0 and isinstance(cfg2.timing.hold_s, float)


def test_device_from_dict_errors_have_no_line():
    with pytest.raises(ConfigError) as info:
        DeviceConfig.from_dict({"device": {"id": "lw-0001"}, "mqtt": {"port": "abc"}},
                               source="demo")
    assert str(info.value) == 'demo: mqtt.port: must be an integer 1..65535, got "abc"'
    assert info.value.problems[0].line is None


def test_config_is_frozen_and_repr_hides_secrets():
    cfg = DeviceConfig.from_dict({"device": {"id": "lw-0001"},
                                  "mqtt": {"password": "hunter22"},
                                  "modem": {"sim_pin": "4711"}})
    with pytest.raises(AttributeError):
        cfg.mqtt.port = 1  # type: ignore[misc]
    assert "hunter22" not in repr(cfg) and "4711" not in repr(cfg)
    assert cfg.mqtt.password == "hunter22" and cfg.modem.sim_pin == "4711"


def full_device_config() -> DeviceConfig:
    return DeviceConfig.from_dict({
        "device": {"id": "lw-0042", "state_dir": "/tmp/lw state", "silent": False},
        "mqtt": {"host": "mqtt.example.dk", "port": 8884, "username": "dev42",
                 "password": 'p"a\\s\ts wørd', "tls": False, "ca_file": "/etc/ca.pem",
                 "keepalive_s": 45},
        "timing": {"hold_s": 1.5, "alive_interval_s": 120, "resend_after_s": 7,
                   "sms_fallback_after_s": 30.5, "checkin_default_s": 900,
                   "cancel_presses": 4, "cancel_window_s": 2.5, "checkin_presses": 2,
                   "checkin_window_s": 0.75, "bounce_s": 0.0},
        "gpio": {"button_pin": 5, "led_pin": 6, "vibration_pin": 13, "buzzer_pin": 19},
        "modem": {"enabled": False, "port": "/dev/ttyUSB2", "baudrate": 9600,
                  "sim_pin": "12345678", "flavour": "quectel", "gnss": False, "power_pin": 26},
        "sms": {"fallback_numbers": ["+4512345678", "+48601234567"], "language": "pl"},
        "worker": {"name": "Søren \"Sø\" Østergård", "site": "Vaskeriet\\Nørrebro #2"},
    })


def test_round_trip_render_then_load(tmp_path):
    cfg = full_device_config()
    path = tmp_path / "device.toml"
    write_device_config(cfg, path)
    assert load_device_config(path) == cfg
    # defaults round-trip too, and rendering is stable
    minimal = DeviceConfig.from_dict({"device": {"id": "lw-0001"}})
    write_device_config(minimal, path)
    assert load_device_config(path) == minimal
    assert render_device_toml(load_device_config(path)) == render_device_toml(minimal)


def test_render_escapes_control_characters(tmp_path):
    cfg = replace(full_device_config(),
                  worker=replace(full_device_config().worker, name="a\x01b\nc\x7f"))
    path = tmp_path / "device.toml"
    write_device_config(cfg, path)
    assert load_device_config(path).worker.name == "a\x01b\nc\x7f"


def test_written_file_is_0600_even_with_open_umask_and_existing_file(tmp_path):
    path = tmp_path / "device.toml"
    path.write_text("old = 1\n")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_device_config(full_device_config(), path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["device.toml"]  # no temp file left


def test_write_never_chmods(tmp_path, monkeypatch):
    def no_chmod(*a, **k):
        raise AssertionError("chmod called")
    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    write_device_config(full_device_config(), tmp_path / "d.toml")
    assert stat.S_IMODE((tmp_path / "d.toml").stat().st_mode) == 0o600


# --------------------------------------------------------------------------- loading


def test_toml_syntax_error_has_file_and_line(tmp_path):
    path = write(tmp_path, '[device]\nid = "lw-0001"\n\n[mqtt]\nport = \n')
    assert errors_of(load_device_config, path) == [
        f"{path}:5: invalid TOML: Invalid value (column 8)"]
    path = write(tmp_path, '[device]\nid = "a"\nid = "b"\n')
    assert errors_of(load_device_config, path) == [
        f"{path}:3: invalid TOML: Cannot overwrite a value (column 9)"]
    path = write(tmp_path, "[device]\nid = [\n")
    assert errors_of(load_device_config, path) == [
        f"{path}:2: invalid TOML: Invalid value (at end of file)"]


def test_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "device.toml"
    path.write_bytes('[device]\nid = "lw-0001"\n[worker]\nname = "S\u00f8ren"\n'.encode("latin-1"))
    assert errors_of(load_device_config, path) == [
        f"{path}:4: not UTF-8 text (byte 0xf8 at column 10); save the file as UTF-8"]


def test_utf8_bom_is_tolerated(tmp_path):
    path = tmp_path / "device.toml"
    path.write_bytes(b'\xef\xbb\xbf[device]\nid = "lw-0001"\n')
    assert load_device_config(path).device.id == "lw-0001"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert errors_of(load_device_config, path) == [
        f"{path}: cannot read: No such file or directory"]


LINE_DOC = """\
# comment [not.a.table]
top = 1
[a]
x = 1
"quoted.key" = 2
b.c = 3
text = \"\"\"
fake = 1
[fake]
\"\"\"
after = 4

[[arr.items]]
name = "first"

[[arr.items]]
name = "second"
[[arr.items.sub]]
v = 1
[[arr.items.sub]]
v = 2

[[arr.items]]
name = "third"
inline = { host = "h", port = 1 }
[ a . "d e" ]
y = 5
"""


@pytest.mark.parametrize("keypath,line", [
    (("top",), 2),
    (("a",), 3),
    (("a", "x"), 4),
    (("a", "quoted.key"), 5),
    (("a", "b", "c"), 6),
    (("a", "b"), 6),
    (("a", "text"), 7),
    (("a", "after"), 11),
    (("fake",), None),
    (("a", "missing"), 3),          # falls back to the table header
    (("arr", "items", 0, "name"), 14),
    (("arr", "items", 1), 16),
    (("arr", "items", 1, "name"), 17),
    (("arr", "items", 1, "sub", 1, "v"), 21),
    (("arr", "items", 2, "name"), 24),
    (("arr", "items", 2, "missing"), 23),
    (("arr", "items", 2, "inline", "port"), 25),   # inside an inline table: its key's line
    (("a", "d e", "y"), 27),
    (("nothing", "here"), None),
])
def test_line_of_key_paths(keypath, line):
    import tomllib
    source = ConfigSource("doc.toml", tomllib.loads(LINE_DOC), LINE_DOC)
    assert source.line_of(keypath) == line


def test_format_key():
    assert format_key(("arc", "receivers", 1, "host")) == "arc.receivers[1].host"
    assert format_key(("a", "d e")) == 'a."d e"'


def test_checker_placeholders_and_required(tmp_path):
    source = ConfigSource.from_dict({"t": {"n": 1, "flag": True, "s": 3}})
    checker = ConfigChecker(source)
    t = checker.root().table("t")
    assert t.integer("n", min=0) == 1
    assert t.integer("flag", 5) == 5  # bool is not int: problem, default returned
    assert t.string("s", "d") == "d"
    assert t.string("must") == ""
    with pytest.raises(ConfigError) as info:
        checker.finish()
    assert str(info.value).splitlines() == [
        "<dict>: t.flag: must be an integer, got true",
        "<dict>: t.s: must be a string, got 3",
        "<dict>: t.must: required key is missing",
    ]


# --------------------------------------------------------------------------- relay.toml

RELAY_TOML = """\
[relay]
instance = "relay-a"
dispatch_workers = 8

[mqtt]
host = "broker"
password = "mqtt-secret"

[redis]
url = "redis://:redis-secret@redis:6379/1"

[arc]
format = "SIA-DCS"
partition = 2

[[arc.receivers]]
host = "arc1.example"
port = 12000
key = "0123456789ABCDEF0123456789abcdef"
receiver_no = "a1"

[[arc.receivers]]
host = "arc2.example"
port = 12001
max_xdata_blocks = 0
timeout_s = 2

[registry]
file = "registry.toml"
"""


def test_relay_config_values_and_defaults(tmp_path):
    path = write(tmp_path, RELAY_TOML, "relay.toml")
    cfg = load_relay_config(path)
    assert cfg.relay.instance == "relay-a" and cfg.relay.dispatch_workers == 8
    assert cfg.relay.dead_letter_maxlen == 100_000 and cfg.relay.event_log_maxlen == 1_000_000
    assert cfg.mqtt.client_id == "lonewatch-relay-relay-a"
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.username, cfg.mqtt.tls) == (
        "broker", 8883, "relay", True)
    assert cfg.mqtt.shared_group == "lonewatch-relay" and cfg.mqtt.keepalive_s == 30
    assert cfg.redis.url == "redis://:redis-secret@redis:6379/1"
    assert cfg.arc.format == "SIA-DCS" and cfg.arc.partition == 2
    assert cfg.arc.attempts_per_receiver == 3 and cfg.arc.backoff_s == 0.5
    r1, r2 = cfg.arc.receivers
    assert (r1.name, r1.host, r1.port, r1.timeout_s, r1.max_xdata_blocks) == (
        "primary", "arc1.example", 12000, 5.0, None)
    assert r1.encrypted and r1.receiver_no == "A1" and r1.line_no == "1"
    assert (r2.name, r2.max_xdata_blocks, r2.timeout_s, r2.encrypted) == (
        "secondary", 0, 2.0, False)
    assert cfg.registry.file == tmp_path / "registry.toml"
    for secret in ("mqtt-secret", "redis-secret", "0123456789ABCDEF"):
        assert secret not in repr(cfg)


def test_relay_defaults_from_empty_dict():
    cfg = RelayConfig.from_dict({})
    assert cfg.relay.instance == socket.gethostname()  # stable across restarts
    assert cfg.mqtt.client_id == f"lonewatch-relay-{cfg.relay.instance}"
    assert cfg.redis.url == "redis://localhost:6379/0"
    assert cfg.arc.receivers == () and cfg.arc.format == "ADM-CID"
    assert cfg.registry.file is None
    assert RelayConfig.from_dict({"registry": {"file": "/etc/r.toml"}}).registry.file == Path(
        "/etc/r.toml")


BAD_RELAY_LINES = [
    # (line in RELAY_TOML to replace, replacement, key, message)
    (3, "dispatch_workers = 0", "relay.dispatch_workers", "must be an integer 1..256, got 0"),
    (7, "password = 42", "mqtt.password", "must be a string, got <hidden>"),
    (10, 'url = "http://:redis-secret@redis/0"', "redis.url",
     'must be a redis://, rediss:// or unix:// URL, got "http://:<hidden>@redis/0"'),
    (10, 'url = 6379', "redis.url", "must be a string, got <hidden>"),
    (13, 'format = "CID"', "arc.format",
     'must be one of "ADM-CID", "SIA-DCS", got "CID"; did you mean "ADM-CID"?'),
    (14, "partition = 100", "arc.partition", "must be an integer 0..99, got 100"),
    (18, "port = 0", "arc.receivers[0].port", "must be an integer 1..65535, got 0"),
    (19, 'key = "0123456789ABCDE"', "arc.receivers[0].key",
     "must be 16, 24 or 32 hexadecimal characters (AES-128/192/256) or empty, got <hidden>"),
    (20, 'receiver_no = "1234567"', "arc.receivers[0].receiver_no",
     'must be 1-6 hexadecimal digits, got "1234567"'),
    (24, "port = false", "arc.receivers[1].port", "must be an integer 1..65535, got false"),
    (25, "max_xdata_blocks = 9", "arc.receivers[1].max_xdata_blocks",
     "must be an integer 0..8, got 9"),
    (26, "timeout = 2", "arc.receivers[1].timeout", 'unknown key; did you mean "timeout_s"?'),
    (29, "file = 3", "registry.file", "must be a string, got 3"),
]


@pytest.mark.parametrize("lineno,replacement,key,message", BAD_RELAY_LINES,
                         ids=[c[2] + "@" + str(c[0]) for c in BAD_RELAY_LINES])
def test_bad_relay_line(tmp_path, lineno, replacement, key, message):
    lines = RELAY_TOML.splitlines()
    lines[lineno - 1] = replacement
    path = write(tmp_path, "\n".join(lines) + "\n", "relay.toml")
    errors = errors_of(load_relay_config, path)
    assert errors == [f"{path}:{lineno}: {key}: {message}"]
    assert not any(s in "\n".join(errors) for s in ("mqtt-secret", "redis-secret"))


def test_relay_receiver_missing_keys_point_at_its_header(tmp_path):
    path = write(tmp_path, '[arc]\n[[arc.receivers]]\nhost = "a"\nport = 1\n'
                 '[[arc.receivers]]\nname = "primary"\n', "relay.toml")
    assert errors_of(load_relay_config, path) == [
        f"{path}:5: arc.receivers[1].host: required key is missing",
        f"{path}:5: arc.receivers[1].port: required key is missing",
        f'{path}:6: arc.receivers[1].name: duplicate receiver name "primary" '
        f"(also arc.receivers[0])",
    ]


def test_redact_url():
    assert redact_url("redis://:pw@h:1/0") == "redis://:<hidden>@h:1/0"
    assert redact_url("rediss://user:pw@h/0?password=pw2&x=1") == (
        "rediss://user:<hidden>@h/0?password=<hidden>&x=1")
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    cfg = RelayConfig.from_dict({"redis": {"url": "redis://:pw@h:1/0"}})
    assert "pw@" not in repr(cfg.redis)


@pytest.mark.parametrize("key", ["password", "sim_pin", "key", "secret", "api_key"])
def test_secret_values_never_echoed(key):
    checker = ConfigChecker(ConfigSource.from_dict({key: "hunter2-hunter2"}))
    root = checker.root()
    root.string(key, pattern=r"\d+")
    with pytest.raises(ConfigError) as info:
        checker.finish()
    assert "hunter2" not in str(info.value)
    assert str(info.value) == f"<dict>: {key}: must be a string matching \\d+, got <hidden>"


def test_load_toml_returns_source_with_base_dir(tmp_path):
    src = load_toml(write(tmp_path, "a = 1\n", "x.toml"))
    assert src.data == {"a": 1} and src.base_dir == tmp_path.resolve()
    assert src.line_of(("a",)) == 1


# --------------------------------------------------------------------------- relay.toml: supervision, metrics, ARC link (issue 4)

OPS_TOML = """\
[relay]
reclaim_idle_s = 5
log_format = "json"

[mqtt]
session_expiry_s = 300

[supervision]
mode = "always"
alive_interval_s = 30
missed_alives = 2
grace_s = 10
sweep_interval_s = 0.25

[metrics]
listen = "127.0.0.1:9187"

[arc]
account = "abc123"
link_test = "relay"
link_test_interval_s = 3600

[[arc.receivers]]
host = "arc1.example"
port = 12000
protocol = "udp"
poll_interval_s = 60
"""


def test_relay_operations_sections(tmp_path):
    cfg = load_relay_config(write(tmp_path, OPS_TOML, "relay.toml"))
    assert (cfg.relay.reclaim_idle_s, cfg.relay.log_format, cfg.mqtt.session_expiry_s) == (5.0, "json", 300)
    s = cfg.supervision
    assert (s.mode, s.alive_interval_s, s.missed_alives, s.grace_s, s.sweep_interval_s) == ("always", 30.0, 2, 10.0, 0.25)
    assert cfg.metrics.listen == "127.0.0.1:9187"
    assert (cfg.arc.account, cfg.arc.link_test, cfg.arc.link_test_interval_s) == ("ABC123", "relay", 3600.0)
    r = cfg.arc.receivers[0]
    assert (r.protocol, r.poll_interval_s) == ("udp", 60.0)


def test_relay_operations_defaults():
    cfg = RelayConfig.from_dict({})
    s = cfg.supervision
    assert (s.mode, s.alive_interval_s, s.missed_alives, s.grace_s) == ("on_shift", 60.0, 3, 5.0)  # SPEC §3: 60 × 3 + 5
    assert (s.checkin_grace_s, s.sweep_interval_s, s.requeue_after_s) == (5.0, 0.5, 5.0)
    assert cfg.metrics.listen == "" and cfg.relay.reclaim_idle_s == 30.0 and cfg.relay.log_format == "text"
    assert (cfg.arc.link_test, cfg.arc.account, cfg.redis.cluster) == ("off", "0000", False)
    assert cfg.mqtt.session_expiry_s == 7 * 24 * 3600


BAD_OPS_LINES = [
    (3, 'log_format = "xml"', "relay.log_format", 'must be one of "text", "json", got "xml"'),
    (2, "reclaim_idle_s = 0", "relay.reclaim_idle_s", "must be a number 0.5..3600, got 0"),
    (9, 'mode = "sometimes"', "supervision.mode", 'must be one of "on_shift", "always", "off", got "sometimes"'),
    (11, "missed_alives = 0", "supervision.missed_alives", "must be an integer 1..100, got 0"),
    (12, "grace = 10", "supervision.grace", 'unknown key; did you mean "grace_s"?'),
    (16, 'listen = "9187"', "metrics.listen", 'must be "HOST:PORT" (e.g. "127.0.0.1:9187") or empty, got "9187"'),
    (19, 'account = "xyz"', "arc.account", 'must be 3-16 hexadecimal characters, got "xyz"'),
    (20, 'link_test = "device-ish"', "arc.link_test", 'must be one of "off", "relay", "device", got "device-ish"; did you mean "device"?'),
    (26, 'protocol = "sctp"', "arc.receivers[0].protocol", 'must be one of "tcp", "udp", got "sctp"'),
    (27, "poll_interval_s = -1", "arc.receivers[0].poll_interval_s", "must be a number 0..86400, got -1"),
]


@pytest.mark.parametrize("lineno,replacement,key,message", BAD_OPS_LINES, ids=[c[2] for c in BAD_OPS_LINES])
def test_bad_relay_operations_line(tmp_path, lineno, replacement, key, message):
    lines = OPS_TOML.splitlines()
    lines[lineno - 1] = replacement
    path = write(tmp_path, "\n".join(lines) + "\n", "relay.toml")
    assert errors_of(load_relay_config, path) == [f"{path}:{lineno}: {key}: {message}"]


def test_link_test_needs_a_receiver(tmp_path):
    path = write(tmp_path, '[arc]\nlink_test = "relay"\n', "relay.toml")
    assert errors_of(load_relay_config, path) == [f'{path}:2: arc.link_test: "relay" needs at least one [[arc.receivers]]']


@pytest.mark.parametrize("section", ["device", "relay"])
def test_client_certificate_needs_both_files(tmp_path, section):
    base = '[device]\nid = "lw-0001"\n' if section == "device" else ""
    path = tmp_path / f"{section}.toml"
    path.write_text(base + '[mqtt]\ncert_file = "/etc/lonewatch/client.crt"\n')
    loader = load_device_config if section == "device" else load_relay_config
    with pytest.raises(ConfigError) as err:
        loader(path)
    assert "mqtt.key_file: cert_file and key_file go together" in str(err.value)


def test_device_client_certificate_round_trips(tmp_path):
    cfg = DeviceConfig.from_dict({"device": {"id": "lw-0001"}, "mqtt": {"cert_file": "/c.crt", "key_file": "/c.key"}})
    path = tmp_path / "device.toml"
    write_device_config(cfg, path)
    again = load_device_config(path)
    assert (again.mqtt.cert_file, again.mqtt.key_file) == ("/c.crt", "/c.key")

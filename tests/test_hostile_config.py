"""Hostile config files: arbitrary bytes, other encodings, wrong types and unknown keys into
``load_device_config`` and ``load_relay_config``.

Contract (SPEC §2 "validated at start with file:line errors"): a config either loads or
raises :class:`protocol.configfile.ConfigError` whose every problem names the file (and a
line when the file has one) — never another exception, and never a secret value in the
message.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device.config import load_device_config
from protocol.configfile import ConfigError
from relay.config import load_relay_config

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SECRET = "s3cr3t-Pa55"
_counter = itertools.count()

DEVICE_OK = f"""[device]
id = "lw-0001"
state_dir = "/tmp/lw"
[mqtt]
host = "broker.example"
password = "{SECRET}"
[timing]
hold_s = 2.0
[modem]
sim_pin = "1234"
[sms]
fallback_numbers = ["+4512345678"]
"""
RELAY_OK = f"""[relay]
instance = "r1"
[mqtt]
host = "127.0.0.1"
password = "{SECRET}"
[redis]
url = "redis://:{SECRET}@127.0.0.1:6379/0"
[[arc.receivers]]
host = "arc.example"
port = 12128
key = "0123456789ABCDEF0123456789ABCDEF"
"""
LOADERS = {"device": (load_device_config, DEVICE_OK), "relay": (load_relay_config, RELAY_OK)}


def _load(tmp_path: Path, kind: str, raw: bytes):
    path = tmp_path / f"{kind}-{next(_counter)}.toml"
    path.write_bytes(raw)
    loader = LOADERS[kind][0]
    try:
        return loader(path)
    except ConfigError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.path == str(path) and p.message
            assert str(p).startswith(str(path))
        assert SECRET not in str(exc)
        return None


@pytest.mark.parametrize("kind", ["device", "relay"])
def test_the_reference_files_load(tmp_path: Path, kind: str) -> None:
    assert _load(tmp_path, kind, LOADERS[kind][1].encode()) is not None


@FAST
@given(kind=st.sampled_from(["device", "relay"]), raw=st.binary(max_size=300))
@example(kind="device", raw=b"\xef\xbb\xbf[device]\nid = \"lw-0001\"\n")
@example(kind="relay", raw=b"[relay\n")
@example(kind="device", raw=b"\x00\x00\x00")
def test_arbitrary_bytes_load_or_give_file_line_errors(tmp_path: Path, kind: str, raw: bytes) -> None:
    _load(tmp_path, kind, raw)


@pytest.mark.parametrize("kind", ["device", "relay"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "latin-1", "cp1252"])
def test_other_encodings_are_named_not_utf8(tmp_path: Path, kind: str, encoding: str) -> None:
    text = LOADERS[kind][1].replace('"r1"', '"ræ1"').replace('"lw-0001"', '"lw-0001"\n# Æblegrød')
    raw = text.encode(encoding)
    with pytest.raises(ConfigError, match="UTF-8|invalid TOML"):
        load = LOADERS[kind][0]
        path = tmp_path / f"{kind}.toml"
        path.write_bytes(raw)
        load(path)


values = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str), st.floats(allow_nan=True).map(lambda f: repr(f).replace("inf", "inf")),
    st.booleans().map(lambda b: "true" if b else "false"), st.text(max_size=12).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'),
    st.just("[1, 2]"), st.just("{ a = 1 }"), st.just("1979-05-27T07:32:00Z"), st.just('["+4512345678", 5]'),
)


@FAST
@given(kind=st.sampled_from(["device", "relay"]), data=st.data())
def test_wrong_types_and_unknown_keys_give_every_problem_with_its_line(tmp_path: Path, kind: str, data) -> None:
    """Replace some values of the reference file with values of any type, and add unknown
    keys; every problem must carry a line."""
    base = LOADERS[kind][1].splitlines()
    out = []
    for line in base:
        if " = " in line and data.draw(st.booleans()):
            key = line.split(" = ")[0]
            line = f"{key} = {data.draw(values)}"
        out.append(line)
        if line.startswith("[") and data.draw(st.integers(0, 4)) == 0:
            out.append(f"{data.draw(st.from_regex(r'[a-z_]{1,10}', fullmatch=True))}x = 1")
    raw = ("\n".join(out) + "\n").encode()
    path = tmp_path / f"{kind}-{next(_counter)}.toml"
    path.write_bytes(raw)
    try:
        LOADERS[kind][0](path)
    except ConfigError as exc:
        assert SECRET not in str(exc)
        for p in exc.problems:
            assert p.path == str(path) and p.message
            if "invalid TOML" not in p.message:
                assert p.line is not None, str(p)

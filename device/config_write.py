"""Writing ``device.toml``: :func:`render_device_toml` and :func:`write_device_config` (SPEC §2).

Split out of :mod:`device.config` (issue 9), which re-exports both names. Standard library only:
the Pi has no TOML writer, so the file is written here by hand; what is written reads back to an
equal :class:`device.config.DeviceConfig`. The file holds secrets (MQTT password, SIM PIN), so it is
created with mode 0600 from the start (house rule: files holding secrets 0600).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import fields, is_dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config_sections import FIRMWARE_VERSION

if TYPE_CHECKING:
    from .config import DeviceConfig

__all__ = ["render_device_toml", "write_device_config"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        out = []
        for c in value:
            if c == "\\":
                out.append("\\\\")
            elif c == '"':
                out.append('\\"')
            elif c in "\b\t\n\f\r":
                out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[c])
            elif ord(c) < 0x20 or ord(c) == 0x7F:
                out.append(f"\\u{ord(c):04x}")
            else:
                out.append(c)
        return '"' + "".join(out) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if is_dataclass(value) and not isinstance(value, type):
        return "{" + ", ".join(f"{f.name} = {_toml_value(getattr(value, f.name))}"
                               for f in fields(value)) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def render_device_toml(cfg: DeviceConfig) -> str:
    """``cfg`` as TOML text that :func:`load_device_config` reads back to an equal config.
    Contains secrets (MQTT password, SIM PIN): write it with :func:`write_device_config`."""
    lines = ["# lonewatch device configuration (SPEC §2). Contains secrets: keep mode 0600.",
             f"# firmware {FIRMWARE_VERSION}"]
    for section in fields(cfg):
        obj = getattr(cfg, section.name)
        lines.append("")
        lines.append(f"[{section.name}]")
        for f in fields(obj):
            lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return "\n".join(lines) + "\n"


def write_device_config(cfg: DeviceConfig, path: str | PathLike[str]) -> None:
    """Write ``cfg`` to ``path`` atomically, created with mode 0600 from the start (never
    chmod-ed afterwards, so the secrets are never readable by others, not even briefly).
    The file is written to a temporary name in the same directory, fsync-ed, then renamed.

    Raises:
        OSError: the directory is missing or not writable.
    """
    target = Path(path)
    text = render_device_toml(cfg).encode("utf-8")
    directory = target.parent
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

"""Config problems and how they are shown: key paths, ``file:line: key: message``, and the
values of secret keys hidden (SPEC §2 "validated at start with file:line errors"). Pure stdlib.

Used by :mod:`protocol.configsource` (TOML + line index) and :mod:`protocol.configfile` (typed
reading); import from :mod:`protocol.configfile`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from protocol.errors import LonewatchError

KeyPath = tuple[str | int, ...]
"""A key's place in the document: ``("mqtt", "port")``, ``("arc", "receivers", 1, "host")``."""

SECRET_KEYS = frozenset({"password", "sim_pin", "key", "secret"})


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Pass as ``default`` to make a key mandatory."""


def is_secret_key(name: str | int) -> bool:
    """True for key names whose values must never be echoed (``password``, ``api_key`` …)."""
    if not isinstance(name, str):
        return False
    n = name.lower()
    return n in SECRET_KEYS or n.endswith(("_password", "_secret", "_key"))


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file.

    Attributes:
        path: the file as the caller named it (``"device.toml"``), or ``"<dict>"``.
        line: 1-based line of the offending key (or its table header); None when unknown.
        key: dotted key (``"arc.receivers[1].host"``); ``""`` for whole-file problems.
        message: what is wrong, never containing a secret value.
    """

    path: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(LonewatchError, ValueError):
    """A config file could not be used. ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_key(keypath: KeyPath) -> str:
    """``("arc", "receivers", 1, "host")`` → ``"arc.receivers[1].host"``."""
    out = ""
    for part in keypath:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else _quote(part)
            out += f".{text}" if out else text
    return out


def _quote(s: str) -> str:
    escaped = s.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def show_value(value: Any, *, secret: bool = False, limit: int = 40) -> str:
    """Render a config value for an error message, TOML-style; ``<hidden>`` for secrets."""
    if secret:
        return "<hidden>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value if len(value) <= limit else value[:limit] + "…")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return type(value).__name__


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" {_num(lo)}..{_num(hi)}"
    if lo is not None:
        return f" >= {_num(lo)}"
    if hi is not None:
        return f" <= {_num(hi)}"
    return ""

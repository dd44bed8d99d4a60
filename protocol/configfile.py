"""Shared TOML config machinery: load, locate keys by line, read typed values, report all errors.

Pure standard library (``tomllib``, ``difflib``, ``re``), so the device may use it (SPEC §2:
"Config: TOML, validated at start with file:line errors"; STYLE "every error reported together").

Typical use::

    source = load_toml("/etc/lonewatch/device.toml")     # ConfigError on syntax / encoding
    checker = ConfigChecker(source)
    mqtt = checker.root().table("mqtt")
    port = mqtt.integer("port", 8883, min=1, max=65535)
    ...
    checker.finish()      # unknown keys of every table read, then ConfigError if any problem

Every problem is a :class:`ConfigProblem`; ``str(ConfigError)`` is one line per problem::

    device.toml:12: mqtt.port: must be an integer 1..65535, got "abc"

Values of secret keys (``password``, ``sim_pin``, ``key``, ``secret`` and ``*_password`` …) are
never shown: the message says ``<hidden>`` instead.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from protocol.configproblems import (
    REQUIRED,
    SECRET_KEYS,
    ConfigError,
    ConfigProblem,
    KeyPath,
    _quote,
    _range_text,
    format_key,
    is_secret_key,
    show_value,
)
from protocol.configsource import ConfigSource, load_toml

__all__ = [
    "REQUIRED",
    "SECRET_KEYS",
    "ConfigChecker",
    "ConfigError",
    "ConfigProblem",
    "ConfigSource",
    "KeyPath",
    "TableReader",
    "format_key",
    "is_secret_key",
    "load_toml",
    "show_value",
]


# --------------------------------------------------------------------------- typed reading


class ConfigChecker:
    """Collects problems while typed readers pull values out of a :class:`ConfigSource`."""

    def __init__(self, source: ConfigSource) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []
        self._readers: list[TableReader] = []

    def root(self) -> TableReader:
        """Reader for the whole document."""
        return self._reader((), self.source.data)

    def _reader(self, keypath: KeyPath, data: Mapping[str, Any], check_unknown: bool = True,
                absent: bool = False) -> TableReader:
        reader = TableReader(self, keypath, data, check_unknown, absent)
        self._readers.append(reader)
        return reader

    def problem(self, keypath: KeyPath, message: str) -> None:
        """Record a problem at ``keypath`` (its line is looked up in the source)."""
        line = self.source.line_of(keypath)
        self.problems.append(ConfigProblem(self.source.name, line, format_key(keypath), message))

    def finish(self) -> None:
        """Report unknown keys of every reader, then raise if anything was wrong.

        Raises:
            ConfigError: with all problems, sorted by line (line-less ones last).
        """
        for reader in self._readers:
            reader.done()
        if self.problems:
            ordered = sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))
            raise ConfigError(ordered)


class TableReader:
    """Typed access to one TOML table. Each getter returns the value, or on a problem records it
    and returns the default (a placeholder of the right type for REQUIRED keys) so reading can
    go on; :meth:`ConfigChecker.finish` raises afterwards."""

    def __init__(self, checker: ConfigChecker, keypath: KeyPath, data: Mapping[str, Any],
                 check_unknown: bool = True, absent: bool = False) -> None:
        self.checker = checker
        self._absent = absent
        self.keypath = keypath
        self.data = data
        self._known: set[str] = set()
        self._check_unknown = check_unknown
        self._done = False

    # -- plumbing
    def problem(self, key: str | int | None, message: str) -> None:
        """Record a problem at ``key`` of this table (None: the table itself)."""
        self.checker.problem(self.keypath if key is None else self.keypath + (key,), message)

    def has(self, key: str) -> bool:
        """Whether ``key`` is present (marks it known)."""
        self._known.add(key)
        return key in self.data

    def line_of(self, key: str | int | None = None) -> int | None:
        return self.checker.source.line_of(self.keypath if key is None else self.keypath + (key,))

    def _fetch(self, key: str, default: Any, placeholder: Any) -> tuple[bool, Any]:
        self._known.add(key)
        if key in self.data:
            return True, self.data[key]
        if default is REQUIRED:
            if not self._absent:  # a missing required table was reported already
                self.problem(key, "required key is missing")
            return False, placeholder
        return False, default

    def _bad(self, key: str | int, expect: str, value: Any, secret: bool | None,
             hint: str = "") -> None:
        hidden = is_secret_key(key) if secret is None else secret
        if hidden:
            hint = ""
        self.problem(key, f"must be {expect}, got {show_value(value, secret=hidden)}{hint}")

    # -- scalars
    def string(self, key: str, default: Any = REQUIRED, *, pattern: str | None = None,
               choices: Iterable[str] | None = None, describe: str | None = None,
               nonempty: bool = False, max_len: int | None = None,
               check: Callable[[str], str | None] | None = None,
               secret: bool | None = None) -> str:
        """A string. ``pattern`` is a full-match regex (empty allowed only if it matches);
        ``check`` returns an error message (which must not echo secrets) or None."""
        present, value = self._fetch(key, default, "")
        if not present:
            return value
        choice_list = list(choices) if choices is not None else None
        if choice_list is not None:
            expect = "one of " + ", ".join(_quote(c) for c in choice_list)
        elif describe:
            expect = describe
        elif pattern:
            expect = f"a string matching {pattern}"
        elif nonempty:
            expect = "a non-empty string"
        else:
            expect = "a string"
        if not isinstance(value, str):
            self._bad(key, expect, value, secret)
            return default if default is not REQUIRED else ""
        hint = ""
        ok = True
        if choice_list is not None and value not in choice_list:
            ok = False
            near = difflib.get_close_matches(value, choice_list, n=1, cutoff=0.6)
            lower = [c for c in choice_list if c.lower() == value.lower()]
            if lower or near:
                hint = f"; did you mean {_quote((lower or near)[0])}?"
        elif pattern is not None and not re.fullmatch(pattern, value):
            ok = False
        elif nonempty and not value:
            ok = False
        elif max_len is not None and len(value) > max_len:
            self.problem(key, f"must be at most {max_len} characters, got {len(value)}")
            return value
        if not ok:
            self._bad(key, expect, value, secret, hint)
            return value
        if check is not None:
            msg = check(value)
            if msg:
                self.problem(key, msg)
        return value

    def integer(self, key: str, default: Any = REQUIRED, *, min: int | None = None,
                max: int | None = None, choices: Iterable[int] | None = None,
                secret: bool | None = None) -> int:
        """An integer (a bool is not an integer) within ``min..max`` or one of ``choices``."""
        present, value = self._fetch(key, default, 0)
        if not present:
            return value
        choice_list = list(choices) if choices is not None else None
        if choice_list is not None:
            expect = "one of " + ", ".join(str(c) for c in choice_list)
        else:
            expect = "an integer" + _range_text(min, max)
        if (not isinstance(value, int) or isinstance(value, bool)
                or (min is not None and value < min) or (max is not None and value > max)
                or (choice_list is not None and value not in choice_list)):
            self._bad(key, expect, value, secret)
            return value if isinstance(value, int) and not isinstance(value, bool) else (
                default if default is not REQUIRED else 0)
        return value

    def number(self, key: str, default: Any = REQUIRED, *, min: float | None = None,
               max: float | None = None, secret: bool | None = None) -> float:
        """A finite number (integer or float, not bool) within ``min..max``; returned as float."""
        present, value = self._fetch(key, default, 0.0)
        if not present:
            return float(value)
        expect = "a number" + _range_text(min, max)
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value)
                or (min is not None and value < min) or (max is not None and value > max)):
            self._bad(key, expect, value, secret)
            return float(default) if default is not REQUIRED else 0.0
        return float(value)

    def boolean(self, key: str, default: Any = REQUIRED) -> bool:
        """``true`` or ``false`` (strings like "yes" and integers are refused)."""
        present, value = self._fetch(key, default, False)
        if not present:
            return value
        if not isinstance(value, bool):
            self._bad(key, "true or false", value, None)
            return default if default is not REQUIRED else False
        return value

    def string_list(self, key: str, default: Any = REQUIRED, *, pattern: str | None = None,
                    describe: str | None = None, unique: bool = False) -> list[str]:
        """An array of strings, each full-matching ``pattern`` if given."""
        present, value = self._fetch(key, default, [])
        if not present:
            return list(value)
        if not isinstance(value, (list, tuple)):
            self._bad(key, "an array of strings", value, None)
            return []
        out: list[str] = []
        expect = describe or (f"a string matching {pattern}" if pattern else "a string")
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str) or (pattern is not None and not re.fullmatch(pattern, item)):
                self.checker.problem(self.keypath + (key, i),
                                     f"must be {expect}, got {show_value(item)}")
                continue
            if unique and item in seen:
                self.checker.problem(self.keypath + (key, i), f"duplicate {show_value(item)}")
                continue
            seen.add(item)
            out.append(item)
        return out

    # -- containers
    def table(self, key: str, *, required: bool = False) -> TableReader:
        """Sub-table reader; an absent table reads as empty (all defaults)."""
        self._known.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(key, "required table is missing")
            return self.checker._reader(self.keypath + (key,), {}, absent=required)
        if not isinstance(value, Mapping):
            self._bad(key, "a table", value, None)
            return self.checker._reader(self.keypath + (key,), {}, check_unknown=False,
                                        absent=True)
        return self.checker._reader(self.keypath + (key,), value)

    def tables(self, key: str) -> list[TableReader]:
        """Readers for an array of tables (``[[key]]``); absent reads as an empty list."""
        self._known.add(key)
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            self._bad(key, f"an array of tables ([[{format_key(self.keypath + (key,))}]])",
                      value, None)
            return []
        readers = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                self.checker.problem(self.keypath + (key, i),
                                     f"must be a table, got {show_value(item)}")
                continue
            readers.append(self.checker._reader(self.keypath + (key, i), item))
        return readers

    def done(self) -> None:
        """Report keys of this table that no getter asked for (once)."""
        if self._done or not self._check_unknown:
            return
        self._done = True
        known = sorted(self._known)
        for key in self.data:
            if key in self._known:
                continue
            value = self.data[key]
            is_table = isinstance(value, Mapping) or (
                isinstance(value, (list, tuple)) and bool(value)
                and all(isinstance(v, Mapping) for v in value))
            what = "unknown table" if is_table else "unknown key"
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {_quote(near[0])}?" if near else ""
            self.problem(key, what + hint)

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
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from os import PathLike
from pathlib import Path
from typing import Any

from protocol.errors import LonewatchError

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


# --------------------------------------------------------------------------- source + lines


class ConfigSource:
    """Parsed TOML plus what is needed to point at lines in it.

    Attributes:
        name: how the file is shown in messages (the path as given, or ``"<dict>"``).
        data: the parsed document.
        text: the file's text (None for in-memory dicts: no line numbers then).
        base_dir: directory of the file, for resolving relative paths in it (None for dicts).
    """

    def __init__(self, name: str, data: Mapping[str, Any], text: str | None = None,
                 base_dir: Path | None = None) -> None:
        self.name = name
        self.data = data
        self.text = text
        self.base_dir = base_dir
        self._lines: dict[KeyPath, int] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "<dict>") -> ConfigSource:
        """Wrap an in-memory document (tests, demo); problems then carry no line."""
        return cls(name, data)

    def line_of(self, keypath: KeyPath) -> int | None:
        """Line of ``keypath``; else of its nearest enclosing table/key; None if nowhere."""
        if self.text is None:
            return None
        if self._lines is None:
            self._lines = _index_lines(self.text)
        for n in range(len(keypath), 0, -1):
            line = self._lines.get(tuple(keypath[:n]))
            if line is not None:
                return line
        return None


def load_toml(path: str | PathLike[str]) -> ConfigSource:
    """Read and parse a TOML file.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, or is not valid TOML; the single
            problem carries the line (from tomllib's ``(at line N, column M)``).
    """
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem(name, None, "", f"cannot read: {exc.strerror or exc}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        msg = (f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}); "
               "save the file as UTF-8")
        raise ConfigError([ConfigProblem(name, line, "", msg)]) from None
    text = text.removeprefix("\ufeff")  # tolerate the BOM Windows editors add
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            line: int | None = int(m.group(1))
            msg = f"invalid TOML: {msg[:m.start()]} (column {m.group(2)})"
        elif msg.endswith("(at end of document)"):
            line = text.count("\n") + (0 if text.endswith("\n") else 1)
            msg = f"invalid TOML: {msg.removesuffix(' (at end of document)')} (at end of file)"
        else:
            line, msg = None, f"invalid TOML: {msg}"
        raise ConfigError([ConfigProblem(name, line, "", msg)]) from None
    return ConfigSource(name, data, text, Path(path).resolve().parent)


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _parse_key(s: str, i: int) -> tuple[list[str], int] | None:
    """Parse a (dotted) key at ``s[i:]``; return its parts and the index after it."""
    parts: list[str] = []
    n = len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            return None
        c = s[i]
        if c == '"' or c == "'":
            j = i + 1
            buf = []
            while j < n and s[j] != c:
                if c == '"' and s[j] == "\\" and j + 1 < n:
                    buf.append(s[j:j + 2])
                    j += 2
                    continue
                buf.append(s[j])
                j += 1
            if j >= n:
                return None
            raw = "".join(buf)
            if c == '"':
                try:
                    raw = tomllib.loads(f'k = "{raw}"')["k"]
                except tomllib.TOMLDecodeError:
                    pass
            parts.append(raw)
            i = j + 1
        else:
            m = _BARE.match(s, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == ".":
            i += 1
            continue
        return parts, i


def _index_lines(text: str) -> dict[KeyPath, int]:
    """Map every key path found in ``text`` to its first line (1-based). Rough but cheap:
    handles ``[table]``, ``[[array.of.tables]]``, dotted and quoted keys, skips multi-line
    strings; keys inside inline tables / multi-line arrays fall back to the enclosing key."""
    lines: dict[KeyPath, int] = {}
    counts: dict[KeyPath, int] = {}      # array-of-tables path -> elements seen
    current_elem: dict[KeyPath, int] = {}  # array-of-tables path -> current element index
    table: KeyPath = ()
    in_ml: str | None = None

    def resolve(parts: list[str]) -> list[str | int]:
        out: list[str | int] = []
        for p in parts:
            out.append(p)
            idx = current_elem.get(tuple(out))
            if idx is not None:
                out.append(idx)
        return out

    def record(path: Sequence[str | int], lineno: int) -> None:
        for n in range(1, len(path) + 1):
            lines.setdefault(tuple(path[:n]), lineno)

    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_ml is not None:
            if line.count(in_ml) % 2 == 1:
                in_ml = None
            continue
        s = line.lstrip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("[["):
            parsed = _parse_key(s, 2)
            if parsed and s[parsed[1]:].startswith("]]"):
                *head, last = parsed[0]
                arr = tuple(resolve(head)) + (last,)
                idx = counts.get(arr, 0)
                counts[arr] = idx + 1
                current_elem[arr] = idx
                # elements of arrays nested in this element start afresh
                for k in [k for k in counts if len(k) > len(arr) and k[:len(arr)] == arr]:
                    del counts[k]
                    current_elem.pop(k, None)
                table = arr + (idx,)
                record(table, lineno)
            continue
        if s.startswith("["):
            parsed = _parse_key(s, 1)
            if parsed and s[parsed[1]:].startswith("]"):
                table = tuple(resolve(parsed[0]))
                record(table, lineno)
            continue
        parsed = _parse_key(s, 0)
        if parsed and s[parsed[1]:].startswith("="):
            record(table + tuple(parsed[0]), lineno)
            rest = s[parsed[1] + 1:]
            for delim in ('"""', "'''"):
                if rest.count(delim) % 2 == 1:
                    in_ml = delim
                    break
    return lines


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

"""A parsed TOML file and the line of every key in it, so a problem can say ``file:line``.

``tomllib`` gives values without positions; :func:`_index_lines` reads the text once more for
the line of each key (tables, arrays of tables, dotted and quoted keys, multi-line strings).
Pure stdlib; import from :mod:`protocol.configfile`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from protocol.configproblems import ConfigError, ConfigProblem, KeyPath

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

"""Positions in SIA DC-09 extended data (SPEC §4): ``X`` longitude ``DDDHMM.mmmm``, ``Y``
latitude ``DDHMM.mmmm``, and the position at the head of the alarm text ``I`` for receivers
that take a single block. Pure code."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from protocol.errors import ValidationError
from protocol.sia_codec import ascii_text

__all__ = ["PositionText", "format_latitude", "format_longitude", "format_position_text", "parse_position",
           "parse_position_text"]

_LON_RE = re.compile(r"X?(?P<deg>[0-9]{3})(?P<hemi>[EW])(?P<min>[0-9]{2}(?:\.[0-9]{1,8})?)")
_LAT_RE = re.compile(r"Y?(?P<deg>[0-9]{2})(?P<hemi>[NS])(?P<min>[0-9]{2}(?:\.[0-9]{1,8})?)")
_POSITION_TEXT_RE = re.compile(
    r"(?P<lat>[0-9]{1,2}(?:\.[0-9]+)?)(?P<ns>[NS]) (?P<lon>[0-9]{1,3}(?:\.[0-9]+)?)(?P<ew>[EW])"
    r"(?: (?:\+-|\+/-|±)(?P<acc>[0-9]+(?:\.[0-9]+)?)m)?(?: (?P<text>.*))?",
    re.S,
)


# --------------------------------------------------------------------------- positions
def _degrees_minutes(value: float, width: int, pos: str, neg: str) -> str:
    total = round(abs(value) * 600_000)  # in 1e-4 arc minutes, so rounding carries to degrees
    degrees, rest = divmod(total, 600_000)
    hemi = neg if value < 0 and total else pos
    return f"{degrees:0{width}d}{hemi}{rest // 10_000:02d}.{rest % 10_000:04d}"


def _check_range(name: str, value: float, limit: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(name, f"must be a finite number, got {value!r}")
    if not -limit <= value <= limit:
        raise ValidationError(name, f"must be within ±{limit:g} degrees, got {value}")


def format_longitude(lon: float) -> str:
    """``X`` extended data for a longitude in decimal degrees: ``X012E34.5678`` (DDDHMM.mmmm).

    SPEC §4. Raises ValidationError outside -180..180.
    """
    _check_range("longitude", lon, 180.0)
    return "X" + _degrees_minutes(lon, 3, "E", "W")


def format_latitude(lat: float) -> str:
    """``Y`` extended data for a latitude in decimal degrees: ``Y55N40.1234`` (DDHMM.mmmm).

    SPEC §4. Raises ValidationError outside -90..90.
    """
    _check_range("latitude", lat, 90.0)
    return "Y" + _degrees_minutes(lat, 2, "N", "S")


def _parse_dm(pattern: re.Pattern[str], name: str, text: str, limit: float) -> float:
    m = pattern.fullmatch(text)
    if not m:
        raise ValidationError(name, f"not in SIA {name} format: {text!r}")
    minutes = float(m["min"])
    if minutes >= 60:
        raise ValidationError(name, f"minutes must be < 60: {text!r}")
    value = int(m["deg"]) + minutes / 60
    if value > limit:
        raise ValidationError(name, f"beyond {limit:g} degrees: {text!r}")
    return -value if m["hemi"] in "WS" else value


def parse_position(x: str, y: str) -> tuple[float, float]:
    """``(lat, lon)`` in decimal degrees from ``X``/``Y`` extended data (letter optional).

    What an ARC decodes from :func:`format_longitude`/:func:`format_latitude` output.
    Raises ValidationError.
    """
    lon = _parse_dm(_LON_RE, "longitude", x, 180.0)
    lat = _parse_dm(_LAT_RE, "latitude", y, 90.0)
    return lat, lon


@dataclass(frozen=True, slots=True)
class PositionText:
    """A position read back from an ``I`` alarm text: degrees, metres, the remaining text."""

    lat: float
    lon: float
    accuracy_m: float | None
    text: str


def format_position_text(
    lat: float, lon: float, accuracy_m: float | None = None, text: str | None = None
) -> str:
    """Position as human-readable ASCII alarm text: ``55.66857N 12.57613E +-8m Anna, Site``.

    Used when a receiver takes one extended-data block only (the ``I`` block then carries the
    position). 5 decimals ≈ 1 m. Raises ValidationError for out-of-range coordinates.
    """
    _check_range("latitude", lat, 90.0)
    _check_range("longitude", lon, 180.0)
    parts = [f"{abs(lat):.5f}{'S' if lat < 0 else 'N'} {abs(lon):.5f}{'W' if lon < 0 else 'E'}"]
    if accuracy_m is not None:
        parts.append(f"+-{round(accuracy_m)}m")
    if text:
        parts.append(ascii_text(text))
    return ascii_text(" ".join(parts), max_len=160)


def parse_position_text(text: str) -> PositionText:
    """Inverse of :func:`format_position_text` (``I`` prefix optional; ``±`` accepted).

    Raises ValidationError when the text does not start with a position.
    """
    m = _POSITION_TEXT_RE.fullmatch(text[1:] if text.startswith("I") else text)
    if not m:
        raise ValidationError("text", f"does not start with 'DD.dddddN DDD.dddddE': {text!r}")
    lat = float(m["lat"]) * (-1 if m["ns"] == "S" else 1)
    lon = float(m["lon"]) * (-1 if m["ew"] == "W" else 1)
    _check_range("latitude", lat, 90.0)
    _check_range("longitude", lon, 180.0)
    acc = float(m["acc"]) if m["acc"] is not None else None
    return PositionText(lat, lon, acc, m["text"] or "")

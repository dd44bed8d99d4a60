"""Texts of the SMS fallback in the recipient's language (SPEC §2: "with kind, worker name, site
and position, in each recipient's language"; languages: da, en, pl, ro, uk, ar). The wording
lives in the gettext catalogs of domain ``device`` (:mod:`i18n`, issue 13).

Shape (English)::

    ALARM: Silent panic alarm
    Anna Hansen, Vestergade 12, basement laundry
    2026-11-30 13:45:02 UTC (14:45:02 local)
    https://maps.google.com/?q=55.66857,12.57613 +/-6 m, fix 1 min old
    Sent by SMS: the alarm server did not answer. Ref lw-demo-0001:1796045614

The map link is ``https://maps.google.com/?q=<lat>,<lon>`` rather than a ``geo:`` URI: every
smartphone SMS app turns an ``https`` address into a tap-able link that opens the maps app or a
browser, while ``geo:`` is not linked by iOS Messages nor by many Android SMS apps and means
nothing on an ARC's SMS gateway or a PC; the coordinates stay readable in the link itself for a
feature phone or to read out over the radio. Five decimals ≈ 1 m.

Times: the event's time of occurrence in UTC (what the ARC logs) and in the device's local zone
(what the reader's watch says). Whether the text needs UCS2 is decided later, by the characters
(:func:`modem.sms.choose_encoding`): Danish fits GSM 7-bit, Polish, Romanian, Ukrainian
and Arabic do not.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Final

from i18n import LANGUAGES, N_, translation
from protocol.messages import Position

__all__ = ["KIND_NAMES", "LANGUAGES", "map_link", "render_alarm", "render_cancel"]

#: kind → name (message ids of the catalogs' ``device`` domain).
_KIND_IDS: Final[dict[str, str]] = {
    "panic": N_("Panic alarm"),
    "silent_panic": N_("Silent panic alarm"),
    "man_down": N_("Man down (fall)"),
    "missed_checkin": N_("Missed check-in"),
}

_WORD_IDS: Final[dict[str, str]] = {
    # TRANSLATORS: first word of the alarm SMS, upper case.
    "alarm": N_("ALARM"),
    # TRANSLATORS: first word of the SMS saying the worker cancelled the alarm, upper case.
    "cancelled": N_("CANCELLED"),
    # TRANSLATORS: after the local time, e.g. "(14:45:02 local)".
    "local": N_("local"),
    "no_position": N_("Position unknown"),
    # TRANSLATORS: age of the GNSS fix in minutes; SMS text: keep it short.
    "fix_age": N_("fix {n} min old"),
    # TRANSLATORS: last line of the fallback SMS; {ref} is the event id.
    "footer": N_("Sent by SMS: the alarm server did not answer. Ref {ref}"),
    # TRANSLATORS: last line of the cancel SMS; {ref} is the cancelled alarm's event id.
    "ref": N_("Ref {ref}"),
    # TRANSLATORS: {kind} is the alarm kind, e.g. "Panic alarm".
    "cancel_body": N_("{kind} was a false alarm, cancelled by the worker"),
}


#: kind → language → name (``KIND_NAMES["panic"]["da"]``), read from the catalogs.
KIND_NAMES: Final[dict[str, dict[str, str]]] = {
    kind: {lang: translation("device", lang).gettext(mid) for lang in LANGUAGES} for kind, mid in _KIND_IDS.items()
}


def _word(key: str, language: str) -> str:
    return translation("device", language).gettext(_WORD_IDS[key])


def kind_name(kind: str, language: str) -> str:
    """The alarm kind in ``language`` (English for an unknown language, the raw kind for an
    unknown kind: an alarm text is never refused for a missing translation)."""
    mid = _KIND_IDS.get(kind)
    if mid is None:
        return kind
    return translation("device", language).gettext(mid)


def map_link(position: Position) -> str:
    """``https://maps.google.com/?q=<lat>,<lon>`` with 5 decimals (see module doc for why)."""
    return f"https://maps.google.com/?q={position.lat:.5f},{position.lon:.5f}"


def _when(ts: float, tz: tzinfo | None, language: str) -> str:
    utc = datetime.fromtimestamp(ts, timezone.utc)
    local = utc.astimezone(tz) if tz is not None else utc.astimezone()
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC ({local:%H:%M:%S} {_word('local', language)})"


def _who(worker: str, site: str, device_id: str) -> str:
    return ", ".join(p for p in (worker, site) if p) or device_id


def _where(position: Position | None, now: float, language: str) -> str:
    if position is None:
        return _word("no_position", language)
    out = map_link(position)
    if position.accuracy_m is not None:
        out += f" +/-{position.accuracy_m:.0f} m"  # "±" is not GSM 7-bit
    age_min = max(0, int((now - position.fixed_at) // 60))
    if age_min >= 1:
        out += ", " + _word("fix_age", language).format(n=age_min)
    return out


def render_alarm(kind: str, language: str, *, worker: str, site: str, device_id: str,
                 event_id: str, occurred_at: float, position: Position | None, now: float,
                 tz: tzinfo | None = None) -> str:
    """The alarm SMS (module doc shows the shape). ``occurred_at`` and ``now`` are Unix
    seconds; ``tz`` the device's zone (None = the system's). Never raises for a missing
    translation or position."""
    lines = [
        f"{_word('alarm', language)}: {kind_name(kind, language)}",
        _who(worker, site, device_id),
        _when(occurred_at, tz, language),
        _where(position, now, language),
        _word("footer", language).format(ref=event_id),
    ]
    return "\n".join(lines)


def render_cancel(alarm_kind: str, language: str, *, worker: str, site: str, device_id: str,
                  event_id: str, occurred_at: float, tz: tzinfo | None = None) -> str:
    """The SMS telling a recipient of an alarm SMS that the worker cancelled it (false
    alarm); ``occurred_at`` is the cancel's time, ``event_id`` the cancelled alarm's id."""
    lines = [
        f"{_word('cancelled', language)}: "
        + _word("cancel_body", language).format(kind=kind_name(alarm_kind, language)),
        _who(worker, site, device_id),
        _when(occurred_at, tz, language),
        _word("ref", language).format(ref=event_id),
    ]
    return "\n".join(lines)

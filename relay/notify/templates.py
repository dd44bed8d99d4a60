"""Texts told to contacts, in their language: da, en, pl, ro, uk, ar (SPEC §3, issue 4); the
wording lives in the gettext catalogs of domain ``notify`` (:mod:`i18n`, issue 13).

Messages (:data:`MESSAGES`): ``alarm`` (who, what, where, when, map link, escape routes,
alarm system, how to acknowledge), ``cancelled`` (the worker cancelled: CID 406), ``restored``
(the condition ended, e.g. contact came back), ``acknowledged`` (someone took it; the
acknowledger gets it as confirmation), ``ambiguous`` (a bare "OK" while several alarms are
open for that number). One field per line: short for SMS, and it keeps right-to-left Arabic
lines from being mixed with left-to-right names, numbers and links by the phone's display.

:func:`render` fills a template; SMS texts cap the free-text notes at :data:`SMS_NOTE_CHARS`
characters (e-mail carries them in full). The SMS encoding (GSM 7-bit vs UCS2) is chosen by
:mod:`modem.sms` when the text is sent. :func:`parse_reply` reads an SMS reply
("OK", "1", "JA", "TAK", "DA", "ТАК", "نعم", optionally followed by the alarm's ref).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from i18n import LANGUAGES, N_, translation
from protocol.errors import ValidationError

__all__ = ["ACK_WORDS", "KIND_NAMES", "MESSAGES", "MessageContext", "Rendered", "map_link",
           "parse_reply", "render"]

SMS_NOTE_CHARS: Final = 160
DEFAULT_MAP_URL: Final = "https://maps.google.com/?q={lat:.5f},{lon:.5f}"

#: Alarm kind → its name (message id; the catalogs hold the translations).
_KIND_IDS: Final[dict[str, str]] = {
    "panic": N_("Panic alarm"),
    "silent_panic": N_("Silent alarm"),
    "man_down": N_("Man down"),
    "missed_checkin": N_("Missed check-in"),
    "lost_contact": N_("Lost contact with device"),
    "low_battery": N_("Low battery"),
    "not_ready": N_("Device NOT ready at shift start"),  # issue 12: the ready-timeout notice
}

# The alarm's line labels, then the other messages (message ids). ``{…}`` are filled by render.
_TEXT_IDS: Final[dict[str, str]] = {
    # TRANSLATORS: first line of an alarm SMS/e-mail; {kind} is the alarm kind, e.g. "Silent alarm".
    "head": N_("ALARM: {kind}"),
    "worker": N_("Worker: {worker}"),
    "site": N_("Site: {site}"),
    "address": N_("Address: {address}"),
    # TRANSLATORS: {time} is e.g. "2026-11-30 23:05 CET".
    "time": N_("Time: {time}"),
    # TRANSLATORS: {map} is a map link (https://…).
    "map": N_("Position: {map}"),
    "nomap": N_("Position: unknown"),
    "escape": N_("Escape routes: {escape_routes}"),
    "alarmsys": N_("Alarm system: {alarm_system}"),
    # TRANSLATORS: the contact replies to the SMS; "OK" must stay (any language's yes word works too).
    "ack": N_("Reply OK to acknowledge (ref {ref})."),
    # TRANSLATORS: e-mail subject of an alarm.
    "subject": N_("ALARM: {kind} – {worker}"),
    # TRANSLATORS: keep the first word and the colon: the part before the colon becomes the e-mail subject.
    "cancelled": N_("CANCELLED: The alarm from {worker} ({kind}, ref {ref}) was cancelled by the worker."),
    # TRANSLATORS: keep the first word and the colon: the part before the colon becomes the e-mail subject.
    "restored": N_("RESTORED: {kind} – {worker}: back to normal (ref {ref})."),
    # TRANSLATORS: {by} is the name of the contact who took the alarm.
    "acknowledged": N_("ACKNOWLEDGED: The alarm from {worker} (ref {ref}) was acknowledged by {by}."),
    # TRANSLATORS: e-mail subject of the messages after an alarm; {what} is their first word, e.g. "CANCELLED".
    "subject_news": N_("{what}: {worker} (ref {ref})"),
    # TRANSLATORS: {refs} lists the open alarms, e.g. "17 (Anna), 18 (Ole)"; {example} is one ref.
    "ambiguous": N_("Several alarms are open: {refs}. Reply OK and the ref, e.g. \"OK {example}\"."),
    # issue 12: the worker's place from a BLE beacon, and the not-ready notice to the first contact
    # TRANSLATORS: {place} is e.g. "Main building, floor -1, Laundry (door code 4711)".
    "place": N_("Place: {place}"),
    # TRANSLATORS: a numbered floor, e.g. "floor -1".
    "floor": N_("floor {floor}"),
    # TRANSLATORS: {detail} lists the failed self-test checks, e.g. "battery: 12 % (need >= 30 %)".
    "not_ready": N_("NOT READY: {worker}'s lonewatch device did not pass its self-test after the shift start "
                    "({time}, {site}): {detail}. Alarms may not get through. Reply OK (ref {ref})."),
}


def _text(language: str, message_id: str) -> str:
    return translation("notify", language).gettext(message_id)


#: Names of the alarm kinds per language (``KIND_NAMES["da"]["panic"]``), read from the catalogs.
KIND_NAMES: Final[dict[str, dict[str, str]]] = {
    lang: {kind: _text(lang, mid) for kind, mid in _KIND_IDS.items()} for lang in LANGUAGES
}

MESSAGES: Final = ("alarm", "cancelled", "restored", "acknowledged", "ambiguous", "not_ready")

#: Words that acknowledge an alarm in an SMS reply, any language (compared case-folded).
ACK_WORDS: Final = frozenset({
    "ok", "okay", "1", "yes", "y", "ack", "ja", "j", "tak", "t", "da", "d", "так", "та", "да",
    "نعم", "حسنا", "حسناً", "موافق",
})


@dataclass(frozen=True)
class MessageContext:
    """What a message tells. ``occurred_at`` Unix seconds; ``lat``/``lon`` degrees or None;
    ``timezone`` IANA name for the time shown ("" = UTC); ``refs`` ``(ref, worker)`` pairs for
    ``ambiguous``; ``by`` the acknowledger's name."""

    kind: str
    worker: str
    site: str = ""
    address: str = ""
    occurred_at: float = 0.0
    lat: float | None = None
    lon: float | None = None
    escape_routes: str = ""
    alarm_system: str = ""
    ref: int = 0
    alarm_id: str = ""
    by: str = ""
    timezone: str = ""
    refs: tuple[tuple[int, str], ...] = ()
    #: Issue 12: the place from the BLE beacon (registry, :mod:`relay.places`), "" = unknown;
    #: ``detail`` the failed checks of a ``not_ready`` notice.
    building: str = ""
    floor: str = ""
    room: str = ""
    note: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Rendered:
    """A filled template: ``subject`` (e-mail) and ``body``."""

    subject: str
    body: str


def map_link(lat: float | None, lon: float | None, template: str = DEFAULT_MAP_URL) -> str | None:
    """A map URL for the position, or None without one. ``template`` takes ``{lat}``/``{lon}``."""
    if lat is None or lon is None:
        return None
    return template.format(lat=lat, lon=lon)


def format_time(ts: float, tz: str = "") -> str:
    """``2026-11-30 23:05 CET`` in zone ``tz`` (IANA name; "" or unknown → UTC)."""
    try:
        zone = ZoneInfo(tz) if tz else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        zone = timezone.utc
    moment = datetime.fromtimestamp(ts, zone)
    return moment.strftime("%Y-%m-%d %H:%M ") + (moment.tzname() or "UTC")


def _note(text: str, channel: str) -> str:
    text = " ".join(text.split())
    if channel == "sms" and len(text) > SMS_NOTE_CHARS:
        return text[:SMS_NOTE_CHARS - 1] + "…"
    return text


def render(message: str, language: str, ctx: MessageContext, *, channel: str = "sms",
           map_url: str = DEFAULT_MAP_URL) -> Rendered:
    """Fill the ``message`` template (one of :data:`MESSAGES`) in ``language``.

    ``channel`` ``"sms"`` caps notes at :data:`SMS_NOTE_CHARS`; ``"email"`` adds the alarm id.
    An unknown language falls back to English (never to no message).

    Raises:
        ValidationError: unknown ``message``.
    """
    if message not in MESSAGES:
        raise ValidationError("message", f"unknown message {message!r}; one of {', '.join(MESSAGES)}")
    t = {key: _text(language, mid) for key, mid in _TEXT_IDS.items()}
    kind = _text(language, _KIND_IDS[ctx.kind]) if ctx.kind in _KIND_IDS else ctx.kind
    values = {
        "kind": kind, "worker": ctx.worker or "?", "site": ctx.site, "address": ctx.address,
        "time": format_time(ctx.occurred_at, ctx.timezone), "ref": ctx.ref, "by": ctx.by,
        "escape_routes": _note(ctx.escape_routes, channel), "alarm_system": _note(ctx.alarm_system, channel),
        "map": map_link(ctx.lat, ctx.lon, map_url) or "",
        "refs": ", ".join(f"{r} ({w})" for r, w in ctx.refs),
        "example": ctx.refs[0][0] if ctx.refs else ctx.ref,
        "place": _place(t, ctx, channel), "detail": _note(ctx.detail, channel),
    }
    if message == "alarm" and ctx.kind == "not_ready":
        message = "not_ready"  # issue 12: a readiness notice is told with its own text
    subject = t["subject"].format(**values)
    if message != "alarm":
        body = t[message].format(**values)
        subject = t["subject_news"].format(what=body.partition(":")[0], worker=values["worker"], ref=ctx.ref)
    else:
        lines = [t["head"], t["worker"]]
        lines += [t[k] for k, v in (("site", ctx.site), ("address", ctx.address)) if v]
        lines += [t["place"]] if values["place"] else []
        lines += [t["time"], t["map"] if values["map"] else t["nomap"]]
        lines += [t[k] for k, v in (("escape", ctx.escape_routes), ("alarmsys", ctx.alarm_system)) if v]
        lines.append(t["ack"])
        body = "\n".join(line.format(**values) for line in lines)
    if channel == "email" and ctx.alarm_id:
        body += f"\n\nlonewatch alarm {ctx.alarm_id}"
    return Rendered(subject, body)


def _place(t: dict[str, str], ctx: MessageContext, channel: str) -> str:
    """``Main building, floor -1, Laundry (note)`` from the beacon's place, "" if none."""
    # "floor -1" for a number; a named floor ("Basement", "Kælder") stands as written
    floor = t["floor"].format(floor=ctx.floor) if re.fullmatch(r"[-+]?\d{1,3}", ctx.floor.strip()) else ctx.floor
    where = ", ".join(p for p in (ctx.building, floor, ctx.room) if p)
    if where and ctx.note:
        where += f" ({_note(ctx.note, channel)})"
    return where


_REF = re.compile(r"\d{1,4}")


def parse_reply(text: str) -> tuple[bool, int | None]:
    """Read an SMS reply: ``(is_acknowledgement, ref or None)``.

    The first word must be an acknowledgement word (:data:`ACK_WORDS`, any language, any
    case, punctuation ignored); a number after it is the alarm's ref. A lone number other than
    "1" is a ref with an implied OK. Arabic-Indic digits count as digits.
    """
    norm = unicodedata.normalize("NFKC", text).casefold()
    words = [w for w in re.split(r"[\s,.;:!?()\"'«»،؛]+", norm) if w]
    if not words:
        return False, None
    words = ["".join(str(d) if (d := unicodedata.decimal(c, None)) is not None else c for c in w)
             for w in words]
    first, rest = words[0], words[1:]
    ref = next((int(w) for w in rest if _REF.fullmatch(w)), None)
    if first in ACK_WORDS:
        return True, ref
    if _REF.fullmatch(first):
        return True, int(first)
    # "OK17" written together
    m = re.fullmatch(r"([^\d]+)(\d{1,4})", first)
    if m and m.group(1) in ACK_WORDS:
        return True, int(m.group(2))
    return False, None

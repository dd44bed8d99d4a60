"""Texts told to contacts, in their language: da, en, pl, ro, uk, ar (SPEC §3, issue 4).

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

from protocol.errors import ValidationError

__all__ = ["ACK_WORDS", "KIND_NAMES", "MESSAGES", "MessageContext", "Rendered", "map_link",
           "parse_reply", "render"]

SMS_NOTE_CHARS: Final = 160
DEFAULT_MAP_URL: Final = "https://maps.google.com/?q={lat:.5f},{lon:.5f}"

#: Names of the alarm kinds per language.
KIND_NAMES: Final[dict[str, dict[str, str]]] = {
    "en": {"panic": "Panic alarm", "silent_panic": "Silent alarm", "man_down": "Man down",
           "missed_checkin": "Missed check-in", "lost_contact": "Lost contact with device",
           "low_battery": "Low battery", "not_ready": "Device NOT ready at shift start"},
    "da": {"panic": "Overfaldsalarm", "silent_panic": "Stille alarm", "man_down": "Mand-ned-alarm",
           "missed_checkin": "Manglende tjek-ind", "lost_contact": "Mistet forbindelse til enheden",
           "low_battery": "Lavt batteri", "not_ready": "Enheden er IKKE klar ved vagtstart"},
    "pl": {"panic": "Alarm napadowy", "silent_panic": "Cichy alarm", "man_down": "Upadek pracownika",
           "missed_checkin": "Brak potwierdzenia obecności", "lost_contact": "Utrata łączności z urządzeniem",
           "low_battery": "Niski poziom baterii", "not_ready": "Urządzenie NIEGOTOWE na początku zmiany"},
    "ro": {"panic": "Alarmă de panică", "silent_panic": "Alarmă silențioasă", "man_down": "Angajat căzut",
           "missed_checkin": "Confirmare de prezență ratată", "lost_contact": "Legătura cu dispozitivul pierdută",
           "low_battery": "Baterie descărcată", "not_ready": "Dispozitivul NU este pregătit la începutul turei"},
    "uk": {"panic": "Тривожна кнопка", "silent_panic": "Тиха тривога", "man_down": "Падіння працівника",
           "missed_checkin": "Пропущена відмітка", "lost_contact": "Втрачено зв'язок із пристроєм",
           "low_battery": "Низький заряд батареї", "not_ready": "Пристрій НЕ готовий на початку зміни"},
    "ar": {"panic": "إنذار استغاثة", "silent_panic": "إنذار صامت", "man_down": "سقوط العامل",
           "missed_checkin": "فوات تسجيل الحضور", "lost_contact": "انقطاع الاتصال بالجهاز",
           "low_battery": "بطارية منخفضة", "not_ready": "الجهاز غير جاهز عند بدء المناوبة"},
}

# Per language: the alarm's line labels, then the other messages. ``{…}`` are filled by render.
_TEXTS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "place": "Place: {place}", "floor": "floor {floor}",
        "not_ready": "NOT READY: {worker}'s lonewatch device did not pass its self-test after the shift start ({time}, {site}): {detail}. Alarms may not get through. Reply OK (ref {ref}).",
        "head": "ALARM: {kind}", "worker": "Worker: {worker}", "site": "Site: {site}",
        "address": "Address: {address}", "time": "Time: {time}", "map": "Position: {map}",
        "nomap": "Position: unknown", "escape": "Escape routes: {escape_routes}",
        "alarmsys": "Alarm system: {alarm_system}", "ack": "Reply OK to acknowledge (ref {ref}).",
        "subject": "ALARM: {kind} – {worker}",
        "cancelled": "CANCELLED: The alarm from {worker} ({kind}, ref {ref}) was cancelled by the worker.",
        "restored": "RESTORED: {kind} – {worker}: back to normal (ref {ref}).",
        "acknowledged": "ACKNOWLEDGED: The alarm from {worker} (ref {ref}) was acknowledged by {by}.",
        "ambiguous": "Several alarms are open: {refs}. Reply OK and the ref, e.g. \"OK {example}\".",
    },
    "da": {
        "place": "Placering: {place}", "floor": "etage {floor}",
        "not_ready": "IKKE KLAR: {worker}s lonewatch-enhed bestod ikke selvtesten efter vagtstart ({time}, {site}): {detail}. Alarmer kommer måske ikke igennem. Svar OK (ref {ref}).",
        "head": "ALARM: {kind}", "worker": "Medarbejder: {worker}", "site": "Sted: {site}",
        "address": "Adresse: {address}", "time": "Tid: {time}", "map": "Position: {map}",
        "nomap": "Position: ukendt", "escape": "Flugtveje: {escape_routes}",
        "alarmsys": "Alarmanlæg: {alarm_system}", "ack": "Svar OK for at kvittere (ref {ref}).",
        "subject": "ALARM: {kind} – {worker}",
        "cancelled": "AFMELDT: Alarmen fra {worker} ({kind}, ref {ref}) er afmeldt af medarbejderen.",
        "restored": "GENOPRETTET: {kind} – {worker}: situationen er normal igen (ref {ref}).",
        "acknowledged": "KVITTERET: Alarmen fra {worker} (ref {ref}) er kvitteret af {by}.",
        "ambiguous": "Flere alarmer er åbne: {refs}. Svar OK og ref, f.eks. \"OK {example}\".",
    },
    "pl": {
        "place": "Miejsce w budynku: {place}", "floor": "piętro {floor}",
        "not_ready": "NIEGOTOWE: urządzenie lonewatch ({worker}) nie przeszło autotestu po rozpoczęciu zmiany ({time}, {site}): {detail}. Alarmy mogą nie dotrzeć. Odpowiedz OK (ref {ref}).",
        "head": "ALARM: {kind}", "worker": "Pracownik: {worker}", "site": "Miejsce: {site}",
        "address": "Adres: {address}", "time": "Czas: {time}", "map": "Pozycja: {map}",
        "nomap": "Pozycja: nieznana", "escape": "Drogi ewakuacyjne: {escape_routes}",
        "alarmsys": "System alarmowy: {alarm_system}",
        "ack": "Odpowiedz OK lub TAK, aby potwierdzić (ref {ref}).",
        "subject": "ALARM: {kind} – {worker}",
        "cancelled": "ODWOŁANO: Alarm od {worker} ({kind}, ref {ref}) został odwołany przez pracownika.",
        "restored": "PRZYWRÓCONO: {kind} – {worker}: sytuacja wróciła do normy (ref {ref}).",
        "acknowledged": "POTWIERDZONO: Alarm od {worker} (ref {ref}) potwierdził(a): {by}.",
        "ambiguous": "Otwartych jest kilka alarmów: {refs}. Odpowiedz OK i numer ref, np. \"OK {example}\".",
    },
    "ro": {
        "place": "Loc în clădire: {place}", "floor": "etaj {floor}",
        "not_ready": "NEPREGĂTIT: dispozitivul lonewatch al lui {worker} nu a trecut autotestul după începutul turei ({time}, {site}): {detail}. Alarmele s-ar putea să nu ajungă. Răspundeți OK (ref {ref}).",
        "head": "ALARMĂ: {kind}", "worker": "Angajat: {worker}", "site": "Locație: {site}",
        "address": "Adresă: {address}", "time": "Ora: {time}", "map": "Poziție: {map}",
        "nomap": "Poziție: necunoscută", "escape": "Căi de evacuare: {escape_routes}",
        "alarmsys": "Sistem de alarmă: {alarm_system}",
        "ack": "Răspundeți OK sau DA pentru confirmare (ref {ref}).",
        "subject": "ALARMĂ: {kind} – {worker}",
        "cancelled": "ANULAT: Alarma de la {worker} ({kind}, ref {ref}) a fost anulată de angajat.",
        "restored": "RESTABILIT: {kind} – {worker}: situația a revenit la normal (ref {ref}).",
        "acknowledged": "CONFIRMAT: Alarma de la {worker} (ref {ref}) a fost confirmată de {by}.",
        "ambiguous": "Sunt mai multe alarme deschise: {refs}. Răspundeți OK și ref, de ex. \"OK {example}\".",
    },
    "uk": {
        "place": "Місце в будівлі: {place}", "floor": "поверх {floor}",
        "not_ready": "НЕ ГОТОВИЙ: пристрій lonewatch ({worker}) не пройшов самоперевірку після початку зміни ({time}, {site}): {detail}. Тривоги можуть не дійти. Дайте відповідь OK (ref {ref}).",
        "head": "ТРИВОГА: {kind}", "worker": "Працівник: {worker}", "site": "Об'єкт: {site}",
        "address": "Адреса: {address}", "time": "Час: {time}", "map": "Місцезнаходження: {map}",
        "nomap": "Місцезнаходження: невідоме", "escape": "Шляхи евакуації: {escape_routes}",
        "alarmsys": "Сигналізація: {alarm_system}",
        "ack": "Дайте відповідь OK або ТАК, щоб підтвердити (ref {ref}).",
        "subject": "ТРИВОГА: {kind} – {worker}",
        "cancelled": "СКАСОВАНО: Тривогу від {worker} ({kind}, ref {ref}) скасував працівник.",
        "restored": "ВІДНОВЛЕНО: {kind} – {worker}: ситуація нормалізувалася (ref {ref}).",
        "acknowledged": "ПІДТВЕРДЖЕНО: Тривогу від {worker} (ref {ref}) підтвердив(ла) {by}.",
        "ambiguous": "Відкрито кілька тривог: {refs}. Дайте відповідь OK і номер ref, напр. \"OK {example}\".",
    },
    "ar": {
        "place": "المكان في المبنى: {place}", "floor": "الطابق {floor}",
        "not_ready": "غير جاهز: جهاز lonewatch الخاص بـ {worker} لم يجتز الفحص الذاتي بعد بدء المناوبة ({time}، {site}): {detail}. قد لا تصل الإنذارات. أرسل OK (المرجع {ref}).",
        "head": "إنذار: {kind}", "worker": "العامل: {worker}", "site": "الموقع: {site}",
        "address": "العنوان: {address}", "time": "الوقت: {time}", "map": "المكان على الخريطة: {map}",
        "nomap": "المكان: غير معروف", "escape": "طرق الإخلاء: {escape_routes}",
        "alarmsys": "نظام الإنذار: {alarm_system}",
        "ack": "أرسل OK أو نعم للتأكيد (المرجع {ref}).",
        "subject": "إنذار: {kind} – {worker}",
        "cancelled": "أُلغي: ألغى العامل {worker} الإنذار ({kind}، المرجع {ref}).",
        "restored": "عاد الوضع طبيعياً: {kind} – {worker} (المرجع {ref}).",
        "acknowledged": "تم التأكيد: أكّد {by} استلام إنذار {worker} (المرجع {ref}).",
        "ambiguous": "توجد عدة إنذارات مفتوحة: {refs}. أرسل OK مع رقم المرجع، مثلاً \"OK {example}\".",
    },
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
    lang = language if language in _TEXTS else "en"
    t = _TEXTS[lang]
    kind = KIND_NAMES[lang].get(ctx.kind, ctx.kind)
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
        subject = body.partition(":")[0] + f": {values['worker']} (ref {ctx.ref})"
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

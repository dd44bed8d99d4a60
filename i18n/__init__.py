"""Texts for people, from gettext catalogs (issue 13): one ``.po`` per language and domain,
compiled to ``.mo`` beside it, read with the standard library's :mod:`gettext` only — the
device (SPEC §2: stdlib, gpiozero, pyserial, paho-mqtt) loads its SMS texts from here too.

Layout: ``i18n/locale/<language>/LC_MESSAGES/<domain>.po`` (and ``.mo``); the extracted
templates are ``i18n/locale/<domain>.pot``. Domains (:data:`DOMAINS`):

* ``notify`` — what the relay tells contacts by SMS and e-mail (:mod:`relay.notify.templates`);
* ``device`` — the device's SMS fallback texts (:mod:`device.smstext`);
* ``card`` — the worker card (:mod:`relay.card`).

Message ids are the English texts; ``{name}`` fields are :meth:`str.format` placeholders,
which every translation must keep (``tests/test_i18n.py`` fails on a missing message or a
changed placeholder). The ``.mo`` files are committed (the Pi has no Babel); the test checks
they match their ``.po``. Update after changing texts: ``make catalogs`` (Babel: extract,
update, compile). Adding a language = adding one catalog per domain (README "Languages").
"""

from __future__ import annotations

import gettext
import string
from functools import lru_cache
from pathlib import Path
from typing import Final

__all__ = ["DOMAINS", "FALLBACK", "LANGUAGES", "LOCALE_DIR", "N_", "RTL_LANGUAGES", "is_rtl",
           "placeholders", "translation"]

#: The languages with a catalog in every domain (SPEC §3).
LANGUAGES: Final = ("da", "en", "pl", "ro", "uk", "ar")
#: Languages written right to left (the worker card mirrors its layout for them).
RTL_LANGUAGES: Final = frozenset({"ar"})
#: What an unknown language, or a message missing from a catalog, falls back to.
FALLBACK: Final = "en"
DOMAINS: Final = ("notify", "device", "card")
LOCALE_DIR: Final = Path(__file__).resolve().parent / "locale"


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it (Babel's default keyword):
    tables of message ids are translated later, with :func:`translation`."""
    return message


@lru_cache(maxsize=64)
def translation(domain: str, language: str) -> gettext.NullTranslations:
    """The catalog of ``domain`` in ``language`` (e.g. ``"da"``, ``"ar"``).

    An unknown language (or ``""``) gives the English catalog; a message missing from a
    language's catalog falls back to English, then to the message id (English): a text is
    never refused for a missing translation. Catalogs are read once and cached.

    A new domain (e.g. the console's) is a ``locale/<domain>.pot`` plus its catalogs; add it to
    :data:`DOMAINS` so that ``tests/test_i18n.py`` checks it.

    Raises:
        ValueError: unknown ``domain`` (no template: a programming error, not bad input).
    """
    if domain not in DOMAINS and not (LOCALE_DIR / f"{domain}.pot").is_file():
        raise ValueError(f"unknown text domain {domain!r}; one of {', '.join(DOMAINS)}")
    english = gettext.translation(domain, LOCALE_DIR, [FALLBACK], fallback=True)
    lang = (language or "").strip().lower().replace("-", "_").split("_")[0]
    if lang == FALLBACK or not lang.isalpha():
        return english
    try:
        t = gettext.translation(domain, LOCALE_DIR, [lang])
    except OSError:  # no catalog for that language
        return english
    t.add_fallback(english)
    return t

def is_rtl(language: str) -> bool:
    """True for a language written right to left (:data:`RTL_LANGUAGES`)."""
    return language in RTL_LANGUAGES


def placeholders(text: str) -> frozenset[str]:
    """The ``{name}`` fields of a :meth:`str.format` text (``"{n} min"`` → ``{"n"}``).

    Raises:
        ValueError: ``text`` is not a valid format string (unbalanced braces).
    """
    return frozenset(name for _, name, _, _ in string.Formatter().parse(text) if name is not None)

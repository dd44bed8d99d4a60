"""Texts for people from gettext catalogs (issue 13 "Texts in catalogs").

Placeholder written by the console branch with the interface the ``texts`` branch builds:
catalogs at ``i18n/locale/<lang>/LC_MESSAGES/<domain>.mo``; a language or domain without a
catalog falls back to the msgids (English). Standard library :mod:`gettext` only.
"""

from __future__ import annotations

import gettext
from pathlib import Path

__all__ = ["LOCALE_DIR", "translation"]

#: Where the compiled catalogs live.
LOCALE_DIR = Path(__file__).resolve().parent / "locale"


def translation(domain: str, language: str) -> gettext.NullTranslations:
    """The catalog of ``domain`` (e.g. ``"console"``) in ``language`` (``"da"``, ``"ar"`` …);
    :class:`gettext.NullTranslations` (the English msgids) when there is none. Never raises
    for a missing catalog."""
    return gettext.translation(domain, localedir=str(LOCALE_DIR), languages=[language], fallback=True)

"""Texts in gettext catalogs (issue 13): every message the code uses is in every language's
catalog with the same placeholders, the committed .mo files are what their .po compile to,
the device reads them with the standard library alone, and unknown languages fall back to
English."""

from __future__ import annotations

import gettext
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

import i18n

ROOT = Path(__file__).resolve().parent.parent
#: domain → the sources its messages are extracted from (the Makefile's CATALOG_SOURCES_*).
SOURCES = {"notify": ("relay/notify/templates.py",), "device": ("device/smstext.py",),
           "card": ("relay/card_items.py",)}


def extracted(domain: str) -> set[str]:
    """Message ids the code of ``domain`` marks (Babel's default keywords: _, gettext, N_ …)."""
    ids: set[str] = set()
    for src in SOURCES[domain]:
        for _line, msg, _comments, _ctx in extract_from_file("python", ROOT / src):
            ids.add(msg if isinstance(msg, str) else msg[0])
    return ids


def po_path(domain: str, lang: str) -> Path:
    return i18n.LOCALE_DIR / lang / "LC_MESSAGES" / f"{domain}.po"


def catalog_problems(po: Path, lang: str, wanted: set[str]) -> list[str]:
    """What is wrong with one catalog: missing, empty or fuzzy messages, placeholders that
    differ from the message id's, stale messages the code no longer uses."""
    with po.open("rb") as f:
        cat = read_po(f, locale=lang)
    have = {m.id: m for m in cat if m.id}
    problems = [f"missing: {mid!r}" for mid in sorted(wanted - set(have))]
    problems += [f"not used by the code: {mid!r}" for mid in sorted(set(have) - wanted)]
    for mid, m in have.items():
        if not m.string:
            problems.append(f"untranslated: {mid!r}")
        elif m.fuzzy:
            problems.append(f"fuzzy: {mid!r}")
        else:
            try:
                got = i18n.placeholders(m.string)
            except ValueError as exc:
                problems.append(f"bad format {m.string!r}: {exc}")
                continue
            if got != i18n.placeholders(mid):
                problems.append(f"placeholders {sorted(got)} in {m.string!r}, message id has {sorted(i18n.placeholders(mid))}")
    return problems


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize("domain", i18n.DOMAINS)
def test_every_catalog_has_every_message_with_its_placeholders(domain: str, lang: str) -> None:
    wanted = extracted(domain)
    assert wanted, f"no messages extracted for {domain}"
    assert catalog_problems(po_path(domain, lang), lang, wanted) == []


@pytest.mark.parametrize("domain", i18n.DOMAINS)
def test_template_is_up_to_date_with_the_code(domain: str) -> None:
    with (i18n.LOCALE_DIR / f"{domain}.pot").open("rb") as f:
        pot = {m.id for m in read_po(f) if m.id}
    assert pot == extracted(domain), "run `make catalogs`"


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize("domain", i18n.DOMAINS)
def test_committed_mo_is_the_compiled_po(domain: str, lang: str) -> None:
    with po_path(domain, lang).open("rb") as f:
        po = {m.id: m.string for m in read_po(f, locale=lang) if m.id}
    with po_path(domain, lang).with_suffix(".mo").open("rb") as f:
        mo = {k: v for k, v in gettext.GNUTranslations(f)._catalog.items() if k}  # type: ignore[attr-defined]
    assert mo == po, "run `make catalogs` (the .mo is older than the .po)"


def test_the_checker_catches_a_missing_message_and_a_changed_placeholder(tmp_path: Path) -> None:
    po = tmp_path / "x.po"
    po.write_text('msgid ""\nmsgstr "Content-Type: text/plain; charset=utf-8\\n"\n\n'
                  'msgid "Worker: {worker}"\nmsgstr "Medarbejder: {arbejder}"\n\n'
                  'msgid "Site: {site}"\nmsgstr ""\n', encoding="utf-8")
    problems = catalog_problems(po, "da", {"Worker: {worker}", "Site: {site}", "Time: {time}"})
    assert sorted(problems) == ["missing: 'Time: {time}'",
                                "placeholders ['arbejder'] in 'Medarbejder: {arbejder}', message id has ['worker']",
                                "untranslated: 'Site: {site}'"]


def test_makefile_extracts_the_same_sources() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for domain, sources in SOURCES.items():
        m = re.search(rf"^CATALOG_SOURCES_{domain}\s*:=\s*(.+)$", makefile, re.M)
        assert m and tuple(m.group(1).split()) == sources


@pytest.mark.parametrize("language", ["xx", "", "EN", "en-GB", "klingon", "../da"])
def test_unknown_language_falls_back_to_english(language: str) -> None:
    assert i18n.translation("notify", language).gettext("Position: unknown") == "Position: unknown"


@pytest.mark.parametrize(("language", "expected"), [("da", "Position: ukendt"), ("da_DK", "Position: ukendt"),
                                                    ("pl-PL", "Pozycja: nieznana"), ("ar", "المكان: غير معروف")])
def test_language_variants_find_their_catalog(language: str, expected: str) -> None:
    assert i18n.translation("notify", language).gettext("Position: unknown") == expected


def test_a_message_missing_from_a_catalog_falls_back_to_the_id() -> None:
    assert i18n.translation("card", "uk").gettext("no such message {x}") == "no such message {x}"


def test_unknown_domain_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown text domain"):
        i18n.translation("console-typo", "da")


def test_device_reads_catalogs_with_the_standard_library_only() -> None:
    # A fresh interpreter that cannot import Babel (as on the Pi) renders the fallback SMS.
    code = ("import sys; sys.modules['babel'] = None\n"
            "from device.smstext import render_alarm\n"
            "print(render_alarm('panic', 'uk', worker='A', site='', device_id='d', event_id='d:1', "
            "occurred_at=0, position=None, now=0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.startswith("ТРИВОГА: Тривожна кнопка")


def test_placeholders() -> None:
    assert i18n.placeholders("fix {n} min old, {n}") == {"n"}
    assert i18n.placeholders("no fields") == frozenset()
    with pytest.raises(ValueError):
        i18n.placeholders("broken {")

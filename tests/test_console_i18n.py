"""The console's texts come from gettext catalogs (issue 13 "Texts in catalogs"): every
message the console shows is extracted by Babel (templates through Jinja2's i18n extension,
Python labels marked ``N_``), every catalog of domain ``console`` translates each one with
the same placeholders, the compiled ``.mo`` is the ``.po``, and a page renders in Danish."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from console.web import template_env

ROOT = Path(__file__).resolve().parents[1]
LOCALE = ROOT / "i18n" / "locale"
CATALOGS = sorted(LOCALE.glob("*/LC_MESSAGES/console.po"))


def _extracted() -> set[str]:
    method_map = [("console/**.py", "python"), ("console/templates/**.html", "jinja2")]
    options = {"console/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    return {m[2] if isinstance(m[2], str) else m[2][0]
            for m in extract_from_dir(str(ROOT), method_map, options, keywords=keywords)}


def _placeholders(text: str) -> list[str]:
    return sorted(re.findall(r"%\([a-z_]+\)s|%%", text))


def test_there_is_a_console_catalog() -> None:
    assert "da" in [p.parts[-3] for p in CATALOGS]


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parts[-3])
def test_catalog_translates_every_message_with_its_placeholders(po: Path) -> None:
    wanted = _extracted()
    assert len(wanted) > 100  # the extraction itself works (templates and N_ labels)
    catalog = read_po(po.open("rb"))
    have = {m.id: m.string for m in catalog if m.id}
    missing = sorted(wanted - {k for k, v in have.items() if v})
    assert not missing, f"{po.parts[-3]} lacks: {missing[:10]}"
    for msgid in wanted:
        assert _placeholders(have[msgid]) == _placeholders(msgid), msgid
    mo = read_mo(io.BytesIO(po.with_suffix(".mo").read_bytes()))
    assert {m.id: m.string for m in mo if m.id} == {k: v for k, v in have.items() if v}, \
        "console.mo is not compiled from console.po (pybabel compile)"


def test_pages_render_in_the_configured_language() -> None:
    ctx = dict(user=None, csrf="t", csrf_field="csrf", path="/login", next="/")
    da = template_env("da").get_template("login.html").render(**ctx)
    assert '<html lang="da">' in da and "Log ind på lonewatch-konsollen" in da and "Brugernavn" in da
    en = template_env("en").get_template("login.html").render(**ctx)
    assert "Sign in to the lonewatch console" in en
    ar = template_env("ar").get_template("login.html").render(**ctx)
    assert 'dir="rtl"' in ar

"""The worker card (issue 13): one page per language, text that a PDF reader finds again,
every glyph in the font, Arabic laid out right to left, a picture for every vibration pattern
of the device, and `lonewatch card` on a real Redis registry."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from fontTools.ttLib import TTFont
from PIL import Image

import i18n
import relay.card as card_mod
import relay.card_items as card_items
from cli.main import main
from device.config import TimingConfig
from device.feedback import PATTERNS
from relay.card import CardError, card_for_worker, find_fonts, render_card
from relay.card_items import FOOTER, GESTURES, HEADER, SIGNALS, CardTimings, Signal
from relay.registry import RegistryDoc, RegistryStore, Worker
from relay.store import Store

ANNA = Worker("Anna Hansen", 17, "da")
#: Words of each language's card that pdftotext must find (Arabic: words without the lam-alef
#: ligature, whose extraction poppler reverses).
WORDS = {"da": ["Din alarmknap", "Hold knappen inde i 2 sekunder", "Ingen forbindelse"],
         "en": ["Your alarm button", "Hold the button for 2 seconds", "No connection"],
         "pl": ["Twój przycisk alarmowy", "Przytrzymaj przycisk przez 2 sekundy", "Brak połączenia"],
         "ro": ["Butonul tău de alarmă", "Ține butonul apăsat 2 secunde", "Fără conexiune"],
         "uk": ["Ваша тривожна кнопка", "Утримуйте кнопку 2 секунди", "Немає з'єднання"],
         "ar": ["زر", "الخاص بك", "اتصال", "ثانية"]}


def card_texts(language: str) -> str:
    t = i18n.translation("card", language)
    ids = [*HEADER.values(), *FOOTER, *(g.title for g in GESTURES), *(g.text for g in GESTURES),
           *(s.title for s in SIGNALS), *(s.text for s in SIGNALS)]
    return "".join(t.gettext(m) for m in ids)


def pdftotext(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))  # type: ignore[union-attr]


def png(pdf: Path, dpi: int = 60) -> Image.Image:
    subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-singlefile", str(pdf), str(pdf.with_suffix(""))], check=True)
    return Image.open(pdf.with_suffix(".png")).convert("RGB")


def red_columns(img: Image.Image, top: float, bottom: float) -> list[int]:
    """x of the pixels of the alarm picture's red (190, 20, 30) between two heights (fractions)."""
    w, h = img.size
    px = img.load()
    return [x for y in range(int(h * top), int(h * bottom), 2) for x in range(w)
            if abs(px[x, y][0] - 190) < 40 and px[x, y][1] < 70 and px[x, y][2] < 80]


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_card_is_one_page_with_its_texts_as_png_too(tmp_path: Path, language: str) -> None:
    pdf = tmp_path / f"card-{language}.pdf"
    pdf.write_bytes(render_card(ANNA, language))
    assert pdf.read_bytes().startswith(b"%PDF-") and pages(pdf) == 1
    text = " ".join(pdftotext(pdf).split())
    assert "Anna Hansen" in text
    for words in WORDS[language]:
        assert words in text, (words, text[:400])
    img = png(pdf)
    assert img.size[1] > img.size[0]  # portrait A5
    assert len(img.getcolors(1 << 16) or []) > 50  # drawn, not blank


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_every_character_of_the_card_is_in_the_font(language: str) -> None:
    regular, bold = find_fonts()
    for path in (regular, bold):
        cmap = TTFont(path).getBestCmap()
        missing = sorted({c for c in card_texts(language) + "≤" if ord(c) not in cmap and not c.isspace()})
        assert missing == [], f"{path.name} lacks {missing}"


def test_arabic_card_is_mirrored(tmp_path: Path) -> None:
    # The alarm picture (red button and bar) stands at the reading start: left for Danish,
    # right for Arabic.
    for language, side in (("da", "left"), ("ar", "right")):
        pdf = tmp_path / f"{language}.pdf"
        pdf.write_bytes(render_card(ANNA, language))
        img = png(pdf)
        xs = red_columns(img, 0.15, 0.22)
        assert xs, language
        middle = img.size[0] / 2
        assert (max(xs) < middle) if side == "left" else (min(xs) > middle), (language, min(xs), max(xs))


def test_arabic_text_is_shaped_and_right_to_left() -> None:
    # HarfBuzz through fpdf2 turns the letters into their joined forms: the shaped glyph
    # run differs from the letters one by one, and the run is right to left.
    import uharfbuzz as hb

    regular, _ = find_fonts()
    face = hb.Face(regular.read_bytes())
    font = hb.Font(face)
    word = "الإنذار"

    def glyphs(text: str) -> list[int]:
        buf = hb.Buffer()
        buf.add_str(text)
        buf.guess_segment_properties()
        hb.shape(font, buf, {})
        assert buf.direction == "rtl"
        return [g.codepoint for g in buf.glyph_infos]

    isolated = [g for c in word for g in glyphs(c)]
    assert glyphs(word) != list(reversed(isolated))


def test_every_vibration_pattern_of_the_device_is_on_the_card() -> None:
    on_card = {s.pattern: s.vibration for s in SIGNALS}
    assert on_card == {name: vib for name, (vib, _led) in PATTERNS.items()}


def test_card_states_the_device_default_timings() -> None:
    d, c = TimingConfig(), CardTimings()
    assert (c.hold_s, c.cancel_presses, c.cancel_window_s, c.checkin_presses, c.checkin_window_s, c.checkin_default_s) == (
        d.hold_s, d.cancel_presses, d.cancel_window_s, d.checkin_presses, d.checkin_window_s, d.checkin_default_s)


def test_configured_timings_are_what_the_card_says(tmp_path: Path) -> None:
    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(render_card(ANNA, "en", timings=CardTimings(hold_s=3.0, checkin_default_s=600, silent=False)))
    text = " ".join(pdftotext(pdf).split())
    assert "Hold the button for 3 seconds" in text and "10-minute timer" in text
    assert "the device also beeps" in text and "silent" not in text


def test_a_growing_item_table_still_fits_one_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Twice as many vibration patterns as today (man-down, readiness … will add some).
    extra = tuple(dataclasses.replace(s, pattern=f"{s.pattern}_2") for s in SIGNALS)
    monkeypatch.setattr(card_items, "SIGNALS", SIGNALS + extra)
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(render_card(ANNA, "uk"))
    assert pages(pdf) == 1
    text = pdftotext(pdf)
    assert text.count("Таймер відмітки працює") == 2 and "Ваше місцезнаходження надсилається" in text  # footer too


def test_a_table_too_long_for_one_page_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(card_items, "SIGNALS", SIGNALS * 5)
    with pytest.raises(CardError, match="do not fit on one page"):
        render_card(ANNA, "da")


def test_unknown_language_gives_english() -> None:
    assert render_card(ANNA, "xx")[:5] == b"%PDF-"
    assert isinstance(SIGNALS[0], Signal)


def test_missing_font_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONEWATCH_FONT_DIR", str(tmp_path))
    monkeypatch.setattr(card_mod, "FONT_DIRS", ())
    with pytest.raises(CardError, match="fonts-dejavu-core"):
        render_card(ANNA, "da")


def test_unknown_worker_lists_the_known_ones() -> None:
    with pytest.raises(CardError, match="workers: Anna Hansen"):
        card_for_worker(RegistryDoc(workers=(ANNA,)), "Nobody")


# ----------------------------------------------------------------------------- CLI, real Redis


@pytest.mark.integration
def test_cli_writes_the_card_from_the_relay_registry(redis_server, tmp_path: Path) -> None:
    store = Store.from_url(redis_server.url)
    RegistryStore(store).save(RegistryDoc(workers=(ANNA, Worker("Ahmad Karimi", 18, "ar"))))
    out = tmp_path / "ahmad.pdf"
    res = CliRunner().invoke(main, ["card", "--worker", "Ahmad Karimi", "-o", str(out), "--redis", redis_server.url])
    assert res.exit_code == 0, res.output
    assert "(ar)" in res.output and pages(out) == 1
    assert "Ahmad Karimi" in pdftotext(out)
    res = CliRunner().invoke(main, ["card", "--worker", "Nobody", "-o", str(tmp_path / "x.pdf"),
                                    "--redis", redis_server.url])
    assert res.exit_code == 1 and "no worker 'Nobody'" in res.output
    assert not (tmp_path / "x.pdf").exists()


def test_cli_reads_a_registry_file(tmp_path: Path) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text('[[workers]]\nname = "Ole"\nnumber = 3\nlanguage = "pl"\n', encoding="utf-8")
    out = tmp_path / "ole.pdf"
    res = CliRunner().invoke(main, ["card", "--worker", "Ole", "-o", str(out), "--registry", str(reg), "--language", "ro"])
    assert res.exit_code == 0, res.output
    assert "Butonul tău de alarmă" in pdftotext(out)


def test_cli_states_the_timings_of_the_workers_device(tmp_path: Path) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text('[[workers]]\nname = "Ole"\nnumber = 3\nlanguage = "en"\n', encoding="utf-8")
    dev = tmp_path / "device.toml"
    dev.write_text('[device]\nid = "lw-0042"\nsilent = false\n[mqtt]\nhost = "relay.example.com"\n'
                   '[timing]\nhold_s = 3.0\ncheckin_default_s = 900\n', encoding="utf-8")
    out = tmp_path / "ole.pdf"
    res = CliRunner().invoke(main, ["card", "--worker", "Ole", "-o", str(out), "--registry", str(reg),
                                    "--device-config", str(dev)])
    assert res.exit_code == 0, res.output
    text = " ".join(pdftotext(out).split())
    assert "Hold the button for 3 seconds" in text and "15-minute timer" in text and "also beeps" in text


# ------------------------------------------------ readiness, unprotected, man-down (issues 10, 12)

#: Words of the man-down card of each language: the NOT ready and pre-alarm titles.
MANDOWN_WORDS = {"da": ["IKKE klar", "Ubeskyttet: intet netværk", "Mand-ned: er du okay?", "inden for 20 sekunder"],
                 "en": ["NOT ready", "Unprotected: no network", "Man-down: are you all right?", "within 20 seconds"],
                 "pl": ["NIE jest gotowe", "Bez ochrony: brak sieci", "Bezruch: wszystko w porządku?", "20 sekund"],
                 "ro": ["NU este gata", "Neprotejat: fără rețea", "Om la pământ: ești bine?", "20 secunde"],
                 "uk": ["НЕ готово", "Без захисту: немає мережі", "з вами все гаразд?", "20 секунд"],
                 "ar": ["جاهز", "شبكة", "السقوط", "20"]}
MANDOWN = CardTimings(mandown=True, prealarm_s=20.0, pause_presses=5, pause_max_s=600.0)


def test_readiness_and_unprotected_say_what_to_do(tmp_path: Path) -> None:
    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(render_card(ANNA, "en"))
    text = " ".join(pdftotext(pdf).split())
    assert "NOT ready" in text and "Do not start working alone" in text and "tell your manager" in text
    assert "Unprotected: no network" in text and "towards a window or the entrance" in text
    assert "may not reach anyone" in text


def test_man_down_items_only_for_a_device_with_man_down(tmp_path: Path) -> None:
    # A card must not promise a man-down alarm the device does not raise ([mandown] is off
    # by default).
    off, on = tmp_path / "off.pdf", tmp_path / "on.pdf"
    off.write_bytes(render_card(ANNA, "en"))
    on.write_bytes(render_card(ANNA, "en", timings=MANDOWN))
    text_off, text_on = (" ".join(pdftotext(p).split()) for p in (off, on))
    assert "Man-down" not in text_off and "man-down" not in text_off
    assert "stand up within 20 seconds to cancel" in text_on
    assert "Pause man-down" in text_on and "Press 5 times quickly (within 3 seconds)" in text_on
    assert "after 10 minutes" in text_on and "man-down is on again by itself" in text_on
    assert "Man-down paused" in text_on and "Man-down on again" in text_on and "Man-down cancelled" in text_on


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_man_down_card_is_one_page_in_every_language(tmp_path: Path, language: str) -> None:
    pdf = tmp_path / f"md-{language}.pdf"
    pdf.write_bytes(render_card(ANNA, language, timings=MANDOWN))
    assert pages(pdf) == 1
    text = " ".join(pdftotext(pdf).split())
    for words in MANDOWN_WORDS[language] + WORDS[language]:
        assert words in text, (words, text[-600:])
    assert "Man-down" not in text or language == "en"  # translated, not left in English


def test_every_pulse_of_every_pattern_is_drawn_inside_its_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker counts the pulses: the six of NOT ready must be six bars even though the
    # pattern is longer than the picture at the card's time scale.
    drawn: dict[tuple[float, str], list[tuple[float, float]]] = {}  # (type scale, pattern) → bars
    current: list[tuple[float, str]] = []
    real_bar, real_picture = card_mod._Card.bar, card_mod._Card.signal_picture

    def bar(self, x, y, w, h, colour):  # noqa: ANN001
        if current:
            drawn.setdefault(current[-1], []).append((x, x + w))
        return real_bar(self, x, y, w, h, colour)

    def signal_picture(self, s, x, y):  # noqa: ANN001
        current.append((self.scale, s.pattern))
        try:
            return real_picture(self, s, x, y)
        finally:
            current.pop()

    monkeypatch.setattr(card_mod._Card, "bar", bar)
    monkeypatch.setattr(card_mod._Card, "signal_picture", signal_picture)
    render_card(ANNA, "da", timings=MANDOWN)
    scale = min(k for k, _ in drawn)  # the size the card was made at (the larger ones did not fit)
    assert scale < 1.0 and {name for k, name in drawn if k == scale} == set(PATTERNS)
    picture_w = card_mod.PICTURE_W * scale
    for name, (vib, _led) in PATTERNS.items():
        bars = drawn[scale, name]
        assert len(bars) == vib[2], name
        assert all(a < b <= card_mod.MARGIN + picture_w for a, b in bars), (name, bars)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(bars, bars[1:])), name  # apart, not merged


def test_cli_card_shows_man_down_when_the_device_has_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The device's [mandown] section (issue 10) sets the pre-alarm and the pause gesture the
    # card states; a device config without it (or with it off) gives a card without man-down.
    import types

    import device.config as device_config

    reg = tmp_path / "registry.toml"
    reg.write_text('[[workers]]\nname = "Ole"\nnumber = 3\nlanguage = "en"\n', encoding="utf-8")
    dev = tmp_path / "device.toml"
    dev.write_text('[device]\nid = "lw-0042"\n[mqtt]\nhost = "relay.example.com"\n', encoding="utf-8")
    real = device_config.load_device_config
    enabled = types.SimpleNamespace(enabled=True, prealarm_s=45.0, pause_presses=6, pause_window_s=4.0, pause_max_s=1200.0)

    def with_mandown(path):  # noqa: ANN001
        cfg = real(path)
        return types.SimpleNamespace(timing=cfg.timing, device=cfg.device, mandown=enabled)

    out = tmp_path / "ole.pdf"
    args = ["card", "--worker", "Ole", "-o", str(out), "--registry", str(reg), "--device-config", str(dev)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "man-down" not in pdftotext(out).lower()
    monkeypatch.setattr(device_config, "load_device_config", with_mandown)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    text = " ".join(pdftotext(out).split())
    assert "within 45 seconds" in text and "Press 6 times quickly (within 4 seconds)" in text and "after 20 minutes" in text

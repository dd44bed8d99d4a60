"""The worker card (issue 13): one A5 page in the worker's language that shows, with
pictures, what the button does and what each vibration means (:mod:`relay.card_items`).

Rendering: fpdf2 draws the vector pictures and sets the text with HarfBuzz (uharfbuzz) text
shaping and the Unicode bidirectional algorithm, so Arabic letters join and run right to
left; for a right-to-left language the whole layout is mirrored (pictures on the right,
time running right to left). The font is DejaVu Sans from the Debian package
``fonts-dejavu-core`` (``make setup`` installs it), which has Latin, Cyrillic and Arabic
glyphs; ``LONEWATCH_FONT_DIR`` names another folder holding ``DejaVuSans.ttf`` and
``DejaVuSans-Bold.ttf``. The type shrinks step by step until everything fits on one page,
so the item table may grow.

:func:`render_card` (a :class:`relay.registry.Worker` → PDF bytes) is what ``lonewatch card``
and the console call; :func:`card_for_worker` looks the worker up in a registry first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from i18n import is_rtl, translation
from protocol.errors import LonewatchError

from . import card_items
from .card_items import FOOTER, HEADER, CardTimings, Gesture, Signal

if TYPE_CHECKING:
    from fpdf import FPDF

    from .registry import RegistryDoc, Worker

__all__ = ["CardError", "CardTimings", "card_for_worker", "find_fonts", "render_card"]

PAGE_W: Final = 148.0  # A5, mm
PAGE_H: Final = 210.0
MARGIN: Final = 9.0
PICTURE_W: Final = 40.0
PICTURE_H: Final = 13.0
SIGNAL_H: Final = 8.0
GAP: Final = 4.0
MM_PER_S: Final = 11.0  # time scale of the press and vibration bars
FONT_DIRS: Final = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")
FONT_FILES: Final = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
#: Type (and picture) sizes tried, largest first, until the card fits on one page.
SCALES: Final = (1.0, 0.94, 0.88, 0.82, 0.76, 0.7, 0.64, 0.58)
#: What fpdf2's markdown would read as a marker (bold, italic, underline, link).
_MARKDOWN_MARKERS: Final = ("**", "__", "--", "](")
INK: Final = (25, 25, 25)
GREY: Final = (100, 100, 100)


class CardError(LonewatchError, RuntimeError):
    """The card cannot be made: unknown worker, or the font is not installed (the message
    names the Debian package)."""


def find_fonts() -> tuple[Path, Path]:
    """``(regular, bold)`` DejaVu Sans files: ``$LONEWATCH_FONT_DIR`` first, then the Debian
    and other distributions' folders (:data:`FONT_DIRS`).

    Raises:
        CardError: not found (install ``fonts-dejavu-core``).
    """
    dirs = ([os.environ["LONEWATCH_FONT_DIR"]] if os.environ.get("LONEWATCH_FONT_DIR") else []) + list(FONT_DIRS)
    for d in dirs:
        regular, bold = (Path(d) / f for f in FONT_FILES)
        if regular.is_file() and bold.is_file():
            return regular, bold
    raise CardError(f"font DejaVu Sans not found in {', '.join(dirs)}: "
                    "install it with `apt-get install fonts-dejavu-core` (or set LONEWATCH_FONT_DIR)")


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class _Row:
    """One item laid out: picture callback input and texts."""

    item: Gesture | Signal
    title: str
    text: str


class _Card:
    """Lays out and draws one card; ``scale`` multiplies every type size."""

    def __init__(self, language: str, worker: str, timings: CardTimings, scale: float) -> None:
        from fpdf import FPDF

        self.t = translation("card", language)
        self.rtl = is_rtl(language)
        self.timings = timings
        self.worker = worker
        self.scale = scale
        self.pdf: FPDF = FPDF(orientation="P", unit="mm", format=(PAGE_W, PAGE_H))
        regular, bold = find_fonts()
        self.pdf.add_font("card", "", str(regular))
        self.pdf.add_font("card", "B", str(bold))
        self.pdf.set_auto_page_break(False)
        self.pdf.set_margins(MARGIN, MARGIN, MARGIN)
        self.pdf.set_text_shaping(use_shaping_engine=True, direction="rtl" if self.rtl else "ltr")
        self.pdf.set_title(self._(HEADER["title"]))
        self.pdf.set_lang(language)
        self.pdf.set_creator("lonewatch")
        self.pdf.add_page()

    def _(self, message_id: str, **values: object) -> str:
        text = self.t.gettext(message_id)
        return text.format(**values) if values else text

    # --- geometry (mirrored for right-to-left) ----------------------------------------

    def x(self, x: float, w: float = 0.0) -> float:
        """Left edge of a box at ``x`` (from the reading start) of width ``w``."""
        return PAGE_W - x - w if self.rtl else x

    def font(self, size: float, bold: bool = False, colour: tuple[int, int, int] = INK) -> None:
        self.pdf.set_font("card", "B" if bold else "", size * self.scale)
        self.pdf.set_text_color(*colour)

    def line_h(self, size: float) -> float:
        """Line height in mm for ``size`` pt (Arabic marks above and below need more)."""
        return size * self.scale * (0.52 if self.rtl else 0.45)

    def write(self, x: float, y: float, w: float, text: str, size: float, bold: bool = False,
              colour: tuple[int, int, int] = INK, markdown: bool = False) -> float:
        """Write a paragraph at reading-start offset ``x``; returns its height. ``markdown``:
        ``**…**`` is bold (fpdf2's markdown)."""
        self.font(size, bold, colour)
        self.pdf.set_xy(self.x(x, w), y)
        h = self.pdf.multi_cell(w, self.line_h(size), text, align="R" if self.rtl else "L",
                                new_x="LMARGIN", new_y="NEXT", output="HEIGHT", markdown=markdown)
        return float(h)

    def write_item(self, x: float, y: float, w: float, title: str, text: str) -> float:
        """An item's bold title and its text as one paragraph (a line less per item, so a
        long table still fits at a readable size); two paragraphs if a text holds fpdf2
        markdown markers. Returns the height."""
        if not any(m in title + text for m in _MARKDOWN_MARKERS):
            return self.write(x, y, w, f"**{title}**  {text}", 9, markdown=True)
        h = self.write(x, y, w, title, 9, bold=True)
        return h + self.write(x, y + h, w, text, 9)

    # --- pictures ----------------------------------------------------------------------

    def bar(self, x: float, y: float, w: float, h: float, colour: tuple[int, int, int]) -> None:
        self.pdf.set_fill_color(*colour)
        self.pdf.rect(self.x(x, w), y, w, h, style="F", round_corners=True, corner_radius=min(w, h) / 3)

    @property
    def picture_h(self) -> float:
        return PICTURE_H * self.scale

    def button_icon(self, x: float, y: float, colour: tuple[int, int, int]) -> None:
        """The device seen from the front: a rounded body with the round button."""
        pdf, k = self.pdf, self.scale
        pdf.set_draw_color(*INK)
        pdf.set_line_width(0.35 * k)
        pdf.set_fill_color(235, 235, 235)
        pdf.rect(self.x(x, 9 * k), y, 9 * k, self.picture_h, style="DF", round_corners=True, corner_radius=2 * k)
        pdf.set_fill_color(*colour)
        pdf.circle(self.x(x + 4.5 * k), y + self.picture_h / 2, 3.2 * k, style="DF")

    def vibration_icon(self, x: float, y: float, colour: tuple[int, int, int]) -> None:
        """The device with wave marks on both sides (it vibrates)."""
        pdf, k, h = self.pdf, self.scale, self.signal_h
        pdf.set_draw_color(*INK)
        pdf.set_line_width(0.35 * k)
        pdf.set_fill_color(235, 235, 235)
        pdf.rect(self.x(x + 2 * k, 5 * k), y + 1 * k, 5 * k, h - 2 * k, style="DF", round_corners=True,
                 corner_radius=1.2 * k)
        pdf.set_draw_color(*colour)
        pdf.set_line_width(0.5 * k)
        for off in (0.0, 1.4 * k):
            for side in (x + 0.8 * k - off, x + 8.2 * k + off):
                sx = self.x(side)
                pdf.line(sx, y + 2.5 * k, sx, y + h - 2.5 * k)

    def bracket(self, x: float, w: float, y: float, label: str) -> None:
        """A span under the bars with its length in seconds."""
        pdf, k = self.pdf, self.scale
        pdf.set_draw_color(*GREY)
        pdf.set_line_width(0.25 * k)
        x0, x1 = sorted((self.x(x), self.x(x + w)))
        pdf.line(x0, y, x1, y)
        pdf.line(x0, y - k, x0, y + k)
        pdf.line(x1, y - k, x1, y + k)
        self.font(6.5, colour=GREY)
        pdf.set_xy(x0, y + 0.4 * k)
        pdf.cell(x1 - x0, 2.6 * k, label, align="C")

    def gesture_picture(self, g: Gesture, x: float, y: float) -> None:
        t, k = self.timings, self.scale
        scale = MM_PER_S * k
        self.button_icon(x, y, g.colour)
        start, top, h = x + 12 * k, y + 2.0 * k, 4.5 * k
        if g.kind == "hold":
            self.bar(start, top, min(t.hold_s, 2.4) * scale, h, g.colour)
            self.bracket(start, min(t.hold_s, 2.4) * scale, top + h + 2 * k, self._(HEADER["seconds"], n=_num(t.hold_s)))
            return
        presses, window = {"cancel": (t.cancel_presses, t.cancel_window_s),
                           "pause": (t.pause_presses, t.pause_window_s)}.get(
                               g.kind, (t.checkin_presses, t.checkin_window_s))
        span = min(window, 2.2) * scale
        step = span / presses
        for i in range(presses):
            self.bar(start + i * step + step * 0.2, top, step * 0.55, h, g.colour)
        self.bracket(start, span, top + h + 2 * k, "≤ " + self._(HEADER["seconds"], n=_num(window)))

    @property
    def signal_h(self) -> float:
        """Height of a vibration picture (lower than a gesture's: no time bracket under it)."""
        return SIGNAL_H * self.scale

    @property
    def picture_w(self) -> float:
        return PICTURE_W * self.scale

    @property
    def signal_mm_per_s(self) -> float:
        """Time scale of the vibration bars, mm per second: :data:`MM_PER_S` (scaled), or less
        so that the longest pattern on the card fits its picture with every pulse drawn (a
        worker counts the pulses: six must look like six)."""
        k = self.scale
        room = self.picture_w - 13 * k
        longest = max((on * n + off * (n - 1) for on, off, n in (s.vibration for s in self.signals_shown())),
                      default=0.0)
        return min(MM_PER_S * k, room / longest) if longest > 0 else MM_PER_S * k

    def signal_picture(self, s: Signal, x: float, y: float) -> None:
        k = self.scale
        self.vibration_icon(x, y, s.colour)
        on_s, off_s, n = s.vibration
        pos, top, h = x + 12 * k, y + 2.0 * k, self.signal_h - 4 * k
        mm_per_s = self._signal_mm_per_s
        for _ in range(n):
            w = max(1.0 * k, on_s * mm_per_s)
            self.bar(pos, top, w, h, s.colour)
            pos += w + max(0.8 * k, off_s * mm_per_s)

    # --- the page ----------------------------------------------------------------------

    def signals_shown(self) -> list[Signal]:
        """The signals of this device: those of no feature and of the features it has on."""
        on = self.timings.features | {""}
        return [s for s in card_items.SIGNALS if s.feature in on]

    def rows(self) -> tuple[list[_Row], list[_Row]]:
        t = self.timings
        values = {"hold": {"seconds": _num(t.hold_s)},
                  "cancel": {"seconds": _num(t.cancel_window_s), "presses": t.cancel_presses},
                  "checkin": {"seconds": _num(t.checkin_window_s), "presses": t.checkin_presses,
                              "minutes": _num(t.checkin_default_s / 60)},
                  "pause": {"seconds": _num(t.pause_window_s), "presses": t.pause_presses,
                            "minutes": _num(t.pause_max_s / 60)}}
        # Signal texts: the man-down pre-alarm's time and the pause gesture.
        signal_values = {"seconds": _num(t.prealarm_s), "presses": t.pause_presses,
                         "minutes": _num(t.pause_max_s / 60)}
        on = t.features | {""}
        gestures = [_Row(g, self._(g.title), self._(g.text, **values.get(g.kind, {})))
                    for g in card_items.GESTURES if g.feature in on]
        signals = [_Row(s, self._(s.title), self._(s.text, **signal_values)) for s in self.signals_shown()]
        return gestures, signals

    def draw(self) -> float:
        """Draw everything; returns the y the content ended at (mm from the top)."""
        pdf, width = self.pdf, PAGE_W - 2 * MARGIN
        # The pictures shrink with the type, so the texts get the room they need.
        text_x, text_w = MARGIN + self.picture_w + GAP, width - self.picture_w - GAP
        self._signal_mm_per_s = self.signal_mm_per_s
        pdf.set_fill_color(190, 20, 30)
        pdf.rect(0, 0, PAGE_W, 22 * min(1.0, self.scale + 0.1), style="F")
        y = 5.0
        y += self.write(MARGIN, y, width, self._(HEADER["title"]), 17, bold=True, colour=(255, 255, 255))
        y += self.write(MARGIN, y, width, self._(HEADER["for"], worker=self.worker), 11, colour=(255, 255, 255))
        y = max(y, 22 * min(1.0, self.scale + 0.1)) + 2.5
        notice = HEADER["silent"] if self.timings.silent else HEADER["loud"]
        y += self.write(MARGIN, y, width, self._(notice), 9.5, bold=True) + 2
        gestures, signals = self.rows()
        for heading, legend, rows, picture, picture_h in (
                (HEADER["buttons"], HEADER["buttons_legend"], gestures, self.gesture_picture, self.picture_h),
                (HEADER["signals"], HEADER["signals_legend"], signals, self.signal_picture, self.signal_h)):
            y += self.write(MARGIN, y, width, self._(heading), 12.5, bold=True)
            y += self.write(MARGIN, y, width, self._(legend), 8, colour=GREY) + 1.5
            for row in rows:
                picture(row.item, MARGIN, y)  # type: ignore[arg-type]
                h = self.write_item(text_x, y, text_w, row.title, row.text)
                y += max(h, picture_h) + 2.2 * self.scale
            y += 1.5
        pdf.set_draw_color(*GREY)
        pdf.set_line_width(0.3)
        pdf.line(MARGIN, y, PAGE_W - MARGIN, y)
        y += 1.5
        for line in FOOTER:
            y += self.write(MARGIN, y, width, self._(line), 8.5) + 0.8
        return y


def render_card(worker: Worker, language: str | None = None, *, timings: CardTimings = CardTimings()) -> bytes:
    """The card of ``worker`` as PDF bytes: one A5 page in ``language`` (default the
    worker's own; an unknown language gives English, :func:`i18n.translation`).

    ``timings`` are the gestures the device is configured for (default: SPEC §2 defaults)
    and its optional features (man-down items only with ``timings.mandown``).

    Raises:
        CardError: the font is not installed (:func:`find_fonts`), or the items do not fit
            on one page at the smallest type (:data:`SCALES`).
    """
    lang = language or worker.language or "en"
    for scale in SCALES:
        card = _Card(lang, worker.name, timings, scale)
        if card.draw() <= PAGE_H - MARGIN / 2:
            return bytes(card.pdf.output())
    raise CardError(f"the card's {len(card_items.GESTURES) + len(card_items.SIGNALS)} items do not fit on one page "
                    f"even at {SCALES[-1]:.0%} type size: split relay.card_items into two cards")


def card_for_worker(doc: RegistryDoc, worker_name: str, language: str | None = None, *,
                    timings: CardTimings = CardTimings()) -> bytes:
    """:func:`render_card` for the worker called ``worker_name`` in the registry ``doc``.

    Raises:
        CardError: no such worker (the message lists the known ones), or no font.
    """
    worker = doc.worker(worker_name)
    if worker is None:
        known = ", ".join(sorted(w.name for w in doc.workers)) or "none"
        raise CardError(f"no worker {worker_name!r} in the registry (workers: {known})")
    return render_card(worker, language, timings=timings)

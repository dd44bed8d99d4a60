"""What the worker card says (issue 13): a table of items that grows with the device.

Each item is a picture and two texts (message ids of the ``card`` catalogs, :mod:`i18n`):

* :data:`GESTURES` — what the one button does (SPEC §2 gestures: hold = alarm, three short
  presses = cancel, two short presses = check-in), drawn as press bars on a time line;
* :data:`SIGNALS` — what each vibration pattern means (``device/feedback.py`` ``PATTERNS``;
  the timings here are those of the device, ``tests/test_card.py`` checks that every device
  pattern has an item with the same timings), drawn as vibration bars.

A new device feature adds one :class:`Signal` (or :class:`Gesture`) here and its texts to the
catalogs (``make catalogs``): the man-down pre-alarm and the "not ready" / "unprotected"
warnings of issues 10 and 12 go in :data:`SIGNALS` this way. The card shrinks its type to
stay on one page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from i18n import N_

__all__ = ["FOOTER", "GESTURES", "HEADER", "SIGNALS", "CardTimings", "Gesture", "Signal"]


@dataclass(frozen=True)
class CardTimings:
    """The gesture timings the card states (device.toml ``[timing]``, SPEC §2 defaults):
    ``hold_s`` s for an alarm; ``cancel_presses`` within ``cancel_window_s`` s; ``checkin_presses``
    within ``checkin_window_s`` s; check-in timer ``checkin_default_s`` s; ``silent`` alarms
    (no buzzer)."""

    hold_s: float = 2.0
    cancel_presses: int = 3
    cancel_window_s: float = 2.0
    checkin_presses: int = 2
    checkin_window_s: float = 1.0
    checkin_default_s: int = 1800
    silent: bool = True


@dataclass(frozen=True)
class Gesture:
    """A button gesture: ``kind`` ``hold`` / ``cancel`` / ``checkin`` (its timings come from
    :class:`CardTimings`), a ``title`` and a ``text`` (message ids with ``{seconds}``,
    ``{presses}``, ``{minutes}`` placeholders), and the picture's colour (RGB)."""

    kind: str
    title: str
    text: str
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Signal:
    """A vibration pattern of the device: ``pattern`` its name in ``device.feedback.PATTERNS``,
    ``vibration`` ``(on_s, off_s, count)`` as played, ``title`` / ``text`` message ids."""

    pattern: str
    vibration: tuple[float, float, int]
    title: str
    text: str
    colour: tuple[int, int, int] = (200, 90, 0)


RED: Final = (190, 20, 30)
BLUE: Final = (20, 70, 160)
GREEN: Final = (20, 120, 60)
ORANGE: Final = (200, 90, 0)

#: Texts of the card's head: title, who it is for, the legends of the two picture kinds.
HEADER: Final[dict[str, str]] = {
    "title": N_("Your alarm button"),
    # TRANSLATORS: {worker} is the worker's name.
    "for": N_("Card for {worker}"),
    "silent": N_("The alarm is silent: nobody near you hears it."),
    "loud": N_("When you raise an alarm, the device also beeps."),
    "buttons": N_("The button"),
    "buttons_legend": N_("Each bar is a press; a long bar is a long hold."),
    "signals": N_("What the vibrations mean"),
    "signals_legend": N_("Each bar is a vibration; a long bar is a long vibration."),
    # TRANSLATORS: a time on the pictures' scale, in seconds; keep it very short.
    "seconds": N_("{n} s"),
}

GESTURES: Final[tuple[Gesture, ...]] = (
    Gesture("hold", N_("Alarm"),
            N_("Hold the button for {seconds} seconds. Help is called: they see who you are and where."), RED),
    Gesture("cancel", N_("Cancel a false alarm"),
            N_("Press {presses} times quickly (within {seconds} seconds) while an alarm is open. "
               "Everyone who was told is told it was cancelled."), BLUE),
    Gesture("checkin", N_("Check-in"),
            N_("Before a risky task press {presses} times quickly (within {seconds} seconds): a "
               "{minutes}-minute timer starts. Press {presses} times again when you are safe, "
               "or the alarm goes out."), GREEN),
)

SIGNALS: Final[tuple[Signal, ...]] = (
    Signal("alarm_taken", (0.15, 0.15, 2), N_("Alarm received"),
           N_("The alarm server has your alarm. Help is being called.")),
    Signal("arc_delivered", (0.8, 0.1, 1), N_("Alarm centre has it"),
           N_("The alarm centre has received your alarm.")),
    Signal("no_connection", (0.1, 0.1, 3), N_("No connection"),
           N_("Your alarm is being sent by text message (SMS). Go towards a window or outside "
              "if you can."), RED),
    Signal("checkin_started", (0.15, 0.1, 1), N_("Check-in started"),
           N_("The check-in timer runs."), GREEN),
    Signal("checkin_expiring", (0.5, 0.3, 3), N_("Check-in runs out"),
           N_("Press twice now, or the alarm goes out."), RED),
    Signal("checkin_done", (0.4, 0.1, 1), N_("Checked in"),
           N_("The check-in timer is stopped."), GREEN),
    Signal("alarm_cancelled", (0.15, 0.2, 1), N_("Alarm cancelled"),
           N_("Your cancel was sent."), BLUE),
)

#: The card's last lines: what raises an alarm without a press, and what is tracked.
FOOTER: Final[tuple[str, ...]] = (
    N_("If you cannot press: a missed check-in, or a device that stops answering during your "
       "shift, raises the alarm too."),
    N_("Your position is sent only during your shift and with an alarm."),
)

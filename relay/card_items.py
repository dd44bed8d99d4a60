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

An item of an optional device feature names it in ``feature`` (``"mandown"``: issue 10,
``[mandown] enabled``); the card shows it only when :class:`CardTimings` says the worker's
device has that feature on — a card must never promise a man-down alarm the device does not
raise.
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
    #: Man-down (issue 10, device.toml ``[mandown]``): ``mandown`` = ``enabled`` (off by
    #: default, as on the device); ``prealarm_s`` the pre-alarm before ``man_down`` is sent
    #: (profile default 30 s); ``pause_presses`` within ``pause_window_s`` pause it (again:
    #: resume) for at most ``pause_max_s``.
    mandown: bool = False
    prealarm_s: float = 30.0
    pause_presses: int = 4
    pause_window_s: float = 3.0
    pause_max_s: float = 900.0

    @property
    def features(self) -> frozenset[str]:
        """The optional features the device has on (``Gesture.feature`` / ``Signal.feature``)."""
        return frozenset({"mandown"} if self.mandown else ())


@dataclass(frozen=True)
class Gesture:
    """A button gesture: ``kind`` ``hold`` / ``cancel`` / ``checkin`` / ``pause`` (its timings
    come from :class:`CardTimings`), a ``title`` and a ``text`` (message ids with ``{seconds}``,
    ``{presses}``, ``{minutes}`` placeholders), the picture's colour (RGB), and the optional
    device ``feature`` it belongs to (``""`` = always on the card)."""

    kind: str
    title: str
    text: str
    colour: tuple[int, int, int]
    feature: str = ""


@dataclass(frozen=True)
class Signal:
    """A vibration pattern of the device: ``pattern`` its name in ``device.feedback.PATTERNS``,
    ``vibration`` ``(on_s, off_s, count)`` as played, ``title`` / ``text`` message ids (the
    text may use ``{seconds}``: the man-down pre-alarm, ``{presses}``, ``{minutes}``: the
    pause gesture and its longest pause), ``feature`` as for :class:`Gesture`."""

    pattern: str
    vibration: tuple[float, float, int]
    title: str
    text: str
    colour: tuple[int, int, int] = (200, 90, 0)
    feature: str = ""


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
    # Man-down (issue 10, device/mandown_watch.py): pause_presses short presses pause it.
    Gesture("pause", N_("Pause man-down"),
            N_("Press {presses} times quickly (within {seconds} seconds) before you lie or kneel down "
               "on purpose. Press {presses} times again when you are done; after {minutes} minutes "
               "man-down is on again by itself."), BLUE, feature="mandown"),
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
    # Readiness at shift start and the unprotected warning (issue 12, device/readiness.py).
    Signal("ready", (1.5, 0.1, 1), N_("Ready"),
           N_("Shift start: the device is ready. Your alarm gets through."), GREEN),
    Signal("not_ready", (0.4, 0.4, 6), N_("NOT ready"),
           N_("Do not start working alone. Check signal and charge, and tell your manager."), RED),
    Signal("unprotected", (1.0, 0.6, 3), N_("Unprotected: no network"),
           N_("Your alarm may not reach anyone. Move towards a window or the entrance, and tell "
              "your manager if it stays."), RED),
    # Man-down (issue 10, device/mandown_watch.py): the pre-alarm repeats every 2 s.
    Signal("mandown_prealarm", (0.4, 0.25, 3), N_("Man-down: are you all right?"),
           N_("You have been lying down or still for a while. Press the button or stand up "
              "within {seconds} seconds to cancel, or the alarm goes out."), RED, feature="mandown"),
    Signal("mandown_cancelled", (0.6, 0.3, 2), N_("Man-down cancelled"),
           N_("No alarm was sent."), BLUE, feature="mandown"),
    Signal("mandown_paused", (0.1, 0.15, 4), N_("Man-down paused"),
           N_("Lying down raises no alarm now. The button still works."), feature="mandown"),
    Signal("mandown_resumed", (0.25, 0.2, 2), N_("Man-down on again"),
           N_("The device watches for a fall or stillness again."), GREEN, feature="mandown"),
)

#: The card's last lines: what raises an alarm without a press, and what is tracked.
FOOTER: Final[tuple[str, ...]] = (
    N_("If you cannot press: a missed check-in, or a device that stops answering during your "
       "shift, raises the alarm too."),
    N_("Your position is sent only during your shift and with an alarm."),
)

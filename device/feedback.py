"""Feedback to the worker through LED, vibration motor and (only when not silent) buzzer
(SPEC §2): distinct patterns the worker can feel in a pocket without looking.

=====================  ==============================  =====================================
pattern                vibration                       LED
=====================  ==============================  =====================================
``alarm_taken``        2 short (0.15 s)                2 short blinks — relay has the alarm
``arc_delivered``      1 long (0.8 s)                  on 3 s — the ARC acknowledged
``no_connection``      3 short, fast                   fast blink 5 s — trying SMS
``checkin_started``    1 short                         1 blink
``checkin_expiring``   3 long (0.5 s)                  3 blinks
``checkin_done``       1 medium (0.4 s)                1 long blink
``alarm_cancelled``    1 short, 1 long                 off
``ready``              1 very long (1.5 s)             on 3 s — shift-start self-test passed
``not_ready``          6 × 0.4 s, even rhythm          fast blink 8 s — NOT ready (issue 12)
``unprotected``        3 very long (1.0 s), slow       3 long blinks — no MQTT and no SMS
``mandown_prealarm``   3 × 0.4 s, repeated every 2 s   fast blink — man-down pre-alarm: press
                       for the whole pre-alarm         the button or stand up to cancel
``mandown_cancelled``  2 long (0.6 s)                  1 long blink — pre-alarm cancelled
``mandown_paused``     4 short                         4 blinks — man-down paused
``mandown_resumed``    2 medium (0.25 s)               2 blinks — man-down on again
=====================  ==============================  =====================================

``ready``, ``not_ready`` and ``unprotected`` also sound the buzzer when ``silent = false``
(issue 12: "audible unless silent is required by the site").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

#: pattern → (vibration (on_s, off_s, n), led (on_s, off_s, n))
PATTERNS: Final[dict[str, tuple[tuple[float, float, int], tuple[float, float, int]]]] = {
    "alarm_taken": ((0.15, 0.15, 2), (0.15, 0.15, 2)),
    "arc_delivered": ((0.8, 0.1, 1), (3.0, 0.1, 1)),
    "no_connection": ((0.1, 0.1, 3), (0.05, 0.05, 50)),
    "checkin_started": ((0.15, 0.1, 1), (0.15, 0.1, 1)),
    "checkin_expiring": ((0.5, 0.3, 3), (0.3, 0.3, 3)),
    "checkin_done": ((0.4, 0.1, 1), (0.4, 0.1, 1)),
    "alarm_cancelled": ((0.15, 0.2, 1), (0.0, 0.0, 0)),
    # issue 12: readiness at shift start and the unprotected warning
    "ready": ((1.5, 0.1, 1), (3.0, 0.1, 1)),
    "not_ready": ((0.4, 0.4, 6), (0.1, 0.1, 40)),
    "unprotected": ((1.0, 0.6, 3), (1.0, 0.6, 3)),
    # Man-down (issue 10): unlike anything above, so a worker lying down feels it is not a
    # confirmation but a question: "are you all right?"
    "mandown_prealarm": ((0.4, 0.25, 3), (0.1, 0.1, 10)),
    "mandown_cancelled": ((0.6, 0.3, 2), (1.0, 0.1, 1)),
    "mandown_paused": ((0.1, 0.15, 4), (0.1, 0.15, 4)),
    "mandown_resumed": ((0.25, 0.2, 2), (0.15, 0.15, 2)),
}
#: Patterns the buzzer sounds too (never when ``silent``).
AUDIBLE: Final = frozenset({"alarm_taken", "no_connection", "ready", "not_ready", "unprotected", "mandown_prealarm"})


class Feedback:
    """Plays :data:`PATTERNS` on gpiozero outputs.

    Args:
        led_pin, vibration_pin: BCM pins; buzzer_pin: BCM pin or 0 for none.
        silent: when True (the default for discreet alarms) the buzzer never sounds.
        pin_factory: gpiozero pin factory (MockFactory in tests).
        observer: optional ``(pattern) -> None`` called for every pattern played.
    """

    def __init__(
        self,
        led_pin: int,
        vibration_pin: int,
        buzzer_pin: int = 0,
        *,
        silent: bool = True,
        pin_factory=None,
        observer: Callable[[str], None] | None = None,
    ) -> None:
        from gpiozero import LED, DigitalOutputDevice

        self.led = LED(led_pin, pin_factory=pin_factory)
        self.vibration = DigitalOutputDevice(vibration_pin, pin_factory=pin_factory)
        # Silent (the default): the buzzer pin is not even claimed, so nothing can sound.
        self.buzzer = DigitalOutputDevice(buzzer_pin, pin_factory=pin_factory) if buzzer_pin and not silent else None
        self.observer = observer
        self.played: list[str] = []
        # gpiozero's blink() is not safe from two threads at once (issue 12 found "cannot join
        # thread before it is started" when the paho thread and the readiness thread played
        # together): one pattern starts at a time.
        self._lock = threading.Lock()

    def play(self, pattern: str) -> None:
        """Play a pattern in the background.

        Raises:
            KeyError: unknown pattern name.
        """
        vib, led = PATTERNS[pattern]
        with self._lock:
            self.played.append(pattern)
            self.vibration.blink(on_time=vib[0], off_time=vib[1], n=vib[2], background=True)
            if led[2]:
                self.led.blink(on_time=led[0], off_time=led[1], n=led[2], background=True)
            if self.buzzer is not None and pattern in AUDIBLE:
                self.buzzer.blink(on_time=vib[0], off_time=vib[1], n=vib[2], background=True)
        log.info("feedback: %s", pattern)
        if self.observer:
            self.observer(pattern)

    def close(self) -> None:
        """Switch everything off and release the pins."""
        for dev in (self.led, self.vibration, self.buzzer):
            if dev is not None:
                dev.close()

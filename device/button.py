"""The one panic button and its gestures (SPEC §2 "Button gestures").

=====================================  ===================================================
gesture                                meaning
=====================================  ===================================================
hold ≥ ``hold_s`` (2.0 s)              alarm (sent as silent panic when ``silent``)
``cancel_presses`` (3) short presses   cancel, only while an alarm is open
within ``cancel_window_s`` (2 s)
``checkin_presses`` (2) short presses  check-in start, or check-in done if one runs
within ``checkin_window_s`` (1 s)
=====================================  ===================================================

The detector works on gpiozero ``Button`` callbacks, so the same code runs on a real pin
and on gpiozero's MockFactory (tests drive the pin low/high like a finger). Contact bounce
is absorbed by gpiozero's ``bounce_time``; a press shorter than ``min_press_s`` is an
accidental touch and ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Gesture = Literal["alarm", "cancel", "checkin"]


@dataclass(frozen=True, slots=True)
class GestureTiming:
    """Gesture timings in seconds (config ``[timing]``)."""

    hold_s: float = 2.0
    cancel_presses: int = 3
    cancel_window_s: float = 2.0
    checkin_presses: int = 2
    checkin_window_s: float = 1.0
    bounce_s: float = 0.05
    min_press_s: float = 0.03


class GestureButton:
    """Turns presses of one gpiozero ``Button`` into gestures.

    Args:
        pin: BCM pin number (button to GND, internal pull-up).
        timing: gesture timings.
        on_gesture: ``(gesture) -> None``; called from gpiozero's callback thread or a timer
            thread, must return quickly.
        on_press: optional ``() -> None`` for every press edge (the demo's ``button_down``).
        alarm_open: ``() -> bool``, whether an alarm is open (cancel is only valid then).
        pin_factory: gpiozero pin factory (``MockFactory`` in tests); None = gpiozero default.
    """

    def __init__(
        self,
        pin: int,
        timing: GestureTiming,
        on_gesture: Callable[[Gesture], None],
        *,
        on_press: Callable[[], None] | None = None,
        alarm_open: Callable[[], bool] = lambda: False,
        pin_factory=None,
    ) -> None:
        from gpiozero import Button  # hardware library imported only here (STYLE: mqtt-io)

        self.timing = timing
        self.on_gesture, self.on_press, self.alarm_open = on_gesture, on_press, alarm_open
        self._lock = threading.Lock()
        self._pressed_at: float | None = None
        self._held = False
        self._presses: list[float] = []
        self._timer: threading.Timer | None = None
        self.button = Button(
            pin, pull_up=True, bounce_time=timing.bounce_s or None, hold_time=timing.hold_s, pin_factory=pin_factory
        )
        self.button.when_pressed = self._pressed
        self.button.when_released = self._released
        self.button.when_held = self._held_long

    def close(self) -> None:
        """Release the pin and cancel a pending multi-press decision."""
        with self._lock:
            if self._timer:
                self._timer.cancel()
        self.button.close()

    def _pressed(self) -> None:
        with self._lock:
            self._pressed_at = time.monotonic()
            self._held = False
        if self.on_press:
            self.on_press()

    def _held_long(self) -> None:
        with self._lock:
            self._held = True
            self._presses.clear()
            if self._timer:
                self._timer.cancel()
        log.info("button held %.1f s: alarm", self.timing.hold_s)
        self.on_gesture("alarm")

    def _released(self) -> None:
        now = time.monotonic()
        with self._lock:
            started, self._pressed_at = self._pressed_at, None
            if self._held or started is None or now - started < self.timing.min_press_s:
                return
            self._presses.append(now)
            if self._timer:
                self._timer.cancel()
            # Decide once no further press can come: after the longest window from the first press.
            window = max(self.timing.cancel_window_s, self.timing.checkin_window_s)
            wait = max(0.0, self._presses[0] + window - now)
            self._timer = threading.Timer(wait, self._decide)
            self._timer.daemon = True
            self._timer.start()

    def _decide(self) -> None:
        with self._lock:
            presses, self._presses = self._presses, []
        if not presses:
            return
        span = presses[-1] - presses[0]
        n = len(presses)
        t = self.timing
        if n == t.cancel_presses and span <= t.cancel_window_s and self.alarm_open():
            self.on_gesture("cancel")
        elif n == t.checkin_presses and span <= t.checkin_window_s:
            self.on_gesture("checkin")
        else:
            log.info("%d short press(es) in %.2f s: no gesture", n, span)

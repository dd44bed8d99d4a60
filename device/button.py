"""The one panic button and its gestures (SPEC §2 "Button gestures").

=====================================  ===================================================
gesture                                meaning
=====================================  ===================================================
hold ≥ ``hold_s`` (2.0 s)              alarm (sent as silent panic when ``silent``)
``cancel_presses`` (3) short presses   cancel, only while an alarm is open
within ``cancel_window_s`` (2 s)
``checkin_presses`` (2) short presses  check-in start, or check-in done if one runs
within ``checkin_window_s`` (1 s)
``pause_presses`` (4, with man-down)   pause man-down (again: resume; issue 10,
within ``pause_window_s`` (3 s)         :mod:`device.mandown_watch`)
=====================================  ===================================================

Debouncing is done here, in software, the same on every pin backend (gpiozero's
``bounce_time`` differs per backend and MockFactory does not implement it): a level counts only
once it has been stable for ``bounce_s``, and a press is dated from its *first* edge. A touch
shorter than ``min_press_s`` is accidental and ignored; a press longer than ``max_press_s`` but
released before ``hold_s`` is no short press and ends a sequence; a hold is the alarm and never
also counts as a press. Presses are counted from the first one: the decision comes when the
longest window has passed (and the button is up), so 4 presses are no cancel.

One thread runs the state machine; gpiozero's callbacks only hand it edges, so they return at
once (on a real pin they run in gpiozero's callback thread, on MockFactory in the thread that
drives the pin).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

__all__ = ["Gesture", "GestureButton", "GestureTiming"]

Gesture = Literal["alarm", "cancel", "checkin", "mandown_pause"]


@dataclass(frozen=True, slots=True)
class GestureTiming:
    """Gesture timings in seconds (config ``[timing]``)."""

    hold_s: float = 2.0
    cancel_presses: int = 3
    cancel_window_s: float = 2.0
    checkin_presses: int = 2
    checkin_window_s: float = 1.0
    bounce_s: float = 0.05
    min_press_s: float = 0.06
    max_press_s: float = 0.8
    #: Short presses that pause / resume man-down (``[mandown] pause_presses``); 0 = none.
    pause_presses: int = 0
    pause_window_s: float = 3.0


class GestureButton:
    """Turns the edges of one gpiozero ``Button`` into gestures.

    Args:
        pin: BCM pin number (button to GND, internal pull-up).
        timing: gesture timings.
        on_gesture: ``(gesture) -> None``, called from the button's own thread.
        on_press: optional ``() -> None`` for every (debounced) press.
        alarm_open: ``() -> bool``, whether an alarm is open (cancel is only valid then).
        pin_factory: gpiozero pin factory (``MockFactory`` in tests); None = gpiozero default.
        on_ignored: optional ``(reason) -> None`` for a touch that made no gesture
            (``"too_short"``, ``"too_long"``, ``"no_gesture:<n>"``); for tests and the log.
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
        on_ignored: Callable[[str], None] | None = None,
    ) -> None:
        from gpiozero import Button  # hardware library imported only here (STYLE: mqtt-io)

        self.timing = timing
        self.on_gesture, self.on_press, self.alarm_open = on_gesture, on_press, alarm_open
        self.on_ignored = on_ignored or (lambda reason: None)
        self._edges: queue.Queue[tuple[float, bool] | None] = queue.Queue()
        self.button = Button(pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
        self.button.when_pressed = lambda: self._edges.put((time.monotonic(), True))
        self.button.when_released = lambda: self._edges.put((time.monotonic(), False))
        self._thread = threading.Thread(target=self._run, name="device-button", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the state machine and release the pin."""
        self._edges.put(None)
        self._thread.join(2)
        self.button.close()

    # -- state machine (button thread only) ---------------------------------------------

    def _run(self) -> None:
        t = self.timing
        raw = False            # last raw level seen (True = pressed)
        raw_since = 0.0        # first edge of the current unsettled change
        settle_at: float | None = None
        pressed = False        # debounced level
        press_at = 0.0
        held = False
        presses: list[float] = []
        decide_at: float | None = None
        window = max(t.cancel_window_s, t.checkin_window_s, t.pause_window_s if t.pause_presses else 0.0)
        while True:
            deadlines = []
            if settle_at is not None:
                deadlines.append(settle_at)
            if pressed and raw and not held:
                deadlines.append(press_at + t.hold_s)
            if decide_at is not None and not pressed and settle_at is None:
                deadlines.append(decide_at)  # a press in progress defers the decision
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            try:
                item = self._edges.get(timeout=timeout)
            except queue.Empty:
                item = ()
            if item is None:
                return
            now = time.monotonic()
            if item:
                at, level = item
                if settle_at is None:
                    raw_since = at  # a change starts with its first edge
                raw = level
                settle_at = at + t.bounce_s
                if t.bounce_s > 0:
                    continue
            if settle_at is not None and now >= settle_at:
                settle_at = None
                if raw != pressed:
                    pressed = raw
                    if pressed:
                        press_at, held = raw_since, False
                        if self.on_press:
                            self._call(self.on_press)
                    else:
                        duration = raw_since - press_at
                        if held:
                            held = False
                        elif duration < t.min_press_s:
                            log.info("touch of %.3f s ignored (accidental)", duration)
                            self.on_ignored("too_short")
                        elif duration > t.max_press_s:
                            log.info("press of %.2f s is no short press: sequence ended", duration)
                            presses, decide_at = [], None
                            self.on_ignored("too_long")
                        else:
                            presses.append(press_at)
                            if decide_at is None:
                                decide_at = presses[0] + window
            if pressed and raw and not held and now >= press_at + t.hold_s:
                held = True
                presses, decide_at = [], None
                log.info("button held %.1f s: alarm", t.hold_s)
                self._call(self.on_gesture, "alarm")
            if decide_at is not None and now >= decide_at and not pressed and settle_at is None:
                decide_at = None
                self._decide(presses)
                presses = []

    def _decide(self, presses: list[float]) -> None:
        if not presses:
            return
        span = presses[-1] - presses[0]
        n = len(presses)
        t = self.timing
        if n == t.cancel_presses and span <= t.cancel_window_s and self.alarm_open():
            self._call(self.on_gesture, "cancel")
        elif n == t.checkin_presses and span <= t.checkin_window_s:
            self._call(self.on_gesture, "checkin")
        elif t.pause_presses and n == t.pause_presses and span <= t.pause_window_s:
            self._call(self.on_gesture, "mandown_pause")
        else:
            log.info("%d short press(es) in %.2f s: no gesture", n, span)
            self.on_ignored(f"no_gesture:{n}")

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - the button must keep working
            log.exception("button callback failed")

"""``[voice]`` in device.toml: listen-in calls after an alarm and call-back (issue 11).

Kept apart from :mod:`device.config` (which only calls :func:`read_voice`) so that module stays
small. Every problem is reported with file:line like the rest of the config.

DTMF key map (the ARC operator's keypad during a listen-in call; each key configurable):

=========  ===========  ================================================================
key        config key   effect
=========  ===========  ================================================================
``1``      talk_key     two-way talk: the speaker/earpiece is switched on (mic stays on)
``0``      listen_key   back to listen-in: speaker muted again, microphone on
``#``      end_key      end the call; the device does not call again for this alarm
=========  ===========  ================================================================

A far-end hang-up (normal call clearing) also ends the listen-in for the alarm; a dropped call
is dialled again (:mod:`device.voice`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ANSWER_POLICIES", "VoiceConfig", "read_voice"]

#: ``[voice] answer``: incoming calls outside an alarm and its call-back window.
ANSWER_POLICIES = ("reject", "known", "any")
_KINDS = ("panic", "silent_panic", "man_down", "missed_checkin")
_KEY_PATTERN = r"[0-9*#A-D]"
_E164 = r"\+[1-9][0-9]{6,14}"


@dataclass(frozen=True)
class VoiceConfig:
    """``[voice]`` (issue 11).

    ``enabled``: calls at all. ``kinds``: alarm kinds followed by a ``listen_in`` event (CID
    606) and a call. ``numbers``: the ARC's voice lines, E.164, called in order (``lonewatch
    provision`` writes them from the registry). ``callback_numbers``: more numbers whose calls
    are answered during an alarm (the contacts; provision writes them); the ``numbers`` and
    the ``[sms]`` fallback numbers count too. ``muted_kinds``: alarm kinds whose call opens
    with the speaker muted (listen-in: the ARC hears, an attacker does not hear the ARC);
    other kinds open two-way. Call-backs always open muted. ``max_attempts``: rounds through
    ``numbers`` while the alarm is open; ``ring_timeout_s``: an unanswered call is given up
    after this; ``retry_pause_s``: pause between rounds; ``callback_window_s``: after the
    alarm is cancelled, call-backs are still answered this long; ``answer``: incoming calls
    otherwise — ``reject`` (default), ``known`` (answer the numbers above, two-way), ``any``;
    ``talk_key``/``listen_key``/``end_key``: the DTMF key map; ``speaker_level`` 0–5;
    ``audio_path`` ``handset`` (earpiece/mic lines) or ``speaker``; ``max_call_s``: longest
    call; ``test_number``: ``lonewatch doctor`` makes a short test call to it ("" = none).
    """

    enabled: bool = True
    kinds: tuple[str, ...] = ("panic", "silent_panic", "man_down")
    numbers: tuple[str, ...] = ()
    callback_numbers: tuple[str, ...] = ()
    muted_kinds: tuple[str, ...] = ("silent_panic",)
    max_attempts: int = 3
    ring_timeout_s: float = 45.0
    retry_pause_s: float = 10.0
    callback_window_s: float = 900.0
    answer: str = "reject"
    talk_key: str = "1"
    listen_key: str = "0"
    end_key: str = "#"
    speaker_level: int = 4
    audio_path: str = "handset"
    max_call_s: float = 3600.0
    test_number: str = ""


def read_voice(t: Any, *, test_mode: bool = False) -> VoiceConfig:
    """Read ``[voice]`` from a :class:`protocol.configfile.TableReader`; problems are
    recorded on it (raised together by the checker). ``test_mode`` (``[timing] test_mode``)
    allows short timings for demos and tests."""
    d = VoiceConfig
    e164 = "an E.164 number like \"+4512345678\""
    quick = 0.1 if test_mode else 1.0
    cfg = VoiceConfig(
        enabled=t.boolean("enabled", d.enabled),
        kinds=tuple(_kinds(t, "kinds", d.kinds)),
        numbers=tuple(t.string_list("numbers", [], pattern=_E164, unique=True, describe=e164)),
        callback_numbers=tuple(t.string_list("callback_numbers", [], pattern=_E164, unique=True,
                                             describe=e164)),
        muted_kinds=tuple(_kinds(t, "muted_kinds", d.muted_kinds)),
        max_attempts=t.integer("max_attempts", d.max_attempts, min=1, max=20),
        ring_timeout_s=t.number("ring_timeout_s", d.ring_timeout_s, min=quick * 5, max=180),
        retry_pause_s=t.number("retry_pause_s", d.retry_pause_s, min=quick, max=600),
        callback_window_s=t.number("callback_window_s", d.callback_window_s, min=0, max=86400),
        answer=t.string("answer", d.answer, choices=ANSWER_POLICIES),
        talk_key=t.string("talk_key", d.talk_key, pattern=_KEY_PATTERN, describe="one DTMF key 0-9 * # A-D"),
        listen_key=t.string("listen_key", d.listen_key, pattern=_KEY_PATTERN, describe="one DTMF key 0-9 * # A-D"),
        end_key=t.string("end_key", d.end_key, pattern=_KEY_PATTERN, describe="one DTMF key 0-9 * # A-D"),
        speaker_level=t.integer("speaker_level", d.speaker_level, min=0, max=5),
        audio_path=t.string("audio_path", d.audio_path, choices=("handset", "speaker")),
        max_call_s=t.number("max_call_s", d.max_call_s, min=10, max=4 * 3600),
        test_number=t.string("test_number", "", pattern=f"({_E164})?", describe=e164 + " or empty"),
    )
    keys = {"talk_key": cfg.talk_key, "listen_key": cfg.listen_key, "end_key": cfg.end_key}
    seen: dict[str, str] = {}
    for name, key in keys.items():
        if key in seen:
            t.problem(name, f"key {key!r} is already voice.{seen[key]}: the key map would be ambiguous")
        seen.setdefault(key, name)
    return cfg


def _kinds(t: Any, key: str, default: tuple[str, ...]) -> list[str]:
    values = t.string_list(key, list(default), unique=True)
    for i, kind in enumerate(values):
        if kind not in _KINDS:
            t.checker.problem(t.keypath + (key, i), f"must be one of {', '.join(_KINDS)}, got \"{kind}\"")
    return [k for k in values if k in _KINDS]

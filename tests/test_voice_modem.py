"""Voice calls in the modem driver (issue 11) against the simulator's call model, over the real
pty / serial.Serial path, for both flavours: dial, answer, reject, hang up, caller id, call
state from URCs and AT+CLCC (unsolicited, mid-command, in any order, garbled, lost), DTMF
from the far end, microphone/speaker mute, level and audio path; typed errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from modem.at import Modem, ModemError
from modem.calls import call_signal, ceer_reason, parse_clcc, parse_clip
from modem.errors import ModemReplyError
from modem.simulator import ModemSimulator
from modem.voice import CallController, CallStateError, VoiceUnavailable

ARC = "+4570101010"


@pytest.fixture(params=["sim7600", "quectel"])
def rig(request: pytest.FixtureRequest) -> Iterator[tuple[ModemSimulator, Modem, CallController, list]]:
    flavour = request.param
    with ModemSimulator(flavour) as sim, Modem(sim.port, flavour=flavour, default_timeout_s=3.0) as modem:
        modem.init()
        steps: list[tuple[str, dict[str, Any]]] = []
        cc = CallController(modem, poll_s=0.3, observer=lambda s, f: steps.append((s, dict(f))))
        assert cc.setup() == []
        yield sim, modem, cc, steps


def later(fn: Any, *args: Any, after_state: tuple[ModemSimulator, str] | None = None, delay: float = 0.2) -> threading.Thread:
    def run() -> None:
        if after_state is not None:
            assert after_state[0].calls.wait_for(after_state[1], 5.0)
        time.sleep(delay)
        fn(*args)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_listen_in_then_talk_key_then_far_end_hangs_up(rig) -> None:
    sim, _modem, cc, steps = rig
    sim.calls.plan(ARC, "answer", 0.3)
    keys: list[str] = []

    def far_end() -> None:
        assert sim.calls.wait_for("active", 5.0)
        answered_seen(steps)
        deadline = time.monotonic() + 5
        while not sim.calls.audio["speaker_muted"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim.calls.audio["speaker_muted"] is True and sim.calls.audio["mic_muted"] is False
        sim.calls.far_end_dtmf("1")
        deadline = time.monotonic() + 5
        while sim.calls.audio["speaker_muted"] and time.monotonic() < deadline:
            time.sleep(0.02)
        sim.calls.far_end_hangup()

    th = later(far_end, delay=0)

    def on_answer() -> None:
        cc.set_microphone(False)
        cc.set_speaker(True)

    def on_key(key: str) -> bool:
        keys.append(key)
        cc.set_speaker(False, 4)
        return False

    end = cc.dial(ARC, ring_timeout_s=10, on_answer=on_answer, on_key=on_key)
    th.join(5)
    assert end.reason == "remote_hangup" and end.answered
    assert keys == ["1"]
    assert sim.calls.audio["speaker_muted"] is False and sim.calls.audio["level"] == 4
    assert f"ATD{ARC};" in sim.commands()
    order = [s for s, _ in steps if s in ("voice_dial", "voice_answered", "voice_key", "voice_ended")]
    assert order == ["voice_dial", "voice_answered", "voice_key", "voice_ended"]


def test_busy_far_end(rig) -> None:
    sim, _m, cc, _ = rig
    sim.calls.plan(ARC, "busy", 0.2)
    end = cc.dial(ARC, ring_timeout_s=10)
    assert (end.reason, end.answered) == ("busy", False)
    assert sim.calls.state == "idle"


def test_no_answer_is_hung_up_after_the_ring_timeout(rig) -> None:
    sim, _m, cc, _ = rig
    sim.calls.plan(ARC, "no_answer", 0)  # rings until we give up
    end = cc.dial(ARC, ring_timeout_s=1.0)
    assert end.reason == "no_answer" and not end.answered
    assert "AT+CHUP" in sim.commands() and sim.calls.state == "idle"


def test_network_no_answer_urc(rig) -> None:
    sim, _m, cc, _ = rig
    sim.calls.plan(ARC, "no_answer", 0.3)
    assert cc.dial(ARC, ring_timeout_s=10).reason == "no_answer"


def answered_seen(steps: list, timeout_s: float = 5.0) -> None:
    """Wait until the controller saw the answer (Quectel: only by AT+CLCC polling)."""
    deadline = time.monotonic() + timeout_s
    while not any(s == "voice_answered" for s, _ in list(steps)):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_dropped_call_is_told_apart_from_a_hang_up(rig) -> None:
    sim, _m, cc, steps = rig
    later(lambda: (answered_seen(steps), sim.calls.drop()), delay=0)
    end = cc.dial(ARC, ring_timeout_s=10)
    assert (end.reason, end.answered) == ("dropped", True)
    assert "AT+CEER" in sim.commands()


def test_hang_up_by_key_and_by_stop(rig) -> None:
    sim, _m, cc, _ = rig
    later(sim.calls.far_end_dtmf, "#", after_state=(sim, "active"))
    end = cc.dial(ARC, ring_timeout_s=10, on_key=lambda k: k == "#")
    assert end.reason == "local_hangup" and end.detail == "key #"
    stop = threading.Event()
    later(stop.set, after_state=(sim, "active"))
    assert cc.dial(ARC, ring_timeout_s=10, stop=stop).reason == "local_hangup"
    assert sim.calls.state == "idle"


def test_silent_end_only_clcc_knows(rig) -> None:
    sim, _m, cc, _ = rig
    sim_steps = rig[3]
    later(lambda: (answered_seen(sim_steps), sim.calls.far_end_hangup(silent=True)), delay=0)
    end = cc.dial(ARC, ring_timeout_s=10)
    assert end.reason == "remote_hangup" and end.detail == "AT+CLCC lists no call"


def test_garbled_and_out_of_order_call_urcs(rig) -> None:
    sim, _m, cc, steps = rig
    # Mid-command: a garbled +CLCC and a stale BUSY inside the ATD reply, before its OK.
    sim.urc_during_next("ATD", ["+CLCC: 1,0,zz", "MISSED_CALL"], where="before")
    sim.calls.plan(ARC, "answer", 0.3)
    sim.calls.end_order = "no_carrier_first"

    def far_end() -> None:
        assert sim.calls.wait_for("active", 5)
        time.sleep(0.2)
        sim.inject_urc("+RXDTMF: ?")  # garbled key
        sim.inject_urc("BUSY")  # stale: the call is up
        sim.inject_urc("VOICE CALL: WHATEVER")
        sim.calls.far_end_dtmf("0")
        time.sleep(0.2)
        sim.calls.far_end_hangup()

    later(far_end, delay=0)
    keys: list[str] = []
    end = cc.dial(ARC, ring_timeout_s=10, on_key=lambda k: keys.append(k) or False)
    assert end.reason == "remote_hangup" and end.answered
    assert keys == ["0"]
    assert cc.garbled >= 2
    # The tail (VOICE CALL: END after NO CARRIER) does not leak into the next call.
    sim.calls.plan(ARC, "busy", 0.2)
    assert cc.dial(ARC, ring_timeout_s=10).reason == "busy"


def test_stray_no_carrier_does_not_end_a_call_the_modem_still_has(rig) -> None:
    sim, _m, cc, _ = rig

    def far_end() -> None:
        assert sim.calls.wait_for("active", 5)
        time.sleep(0.2)
        sim.inject_urc("NO CARRIER")  # stray: the call is still up
        sim.inject_urc("VOICE CALL: END: 000001")
        time.sleep(0.5)
        sim.calls.far_end_dtmf("#")

    later(far_end, delay=0)
    end = cc.dial(ARC, ring_timeout_s=10, on_key=lambda k: k == "#")
    assert end.reason == "local_hangup" and end.detail == "key #"


def test_dtmf_before_begin_counts_as_answered(rig) -> None:
    sim, modem, cc, _ = rig
    sim.calls.plan(ARC, "no_answer", 0)  # the simulator never says BEGIN …
    key = "+RXDTMF: 5" if modem.flavour == "sim7600" else "+QTONEDET: 53"
    later(sim.inject_urc, key, after_state=(sim, "alerting"))
    keys: list[str] = []

    def on_key(k: str) -> bool:
        keys.append(k)
        return True

    end = cc.dial(ARC, ring_timeout_s=10, on_key=on_key)
    assert keys == ["5"] and end.answered and end.reason == "local_hangup"


def test_atd_final_busy_and_refused_dial(rig) -> None:
    sim, _m, cc, _ = rig
    sim.error_next("ATD", "BUSY")
    assert cc.dial(ARC, ring_timeout_s=10).reason == "busy"
    sim.calls.voice_service = False
    with pytest.raises(VoiceUnavailable, match="no network service"):
        cc.dial(ARC, ring_timeout_s=10)
    with pytest.raises(ValueError):
        cc.dial("+45 70;ATH", ring_timeout_s=1)


def test_incoming_call_with_caller_id_answered_then_far_end_hangs_up(rig) -> None:
    sim, _m, cc, _ = rig
    later(sim.calls.incoming, ARC, delay=0.1)
    inc = cc.wait_incoming(5)
    assert inc is not None and inc.number == ARC
    cc.answer()
    assert sim.calls.state == "active"
    later(sim.calls.far_end_hangup, delay=0.3)
    end = cc.converse(ARC)
    assert end.reason == "remote_hangup" and end.answered


def test_incoming_withheld_rejected_and_answer_too_late(rig) -> None:
    sim, _m, cc, _ = rig
    later(lambda: sim.calls.incoming("+4511223344", withheld=True), delay=0.1)
    inc = cc.wait_incoming(5)
    assert inc is not None and inc.number == ""
    cc.reject()
    assert sim.calls.state == "idle" and "AT+CHUP" in sim.commands()
    with pytest.raises(CallStateError):
        cc.answer()


def test_call_urc_during_another_command_is_not_its_answer(rig) -> None:
    sim, modem, cc, _ = rig
    sim.urc_during_next("AT+CSQ", ["VOICE CALL: BEGIN", "+CLCC: 1,0,0,0,0,\"+4570101010\",145"])
    assert modem.signal().rssi_dbm is not None
    kinds = []
    while not cc.signals.empty():
        kinds.append(cc.signals.get().kind)
    assert kinds == ["begin", "clcc"]


def test_audio_path_and_levels(rig) -> None:
    sim, _m, cc, _ = rig
    cc.set_audio_path("speaker")
    assert sim.calls.audio["path"] == "speaker"
    cc.set_speaker(True)
    assert sim.calls.audio["speaker_muted"] is True
    cc.set_speaker(False, 2)
    assert sim.calls.audio["speaker_muted"] is False and sim.calls.audio["level"] == 2
    cc.set_microphone(True)
    assert sim.calls.audio["mic_muted"] is True
    with pytest.raises(ValueError):
        cc.set_speaker(False, 9)
    with pytest.raises(ValueError):
        cc.set_audio_path("bluetooth")


# --------------------------------------------------------------------------- pure parsing


@pytest.mark.parametrize("line,kind,extra", [
    ("RING", "ring", {}),
    ('+CRING: VOICE', "ring", {}),
    ('+CLIP: "+4570101010",145,"",0,"",0', "clip", {"number": "+4570101010"}),
    ('+CLIP: "",128,"",0,"",1', "clip", {"number": ""}),
    ('+CLIP: "+4570101010",145,"",0,"",1', "clip", {"number": ""}),
    ("VOICE CALL: BEGIN", "begin", {}),
    ("VOICE CALL: END: 000352", "end", {"reason": "ended"}),
    ("NO CARRIER", "end", {"reason": "no_carrier"}),
    ("MISSED_CALL: 08:48AM +27839776374", "end", {"reason": "missed", "number": "+27839776374"}),
    ("BUSY", "busy", {}),
    ("NO ANSWER", "no_answer", {}),
    ("+RXDTMF: #", "dtmf", {"key": "#"}),
    ("+QTONEDET: 49", "dtmf", {"key": "1"}),
    ("+QTONEDET: 4900", "garbled", {}),
    ("+RXDTMF: ", "garbled", {}),
    ("+CLCC: 1,0", "garbled", {}),
    ('+CLIP: +4570101010', "garbled", {}),
    ("VOICE CALL: ???", "garbled", {}),
])
def test_call_signal_table(line: str, kind: str, extra: dict[str, str]) -> None:
    sig = call_signal(line)
    assert sig is not None and sig.kind == kind
    for key, value in extra.items():
        assert getattr(sig, key) == value


@pytest.mark.parametrize("line", ["+CSQ: 20,99", "OK", "+CMTI: \"SM\",1", ""])
def test_not_call_lines(line: str) -> None:
    assert call_signal(line) is None


def test_clcc_and_clip_parsing() -> None:
    info = parse_clcc('+CLCC: 2,1,4,0,0,"004570101010",129')
    assert (info.index, info.outgoing, info.state, info.voice, info.number, info.number_type) == (
        2, False, "incoming", True, "004570101010", 129)
    with pytest.raises(ModemReplyError):
        parse_clcc("+CLCC: 1,0,9,0,0")
    with pytest.raises(ModemReplyError):
        parse_clip('+CLIP: "+45;ATH",145')
    assert issubclass(VoiceUnavailable, ModemError)


@pytest.mark.parametrize("lines,reason", [
    (["+CEER: Normal call clearing"], "remote_hangup"),
    (['+CEER: "CC INFO","Normal call clearing"'], "remote_hangup"),
    (["+CEER: User busy"], "busy"),
    (["+CEER: 19"], "no_answer"),
    (["+CEER: Temporary failure"], "dropped"),
    (["+CEER: garbage"], "dropped"),
    ([], "dropped"),
])
def test_ceer_reasons(lines: list[str], reason: str) -> None:
    assert ceer_reason(lines) == reason

"""``lonewatch doctor`` voice checks (issue 11): can this SIM, on this network, carry the listen-in
call that follows an alarm?

* ``modem.voice`` — the network registered the SIM for voice: circuit-switched (``AT+CREG?``
  registered home/roaming: 2G/3G, or LTE with CS fallback) or IMS/VoLTE (``AT+CIREG?``, on
  Quectel also ``AT+QCFG="ims"``). Neither → a clear warning: many countries have switched
  2G/3G off, and a SIM without VoLTE then has no voice at all. No ``[voice] numbers``: still
  a pass (voice works; the detail says nobody is called). ``[voice] enabled = false`` → skip.
* ``modem.voice_call`` — only with ``[voice] test_number``: a short real call (answered → held
  :data:`TEST_CALL_HOLD_S` seconds → hung up). Answered: pass; busy / not answered: warn; the
  modem refuses to dial: fail.

Verified against the modem simulator and the AT manuals only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["TEST_CALL_HOLD_S", "check_voice"]

#: How long the doctor's test call stays up once answered, seconds.
TEST_CALL_HOLD_S = 3.0
_CS_REGISTERED = ("1", "5", "6", "7", "9", "10")  # 27.007 <stat> home/roaming (incl. SMS-only/CSFB)


def _ims(modem: Any) -> bool | None:
    from modem.calls import parse_ims_registration
    from modem.errors import ModemError, ModemGone, ModemTimeout

    cmds = ["AT+CIREG?"] + (['AT+QCFG="ims"'] if modem.flavour == "quectel" else [])
    for cmd in cmds:
        try:
            lines = modem.command(cmd)
        except (ModemTimeout, ModemGone):
            raise
        except ModemError:
            continue
        for line in lines:
            value = parse_ims_registration(line)
            if value is not None:
                return value
    return None


def _cs(modem: Any) -> bool:
    from modem.errors import ModemError, ModemGone, ModemTimeout

    try:
        lines = modem.command("AT+CREG?")
    except (ModemTimeout, ModemGone):
        raise
    except ModemError:
        return False
    for line in lines:
        if line.upper().startswith("+CREG:"):
            fields = [f.strip() for f in line.partition(":")[2].split(",")]
            return len(fields) >= 2 and fields[1] in _CS_REGISTERED
    return False


def check_voice(cfg: Any, modem: Any, add: Callable[[Any], Any], *, ring_timeout_s: float = 30.0) -> None:
    """Run the voice checks on an initialised ``modem``, reporting each ``Check`` via ``add``."""
    from device.doctor import Check
    from modem.errors import ModemError
    from modem.voice import CallController, VoiceUnavailable

    v = cfg.voice
    if not v.enabled:
        add(Check("modem.voice", "skip", "voice off in device.toml ([voice] enabled = false)"))
        return
    try:
        cs, ims = _cs(modem), _ims(modem)
    except ModemError as exc:
        add(Check("modem.voice", "fail", f"voice registration query failed: {exc}", "power-cycle the modem"))
        return
    data = {"cs": cs, "ims": ims, "numbers": len(v.numbers)}
    how = " and ".join(n for n, ok in (("circuit-switched (CREG)", cs), ("IMS/VoLTE", ims)) if ok)
    if not how:
        add(Check("modem.voice", "warn",
                  "NO VOICE SERVICE: the SIM is registered neither circuit-switched (2G/3G or CS fallback) "
                  "nor on IMS/VoLTE — listen-in calls after an alarm will fail (alarms themselves still go out)",
                  "ask the operator to enable VoLTE for this SIM (2G/3G may be switched off here), or use a SIM "
                  "and modem firmware with VoLTE", data=data))
    elif not v.numbers:
        add(Check("modem.voice", "pass", f"voice service: {how}; no [voice] numbers, so no listen-in calls "
                  "(add the ARC's voice_numbers to the registry and re-run provision to have them)", data=data))
    else:
        add(Check("modem.voice", "pass", f"voice service: {how}; {len(v.numbers)} number(s) to call", data=data))
    if not v.test_number:
        return
    cc = CallController(modem, poll_s=0.5)
    stop = threading.Event()
    try:
        cc.setup()
        end = cc.dial(v.test_number, ring_timeout_s=ring_timeout_s,
                      on_answer=lambda: threading.Timer(TEST_CALL_HOLD_S, stop.set).start(), stop=stop)
    except VoiceUnavailable as exc:
        add(Check("modem.voice_call", "fail", f"the modem refused to call {v.test_number}: {exc.reason}",
                  "no voice on this SIM/network: see modem.voice"))
        return
    except ModemError as exc:
        add(Check("modem.voice_call", "fail", f"test call failed: {exc}", "power-cycle the modem"))
        return
    finally:
        cc.detach()
    if end.answered:
        add(Check("modem.voice_call", "pass", f"test call to {v.test_number} answered and hung up",
                  data={"duration_s": end.duration_s}))
    else:
        add(Check("modem.voice_call", "warn", f"test call to {v.test_number}: {end.reason.replace('_', ' ')}",
                  "is someone there to answer the test number? try again", data={"reason": end.reason}))

"""Hostile input to the AT reply parsers: arbitrary lines into ``classify_line``,
``parse_error_line`` and the GNSS parsers (SIM7600 ``+CGPSINFO``, Quectel ``+QGPSLOC``).

Contract: classification always answers one of its four words; error lines become typed
errors or None; a GNSS reply gives a fix with finite, in-range numbers, None (no fix) or a
:class:`modem.at.ModemReplyError` — never another exception, and never a fix that
would later make the device's own messages invalid (a position is sent with every alarm).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modem.at import (
    CmeError,
    CmsError,
    ModemReplyError,
    classify_line,
    parse_cgpsinfo,
    parse_error_line,
    parse_qgpsloc,
)
from protocol.messages import Event, Position, decode, encode

FAST = settings(max_examples=200, deadline=None)

lines = st.one_of(
    st.text(max_size=80),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    st.from_regex(r"\+C[A-Z]{2,6}: ?[0-9,\"A-Za-z .-]{0,30}", fullmatch=True),
    st.sampled_from(["OK", "ERROR", "RING", "+CME ERROR: 10", "+CMS ERROR: 500", "+CREG: 1", "+CREG: 0,1",
                     "+CREG: 2,1,\"00C3\",\"0A1B\",7", "> ", "NO CARRIER", "\x00", "+CPIN: READY", ""]),
)
commands = st.one_of(
    st.none(),
    st.sampled_from(["AT", "ATE0", "AT+CREG?", "AT+CGREG?", "AT+CEREG?", "AT+CREG=?", "AT+CSQ", "AT+CPIN?",
                     'AT+CPIN="1234"', "AT+CGPSINFO", "AT+QGPSLOC=2", "ATD112;", "AT+CMGS=23", "ATI"]),
    st.text(max_size=20).map(lambda t: "AT" + t),
)


@FAST
@given(lines, commands)
def test_classify_line_always_answers_one_of_four_words(line: str, pending: str | None) -> None:
    assert classify_line(line, pending) in ("final", "info", "urc", "stray")


@FAST
@given(lines, st.text(max_size=20))
@example("+CME ERROR:", "")
@example("+cms error: 99999999999999999999999", "AT+CMGS")
@example("+CME ERROR: SIM not inserted", "AT+CPIN?")
def test_parse_error_line_gives_a_typed_error_or_none(line: str, command: str) -> None:
    err = parse_error_line(line, command)
    if err is None:
        assert not line.upper().startswith(("+CME ERROR:", "+CMS ERROR:"))
        return
    assert isinstance(err, (CmeError, CmsError))
    assert err.meaning and str(err)


# Numeric-looking fields, including out-of-range and malformed ones; the non-finite spellings
# (nan, inf) are covered separately below (known bug).
_num = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda f: f"{f:.4f}"),
    st.integers(-99999, 999999).map(str),
    st.sampled_from(["", "-", ".", "1e5", "0x10", " 5", "5540.1234", "01234.5678", "9000.0", "6000.0"]),
)
_cgps = st.tuples(_num, st.sampled_from(["N", "S", "E", "W", "", "X"]), _num, st.sampled_from(["E", "W", "N", ""]),
                  st.sampled_from(["301126", "", "999999", "3011"]), st.sampled_from(["130528.0", "", "256070.0", "1305"]),
                  _num, _num, _num).map(lambda f: "+CGPSINFO: " + ",".join(f))
_qgps = st.tuples(st.sampled_from(["130528.000", "", "999999.0"]), _num, _num, _num, _num,
                  st.sampled_from(["2", "3", ""]), _num, _num, _num, st.sampled_from(["301126", "310226", "x"]),
                  st.sampled_from(["07", ""])).map(lambda f: "+QGPSLOC: " + ",".join(f))


def _fix_is_sendable(fix) -> None:
    assert math.isfinite(fix.lat) and -90 <= fix.lat <= 90
    assert math.isfinite(fix.lon) and -180 <= fix.lon <= 180
    assert fix.accuracy_m is None or (math.isfinite(fix.accuracy_m) and fix.accuracy_m >= 0)
    pos = Position(fix.lat, fix.lon, fix.accuracy_m, fix.fixed_at.timestamp())
    ev = Event("lw-0001", 1, "panic", 1_796_000_000.0, position=pos)
    assert decode(encode(ev)) == ev  # an alarm carrying this fix can be sent


@FAST
@given(st.one_of(_cgps, lines))
@example("+CGPSINFO: ,,,,,,,,")
@example("+CGPSINFO:")
@example("+CGPSINFO: 5540.1234,N,01234.5678,E,301126,130528.0,12.3,0.0,")
def test_cgpsinfo_parser_gives_a_sendable_fix_none_or_a_reply_error(line: str) -> None:
    try:
        fix = parse_cgpsinfo("AT+CGPSINFO", line)
    except ModemReplyError as exc:
        assert exc.reason
        return
    if fix is not None:
        _fix_is_sendable(fix)


@FAST
@given(st.one_of(_qgps, lines))
@example("+QGPSLOC: 130528.000,55.66857,12.57613,1.2,15.0,3,0.0,0.0,0.0,301126,07")
@example("+QGPSLOC: 130528.000,55.66857,12.57613,200001.0,15.0,3,0.0,0.0,0.0,301126,07")  # accuracy > 1e6 m
def test_qgpsloc_parser_gives_a_sendable_fix_or_a_reply_error(line: str) -> None:
    try:
        fix = parse_qgpsloc("AT+QGPSLOC=2", line)
    except ModemReplyError as exc:
        assert exc.reason
        return
    _fix_is_sendable(fix)


# Regression: these escaped as ValueError/OverflowError or an infinite accuracy (issue 6).
@pytest.mark.parametrize(("parser", "line"), [
    (parse_cgpsinfo, "+CGPSINFO: nan,N,01234.5,E,301126,120000.0,,,"),
    (parse_cgpsinfo, "+CGPSINFO: inf,N,01234.5,E,301126,120000.0,,,"),
    (parse_cgpsinfo, "+CGPSINFO: 5540.1,N,01234.5,E,301126,000009.9e999,,,"),
    (parse_qgpsloc, "+QGPSLOC: 120000.0,55.1,12.1,inf,10,3,0,0,0,301126,5"),
])
def test_non_finite_numbers_in_gnss_replies_are_reply_errors(parser, line: str) -> None:
    try:
        fix = parser("AT+GNSS", line)
    except ModemReplyError:
        return
    _fix_is_sendable(fix)

"""SMS fallback (SPEC §2): an alarm without the relay's ``received`` ack goes out by SMS through
the modem — the real serial path to the pty simulator — in each recipient's language, GSM 7-bit
or UCS2 chosen automatically, part by part, durable across restarts, retried on failure, never
losing the alarm. The broker is unreachable in most tests (a closed port): nothing acks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory

from device.config import DeviceConfig
from device.daemon import DeviceDaemon
from modem import sms
from modem.at import Modem
from modem.simulator import ModemSimulator
from device.queue import EventQueue, SmsRecord
from device.smstext import KIND_NAMES, map_link, render_alarm, render_cancel
from protocol.messages import Position
from labstack.servers import free_port

RECIPIENTS = [("+4512345678", "da"), ("+48601234567", "pl"), ("+40721234567", "ro"),
              ("+380501234567", "uk"), ("+971501234567", "ar"), ("+447700900123", "en")]
LAT, LON = 55.668571, 12.576131


class Steps:
    """Observer that records steps and lets tests wait for them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()
        #: Called in the reporting thread before it goes on (to inject a fault at that step).
        self.on_step = lambda step, fields: None

    def __call__(self, step: str, fields: dict[str, Any]) -> None:
        with self._cond:
            self.items.append((step, fields))
            self._cond.notify_all()
        self.on_step(step, fields)

    def named(self, step: str) -> list[dict[str, Any]]:
        with self._cond:
            return [f for s, f in self.items if s == step]

    def wait(self, step: str, n: int = 1, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        with self._cond:
            self._cond.wait_for(lambda: len([1 for s, _ in self.items if s == step]) >= n, timeout_s)
        found = self.named(step)
        assert len(found) >= n, f"expected {n} {step!r} step(s), got {found}"
        return found


def config(state_dir: Path, sim_port: str, **timing: Any) -> DeviceConfig:
    t = {"test_mode": True, "sms_fallback_after_s": 1, "sms_retry_s": 1, "resend_after_s": 1,
         "hold_s": 0.8, **timing}
    return DeviceConfig.from_dict({
        "device": {"id": "lw-0001", "state_dir": str(state_dir), "timezone": "Europe/Copenhagen"},
        "mqtt": {"host": "127.0.0.1", "port": free_port(), "tls": False, "password": "x"},
        "timing": t,
        "modem": {"port": sim_port, "flavour": "sim7600", "sms_timeout_s": 5},
        "sms": {"fallback_numbers": [RECIPIENTS[0][0]], "language": "da",
                "fallback": [{"number": n, "language": lang} for n, lang in RECIPIENTS[1:]]},
        "worker": {"name": "Anna Hansen", "site": "Vestergade 12"},
    })


@pytest.fixture
def sim() -> Iterator[ModemSimulator]:
    with ModemSimulator("sim7600") as s:
        s.gnss_fix = (LAT, LON, 1.2)
        yield s


class Device:
    """A daemon on MockFactory pins and the simulator; restartable on the same state dir."""

    def __init__(self, cfg: DeviceConfig, sim: ModemSimulator) -> None:
        self.cfg, self.sim = cfg, sim
        self.steps = Steps()
        self.daemon: DeviceDaemon | None = None
        self.factory = MockFactory()

    def start(self) -> DeviceDaemon:
        self.factory.reset()
        self.steps = Steps()
        modem = Modem(self.sim.port, flavour="sim7600", default_timeout_s=2.0, sms_timeout_s=3.0)
        self.daemon = DeviceDaemon(self.cfg, pin_factory=self.factory, modem=modem, observer=self.steps,
                                   control=False)
        self.daemon.start()
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


@pytest.fixture
def device(tmp_path: Path, sim: ModemSimulator) -> Iterator[Device]:
    d = Device(config(tmp_path / "state", sim.port), sim)
    yield d
    d.stop()


def received(sim: ModemSimulator) -> dict[str, list[sms.Submit]]:
    """Decoded SMS parts the simulator got, per number."""
    out: dict[str, list[sms.Submit]] = {}
    for pdu in sim.sent_pdus:
        s = sms.decode_submit(pdu)
        out.setdefault(s.number, []).append(s)
    return out


def joined(parts: list[sms.Submit]) -> str:
    return "".join(p.text for p in sorted(parts, key=lambda p: p.concat[2] if p.concat else 0))


# -- texts (pure) ----------------------------------------------------------------------------


@pytest.mark.parametrize("language,encoding", [("da", "gsm7"), ("en", "gsm7"), ("pl", "ucs2"),
                                               ("ro", "ucs2"), ("uk", "ucs2"), ("ar", "ucs2")])
def test_alarm_text_has_kind_worker_site_times_and_map_link(language: str, encoding: str) -> None:
    occurred = datetime(2026, 11, 30, 22, 5, 28, tzinfo=timezone.utc).timestamp()
    pos = Position(LAT, LON, 6.0, occurred - 120)
    text = render_alarm("silent_panic", language, worker="Anna Hansen", site="Vestergade 12",
                        device_id="lw-0001", event_id="lw-0001:42", occurred_at=occurred,
                        position=pos, now=occurred, tz=ZoneInfo("Europe/Copenhagen"))
    assert KIND_NAMES["silent_panic"][language] in text
    assert "Anna Hansen" in text and "Vestergade 12" in text
    assert "2026-11-30 22:05:28 UTC" in text and "23:05:28" in text  # UTC and Copenhagen time
    assert "https://maps.google.com/?q=55.66857,12.57613" in text
    assert "lw-0001:42" in text
    assert sms.choose_encoding(text) == encoding


def test_danish_letters_stay_gsm7() -> None:
    text = render_alarm("man_down", "da", worker="Søren Østergård", site="Ærøskøbing", device_id="d",
                        event_id="d:1", occurred_at=0, position=None, now=0)
    assert sms.choose_encoding(text) == "gsm7"
    assert "Position ukendt" in text


def test_cancel_text() -> None:
    text = render_cancel("panic", "en", worker="Anna", site="", device_id="d", event_id="d:7", occurred_at=0)
    assert text.startswith("CANCELLED: Panic alarm was a false alarm")
    assert "d:7" in text


def test_map_link_five_decimals() -> None:
    assert map_link(Position(-33.8688197, 151.2092955, None, 0)) == "https://maps.google.com/?q=-33.86882,151.20930"


# -- through the daemon and the serial path ---------------------------------------------------


def test_unacked_alarm_goes_out_by_sms_to_everyone_in_their_language(device: Device, sim: ModemSimulator) -> None:
    daemon = device.start()
    assert device.steps.wait("modem_ready")
    event = daemon.raise_event("silent_panic")
    sent = device.steps.wait("sms_sent", len(RECIPIENTS))
    by_number = {s["recipient"]: s for s in sent}
    got = received(sim)
    for number, language in RECIPIENTS:
        step = by_number[number]
        assert step["id"] == event.id and step["language"] == language
        assert step["encoding"] == ("gsm7" if language in ("da", "en") else "ucs2")
        parts = got[number]
        assert len(parts) == step["parts"] == len(step["refs"])
        text = joined(parts)
        assert KIND_NAMES["silent_panic"][language] in text and "Anna Hansen" in text
        assert "maps.google.com/?q=55.66857,12.57613" in text
        if len(parts) > 1:  # concatenated: one reference, numbered parts
            assert len({p.concat[0] for p in parts}) == 1
            assert sorted(p.concat[2] for p in parts) == list(range(1, len(parts) + 1))
    # MQTT delivery still pending: the alarm stays queued, the worker felt "no connection"
    assert daemon.queue.get(event.id) is not None
    assert "no_connection" in daemon.feedback.played
    assert len(device.steps.named("sms_fallback")) == 1


def test_sms_failure_is_retried_and_the_alarm_kept(device: Device, sim: ModemSimulator) -> None:
    daemon = device.start()
    device.steps.wait("modem_ready")
    sim.submit_error_next("+CMS ERROR: 331")  # no network service, for the first part sent
    event = daemon.raise_event("panic")
    failed = device.steps.wait("sms_failed")[0]
    assert failed["permanent"] is False and "331" in failed["error"]
    sent = device.steps.wait("sms_sent", len(RECIPIENTS), timeout_s=30)
    assert {s["recipient"] for s in sent} == {n for n, _ in RECIPIENTS}
    assert daemon.queue.get(event.id) is not None
    record = next(r for r in daemon.queue.sms_for(event.id) if r.number == failed["recipient"])
    assert record.status == "sent" and record.attempts == 1


def test_permanent_refusal_is_given_up_for_that_number_only(device: Device, sim: ModemSimulator) -> None:
    daemon = device.start()
    device.steps.wait("modem_ready")
    sim.submit_error_next("+CMS ERROR: 1")  # unassigned number
    event = daemon.raise_event("panic")
    failed = device.steps.wait("sms_failed")[0]
    assert failed["permanent"] is True and failed["retry_in_s"] is None
    device.steps.wait("sms_sent", len(RECIPIENTS) - 1)
    statuses = {r.number: r.status for r in daemon.queue.sms_for(event.id)}
    assert statuses[failed["recipient"]] == "failed"
    assert sorted(statuses.values()).count("sent") == len(RECIPIENTS) - 1


def test_restart_neither_resends_nor_forgets(tmp_path: Path, sim: ModemSimulator) -> None:
    cfg = config(tmp_path / "state", sim.port)
    dev = Device(cfg, sim)
    daemon = dev.start()
    dev.steps.wait("modem_ready")

    def hang_after_first(step: str, fields: dict[str, Any]) -> None:
        if step == "sms_sent":
            sim.hung = True  # the modem stops answering after the first recipient's SMS

    dev.steps.on_step = hang_after_first
    event = daemon.raise_event("panic")
    dev.steps.wait("sms_sent", 1)
    dev.steps.wait("sms_failed", 1)
    dev.stop()
    q = EventQueue(cfg.queue_path)
    sent_before = {r.number: r.status for r in q.sms_for(event.id)}
    q.close()
    assert list(sent_before.values()).count("sent") == 1
    pdus_before = len(sim.sent_pdus)

    sim.hung = False
    dev2 = Device(cfg, sim)
    daemon2 = dev2.start()
    try:
        dev2.steps.wait("sms_sent", len(RECIPIENTS) - 1, timeout_s=30)
        time.sleep(1.5)  # a resend would show up by now (fallback checks twice a second)
        records = daemon2.queue.sms_for(event.id)
        assert all(r.status == "sent" for r in records)
        got = received(sim)
        for r in records:  # each recipient got each part exactly once
            assert len(got[r.number]) == r.parts
        assert len(sim.sent_pdus) > pdus_before
    finally:
        dev2.stop()


def test_half_sent_message_resumes_with_the_missing_part_only(tmp_path: Path, sim: ModemSimulator) -> None:
    q = EventQueue(tmp_path / "q.db")
    text = "Przycisk alarmowy – Zażółć gęślą jaźń. " * 4  # UCS2, 156 characters: 3 parts
    pdus = sms.encode_submit("+48601234567", text, reference=77)
    assert len(pdus) == 3
    now = time.time()
    q.plan_sms([SmsRecord("lw-0001:5", "panic", "+48601234567", "pl", text, 77, 3, (), "due", 0, now, None, now, None)])
    rec = q.sms_part_sent("lw-0001:5", "+48601234567", 11, now)
    assert rec.status == "due" and rec.part_refs == (11,)
    q.close()
    with Modem(sim.port, default_timeout_s=2.0) as modem:
        modem.init()
        q = EventQueue(tmp_path / "q.db")
        (rec,) = q.sms_due(time.time())
        for index in range(len(rec.part_refs), rec.parts):
            rec = q.sms_part_sent(rec.event_id, rec.number, modem.send_pdu(sms.encode_submit(rec.number, rec.text, reference=rec.reference)[index]), time.time())
    assert rec.status == "sent" and len(rec.part_refs) == 3
    sent = [sms.decode_submit(p) for p in sim.sent_pdus]
    assert [s.concat for s in sent] == [(77, 3, 2), (77, 3, 3)]


def test_relay_ack_before_the_deadline_means_no_sms(tmp_path: Path, sim: ModemSimulator) -> None:
    dev = Device(config(tmp_path / "state", sim.port, sms_fallback_after_s=3), sim)
    daemon = dev.start()
    try:
        dev.steps.wait("modem_ready")
        event = daemon.raise_event("panic")
        from protocol.messages import Ack

        daemon._on_ack(Ack(id=event.id, stage="received", ts=time.time()))  # as paho would deliver it
        time.sleep(4.5)
        assert dev.steps.named("sms_sent") == [] and sim.sent_pdus == []
        assert daemon.queue.sms_for(event.id) == []
    finally:
        dev.stop()


def test_ack_during_fallback_skips_unstarted_messages(tmp_path: Path) -> None:
    q = EventQueue(tmp_path / "q.db")
    now = time.time()
    rows = [SmsRecord("d-01:1", "panic", n, "en", "hello", 1, 2, (), "due", 0, now, None, now, None)
            for n in ("+4511111111", "+4522222222")]
    q.plan_sms(rows)
    q.sms_part_sent("d-01:1", "+4511111111", 5, now)  # first message half sent
    assert q.sms_skip_unstarted("d-01:1", now) == 1
    status = {r.number: r.status for r in q.sms_for("d-01:1")}
    assert status == {"+4511111111": "due", "+4522222222": "skipped"}  # the started one is finished


def test_cancel_after_an_sms_alarm_is_sent_to_the_same_recipients(device: Device, sim: ModemSimulator) -> None:
    daemon = device.start()
    device.steps.wait("modem_ready")
    alarm = daemon.raise_event("panic")
    device.steps.wait("sms_sent", len(RECIPIENTS))
    cancel = daemon.cancel_alarm()
    sent = device.steps.wait("sms_sent", 2 * len(RECIPIENTS))
    cancels = [s for s in sent if s["id"] == cancel.id]
    assert {s["recipient"] for s in cancels} == {n for n, _ in RECIPIENTS}
    da = joined(received(sim)[RECIPIENTS[0][0]][-cancels[0]["parts"]:])
    assert da.startswith("AFMELDT") and alarm.id in da


def test_no_modem_keeps_the_alarm_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = DeviceConfig.from_dict({
        "device": {"id": "lw-0001", "state_dir": str(tmp_path / "s")},
        "mqtt": {"host": "127.0.0.1", "port": free_port(), "tls": False},
        "timing": {"test_mode": True, "sms_fallback_after_s": 1},
        "modem": {"enabled": False}, "sms": {"fallback_numbers": ["+4512345678"]},
    })
    steps = Steps()
    daemon = DeviceDaemon(cfg, pin_factory=MockFactory(), observer=steps, control=False)
    daemon.start()
    try:
        event = daemon.raise_event("man_down")
        steps.wait("sms_fallback")
        time.sleep(0.5)
        assert daemon.queue.get(event.id) is not None
        assert any("no modem" in r.message for r in caplog.records)
    finally:
        daemon.stop()

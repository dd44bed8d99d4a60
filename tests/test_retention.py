"""Data kept no longer than needed (issue 13) on a real Redis: positions only on shift or
with an alarm, the [retention] purge (by hand and in the relay), and export / erase of
everything held about a worker."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import main
from labstack.servers import RedisServer
from protocol.configfile import ConfigError
from protocol.messages import Alive, Event, Position, encode
from protocol.topics import topic
from relay.alarms import AlarmStore
from relay.config import RelayConfig
from relay.pipeline import Pipeline
from relay.privacy import ErasureRefused, UnknownWorker, erase_worker, export_worker
from relay.registry import Contact, RegistryDoc, RegistryStore
from relay.retention import SESSIONS, Purger, RetentionSection
from relay.store import DEADLETTER, EVENTS, Store, device_key, escalation_key, event_key

pytestmark = pytest.mark.integration
DAY = 86400.0
POS = Position(55.66857, 12.57613, 6.0, 0.0)
REGISTRY = {
    "workers": [{"name": "Anna Hansen", "number": 17, "language": "da",
                 "contacts": [{"name": "Mette", "role": "employer", "phone": "+4520110001"}]},
                {"name": "Ole Olsen", "number": 18, "language": "da"}],
    "sites": [{"name": "Vaskeriet", "address": "Vestergade 12", "policy": "contacts_only",
               "contacts": [{"name": "Per", "role": "guard", "phone": "+4520110002"}]}],
    "devices": [{"id": "lw-0001", "worker": "Anna Hansen", "site": "Vaskeriet"},
                {"id": "lw-0002", "worker": "Ole Olsen", "site": "Vaskeriet"}],
}


@pytest.fixture
def store(redis_module: RedisServer) -> Store:
    s = Store.from_url(redis_module.url)
    s.r.flushall()
    RegistryStore(s).save(RegistryDoc.from_dict(REGISTRY), replace=True)
    return s


class Dev:
    """Sends events and alives of one device through the real pipeline."""

    def __init__(self, store: Store, device: str) -> None:
        self.device, self.seq = device, 0
        self.pipeline = Pipeline(store, lambda _d, _a: None)

    def event(self, kind: str, position: Position | None = POS, data: dict | None = None) -> Event:
        self.seq += 1
        ev = Event(self.device, self.seq, kind, time.time(), position, data or {})
        assert self.pipeline.handle(topic(self.device, "event"), encode(ev)).outcome == "stored"
        return ev

    def alive(self, position: Position | None = POS) -> None:
        a = Alive(self.device, time.time(), 81, -70, "home", position, 1.0, "t", 0)
        assert self.pipeline.handle(topic(self.device, "alive"), encode(a)).outcome == "alive"


def open_alarm(store: Store, ev: Event, worker: str = "Anna Hansen") -> None:
    AlarmStore(store).open(ev.id, {"device": ev.device, "kind": ev.kind, "worker": worker, "worker_number": 17,
                                   "site": "Vaskeriet", "lat": 55.66857, "lon": 12.57613, "escalate_after_s": 60,
                                   "max_rounds": 1}, (Contact("Per", "guard", "+4520110002"),),
                           escalate=True, detail=f"{ev.kind} from {worker} at Vaskeriet")


# ----------------------------------------------------------------------------- positions


def test_alive_position_is_stored_only_on_shift(store: Store) -> None:
    dev = Dev(store, "lw-0001")
    dev.alive()
    state = store.state("lw-0001")
    assert state["battery_pct"] == "81" and "lat" not in state  # off shift: battery yes, position no
    dev.event("shift_start")
    dev.alive()
    assert store.state("lw-0001")["lat"] == "55.66857"
    dev.event("shift_end")
    state = store.state("lw-0001")
    assert "lat" not in state and "lon" not in state and state["battery_pct"] == "81"
    dev.alive()
    assert "lat" not in store.state("lw-0001")


def test_events_off_shift_lose_their_position_alarms_keep_it(store: Store) -> None:
    dev = Dev(store, "lw-0001")
    checkin = dev.event("checkin_start", data={"duration_s": 600})
    panic = dev.event("panic")
    dev.event("shift_start")
    test = dev.event("test")
    assert store.event(checkin.id)[0].position is None
    assert store.event(panic.id)[0].position == POS  # help needs to know where
    assert store.event(test.id)[0].position == POS  # on shift
    logged = {f["id"]: json.loads(f["json"]) for f in store.event_log()}
    assert logged[checkin.id]["position"] is None and logged[panic.id]["position"]["lat"] == POS.lat


# ----------------------------------------------------------------------------- purge


def test_purge_keeps_each_kind_for_its_days(store: Store) -> None:
    dev, other = Dev(store, "lw-0001"), Dev(store, "lw-0002")
    shift = dev.event("shift_start")
    panic = dev.event("panic")
    open_alarm(store, panic)
    AlarmStore(store).close(panic.id, "cancelled", "cancelled by the worker")
    still_open = other.event("panic")
    open_alarm(store, still_open, "Ole Olsen")
    store.dead_letter("lonewatch/lw-0001/event", b"{bad", "invalid: test")
    store.r.zadd(SESSIONS, {"old": time.time() - 1 * DAY, "fresh": time.time() + 20 * DAY})  # last used
    store.r.hset(device_key("lw-0001", "state"), "note", "x")
    sec = RetentionSection(events_days=30, alarms_days=365, alives_days=7, deadletter_days=14, sessions_days=30)
    purger = Purger(store, sec)

    now = time.time()
    assert purger.purge_once(now)["event_log"] == 0  # nothing is old yet
    assert len(store.event_log()) == 3 and store.dead_letters()

    counts = purger.purge_once(now + 31 * DAY)
    kinds = [f["kind"] for f in store.event_log()]
    assert kinds == ["panic", "panic"]  # shift_start went, the alarms stay
    assert store.event(shift.id) is None and store.event(panic.id) is not None
    assert store.r.ttl(event_key(panic.id)) > 300 * DAY  # kept with the alarm, beyond the 30-day dedupe TTL
    assert store.r.ttl(escalation_key("alarm", panic.id)) > 300 * DAY
    assert store.dead_letters() == [] and counts["dead_letters"] == 1
    assert store.state("lw-0001") == {} and counts["device_states"] >= 1  # not heard for 7 days
    assert [m.decode() for m in store.r.zrange(SESSIONS, 0, -1)] == ["fresh"] and counts["sessions"] == 1

    counts = purger.purge_once(now + 400 * DAY)
    assert store.r.exists(escalation_key("alarm", panic.id)) == 0 and counts["alarms"] == 1
    assert store.r.exists(escalation_key("log", panic.id)) == 0
    assert AlarmStore(store).get(still_open.id) is not None  # an open alarm is never purged
    assert [f["id"] for f in store.event_log()] == []


def test_purge_forgets_the_position_of_a_device_off_shift(store: Store) -> None:
    dev = Dev(store, "lw-0001")
    dev.event("panic")  # an alarm off shift: its position reached the device state
    assert store.state("lw-0001")["lat"] == "55.66857"
    counts = Purger(store, RetentionSection()).purge_once()
    assert counts["positions"] == 1 and "lat" not in store.state("lw-0001")
    assert store.state("lw-0001")["last_event"]  # the rest of the state stays


def test_the_relay_purges_once_per_period_across_relays(store: Store, wait_until) -> None:
    Dev(store, "lw-0001").event("shift_start")
    later = lambda: time.time() + 40 * DAY  # noqa: E731
    a, b = (Purger(store, RetentionSection(purge_interval_s=3600), clock=later) for _ in range(2))
    a.start(), b.start()
    try:
        assert wait_until(lambda: a.last or b.last)
        assert wait_until(lambda: store.event_log() == [])
    finally:
        a.stop(), b.stop()
    assert bool(a.last) != bool(b.last)  # one relay purged this period, not both


def test_retention_config_with_file_line_errors(tmp_path: Path) -> None:
    base = {"relay": {"instance": "r1"}, "mqtt": {"host": "localhost", "username": "relay", "password": "x"}}
    cfg = RelayConfig.from_dict({**base, "retention": {"events_days": 10, "alarms_days": 3650}})
    assert (cfg.retention.events_days, cfg.retention.alarms_days, cfg.retention.alives_days) == (10, 3650, 7)
    assert RelayConfig.from_dict(base).retention == RetentionSection()
    path = tmp_path / "relay.toml"
    path.write_text('[relay]\ninstance = "r1"\n[mqtt]\nhost = "h"\nusername = "u"\npassword = "p"\n'
                    '[retention]\nevents_days = 30\nalarms_days = 10\ndeadletter_days = 0\nweeks = 2\n')
    from relay.config import load_relay_config

    with pytest.raises(ConfigError) as err:
        load_relay_config(path)
    text = str(err.value)
    assert f"{path}:9" in text and "alarms_days" in text and "at least events_days" in text
    assert f"{path}:10" in text and "deadletter_days" in text
    assert "weeks" in text


# ----------------------------------------------------------------------------- export / erase


def anna_data(store: Store) -> dict[str, Any]:
    dev, other = Dev(store, "lw-0001"), Dev(store, "lw-0002")
    dev.event("shift_start")
    dev.alive()
    panic = dev.event("silent_panic")
    open_alarm(store, panic)
    other.event("shift_start")
    store.dead_letter("lonewatch/lw-0001/event", b'{"lat": 55.6}', "invalid: test")
    store.dead_letter("lonewatch/lw-0002/event", b"{}", "invalid: test")
    return {"panic": panic}


def test_export_holds_everything_about_the_worker_and_nothing_else(store: Store) -> None:
    ids = anna_data(store)
    data = export_worker(store, "Anna Hansen")
    json.dumps(data)  # JSON-able
    assert data["worker"]["name"] == "Anna Hansen" and data["worker"]["contacts"][0]["name"] == "Mette"
    [device] = data["devices"]
    assert device["id"] == "lw-0001" and device["state"]["lat"] == "55.66857"
    assert {e["event"]["kind"] for e in device["events"]} == {"shift_start", "silent_panic"}
    assert [e["kind"] for e in data["event_log"]] == ["shift_start", "silent_panic"]
    assert [a["id"] for a in data["alarms"]] == [ids["panic"].id]
    assert data["alarms"][0]["history"][0]["what"] == "opened"
    assert [d["topic"] for d in data["dead_letters"]] == ["lonewatch/lw-0001/event"]
    assert "lw-0002" not in json.dumps(data) and "Ole Olsen" not in json.dumps(data)
    with pytest.raises(UnknownWorker, match="workers: Anna Hansen, Ole Olsen"):
        export_worker(store, "Nobody")


def test_erase_keeps_the_alarm_record_anonymised_and_deletes_the_rest(store: Store) -> None:
    ids = anna_data(store)
    panic = ids["panic"]
    with pytest.raises(ErasureRefused, match="open alarm"):
        erase_worker(store, "Anna Hansen")
    assert RegistryStore(store).load().worker("Anna Hansen") is not None  # nothing changed
    AlarmStore(store).ack(panic.id, "Per", "sms")
    done = erase_worker(store, "Anna Hansen")
    assert done["devices_removed"] == ["lw-0001"] and done["alarms_anonymised"] == 1
    doc = RegistryStore(store).load()
    assert doc.worker("Anna Hansen") is None and doc.device("lw-0001") is None and doc.worker("Ole Olsen")
    alarm = AlarmStore(store).get(panic.id)
    assert alarm is not None and alarm.get("worker") == done["pseudonym"] and alarm.get("lat") == ""
    assert alarm.kind == "silent_panic" and alarm.state == "acked"  # what the law needs stays
    history = AlarmStore(store).history(panic.id)
    assert [h["what"] for h in history][0] == "opened" and history[-1]["what"] == "erased"
    assert "Anna Hansen" not in json.dumps(history) and any(done["pseudonym"] in h.get("detail", "") for h in history)
    kept = store.event(panic.id)
    assert kept is not None and kept[0].position is None  # alarm event record without the position
    assert [f["device"] for f in store.event_log()] == ["lw-0002"]
    assert [d["topic"] for d in store.dead_letters()] == ["lonewatch/lw-0002/event"]
    assert store.state("lw-0001") == {} and store.supervision_state("lw-0001") == {}
    assert store.device("lw-0001") is None  # its messages are dead-lettered from now on
    assert "Anna Hansen" not in everything_in(store)
    with pytest.raises(UnknownWorker):
        export_worker(store, "Anna Hansen")


def everything_in(store: Store) -> str:
    """Every key and value in Redis, decoded, as one text."""
    r, out = store.r, []
    read = {b"hash": r.hgetall, b"set": r.smembers, b"string": r.get, b"stream": r.xrange,
            b"list": lambda k: r.lrange(k, 0, -1), b"zset": lambda k: r.zrange(k, 0, -1)}
    for key in r.keys("*"):
        out.append(repr((key, read[r.type(key)](key))).encode().decode("unicode_escape"))
    text = "\n".join(out)
    assert "Ole Olsen" in text  # the probe sees names where they are
    return text


# ----------------------------------------------------------------------------- CLI


def test_cli_export_erase_and_purge(store: Store, redis_module: RedisServer, tmp_path: Path) -> None:
    AlarmStore(store).close(anna_data(store)["panic"].id, "cancelled", "cancelled by the worker")
    url = redis_module.url
    run = CliRunner().invoke
    out = tmp_path / "anna.json"
    res = run(main, ["worker", "export", "Anna Hansen", "-o", str(out), "--redis", url, "-c", str(tmp_path / "none.toml")])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and json.loads(out.read_text())["worker"]["number"] == 17
    res = run(main, ["worker", "export", "Nobody", "--redis", url])
    assert res.exit_code == 1 and "no worker 'Nobody'" in res.output
    res = run(main, ["worker", "erase", "Anna Hansen", "--yes", "--redis", url])
    assert res.exit_code == 0, res.output
    assert "devices removed from the registry: lw-0001" in res.stdout
    # The broker credentials live outside Redis: the installer is told to remove them.
    assert "broker credentials still work" in res.stderr and "lonewatch pki revoke lw-0001" in res.stderr
    res = run(main, ["retention", "purge", "--json", "--redis", url, "-c", str(tmp_path / "none.toml")])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.output)) >= {"event_log", "alarms", "dead_letters", "device_states", "sessions"}
    assert store.r.xlen(EVENTS) >= 1 and store.r.xlen(DEADLETTER) == 1


def test_the_relay_service_runs_a_purger_with_the_configured_days(redis_module: RedisServer) -> None:
    from relay.app import build_service

    cfg = RelayConfig.from_dict({"relay": {"instance": "r1"}, "redis": {"url": redis_module.url},
                                 "mqtt": {"host": "127.0.0.1", "port": 1, "username": "relay", "password": "x"},
                                 "retention": {"events_days": 3, "alarms_days": 90}})
    service = build_service(cfg)  # built, not started
    [purger] = [c for c in service.components if isinstance(c, Purger)]
    assert purger.section.events_days == 3 and purger.section.alarms_days == 90

"""Operability (issue 4): Prometheus metrics, the health endpoint, structured logs without
secrets — on a real relay, broker, Redis and pysiaalarm."""

from __future__ import annotations

import io
import json
import logging
import secrets
import urllib.error
import urllib.request

import pytest
import redis
from pysiaalarm import SIAAccount, SIAClient

from relay.config import RelayConfig
from labstack.demo.stack import LocalArc, decoded_sia_event
from labstack.servers import free_port
from relay.logs import JsonFormatter, SecretFilter, secrets_of, setup_logging
from relay.metrics import dead_letter_reason

from .relayrig import RelayProcess, ScriptedDevice, register, relay_dict, running_relay, write_toml

DEV = "lw-0001"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metric(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.integration
def test_metrics_and_health_follow_what_happens(mosquitto, redis_server, broker_users, wait_until) -> None:
    arc_port, http_port = free_port(), free_port()
    register(redis_server.url, (DEV, 17))
    cfg = relay_dict(mosquitto.port, broker_users["relay"], redis_server.url, arc_port,
                     receiver={"poll_interval_s": 0.2}, metrics={"listen": f"127.0.0.1:{http_port}"})  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    arc = LocalArc("1234AB", arc_port).__enter__()
    try:
        with running_relay(cfg) as relay:
            dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
            try:
                alarm = dev.event("panic")
                assert dev.wait_ack(alarm.id, "arc")
                dev.client.publish(f"lonewatch/{DEV}/event", b"{not json", qos=1).wait_for_publish(5)
                dev.alive()
                assert wait_until(lambda: relay.pipeline.counts["dead_letter"] == 1 and relay.pipeline.counts["alive"] == 1, 10)
                assert wait_until(lambda: relay.linktester.status()["arc"].ok is True, 5)

                code, body = _get(base + "/metrics")
                text = body.decode()
                assert code == 200
                assert _metric(text, 'lonewatch_alarms_total{kind="panic"}') == 1.0
                assert _metric(text, 'lonewatch_events_total{kind="panic",outcome="stored"}') == 1.0
                assert _metric(text, 'lonewatch_arc_latency_seconds_count{receiver="arc"}') == 1.0
                assert _metric(text, 'lonewatch_arc_results_total{outcome="acked"}') == 1.0
                assert _metric(text, 'lonewatch_dead_letters_total{reason="invalid"}') == 1.0
                assert _metric(text, "lonewatch_dead_letter_stream_length") == 1.0
                assert _metric(text, 'lonewatch_messages_total{outcome="alive"}') == 1.0
                assert _metric(text, 'lonewatch_arc_poll_up{receiver="arc"}') == 1.0
                assert _metric(text, "lonewatch_dispatch_pending") == 0.0
                assert _metric(text, "lonewatch_broker_connected") == 1.0
                assert _metric(text, "lonewatch_redis_up") == 1.0

                code, body = _get(base + "/healthz")
                rep = json.loads(body)
                assert code == 200 and rep["status"] == "ok", rep
                assert rep["broker"]["connected"] and rep["redis"]["ok"]
                assert rep["dispatch"]["pending"] == 0 and rep["supervision"]["running"]
                assert rep["arc"]["receivers"]["arc"]["poll"] == "ok"
                assert _get(base + "/nope")[0] == 404

                arc.__exit__(None, None, None)  # the ARC receiver goes away
                assert wait_until(lambda: relay.linktester.status()["arc"].ok is False, 5)
                code, body = _get(base + "/healthz")
                rep = json.loads(body)
                assert code == 200 and rep["status"] == "degraded", rep
                assert any("arc" in p for p in rep["problems"])
                assert _metric(_get(base + "/metrics")[1].decode(), 'lonewatch_arc_poll_up{receiver="arc"}') == 0.0

                redis_server.stop()  # Redis gone: the relay cannot do its job
                code, body = _get(base + "/healthz")
                rep = json.loads(body)
                assert code == 503 and rep["status"] == "failing" and rep["redis"]["ok"] is False
                assert _metric(_get(base + "/metrics")[1].decode(), "lonewatch_redis_up") == 0.0
            finally:
                dev.close()
    finally:
        arc.__exit__(None, None, None)


@pytest.mark.integration
def test_logs_never_show_the_secrets(mosquitto, redis_server, broker_users, tmp_path, wait_until) -> None:
    """The relay at debug level, JSON logs, with a broker password, a Redis password and an
    AES key; an encrypted alarm goes through and bad input is dead-lettered: no secret in
    any line, and every line is JSON."""
    redis_pw = redis_server.password  # the fixture's Redis is behind a user + password (issue 15)
    aes_key = secrets.token_hex(8).upper()  # 16 characters: AES-128, pysiaalarm-style
    url = redis_server.url
    register(url, (DEV, 17))
    arc_port = free_port()
    events: list[dict] = []
    receiver = SIAClient("127.0.0.1", arc_port, [SIAAccount(account_id="1234AB", key=aes_key)], lambda e: events.append(decoded_sia_event(e)))
    receiver.start()
    cfg = relay_dict(mosquitto.port, broker_users["relay"], url, arc_port, receiver={"key": aes_key})
    cfg["relay"]["log_format"] = "json"
    relay = RelayProcess(write_toml(tmp_path / "relay.toml", cfg), tmp_path / "relay.log", verbose=2).start()
    try:
        assert relay.wait_log("relay connected"), relay.output()
        dev = ScriptedDevice(DEV, mosquitto.port, broker_users[DEV])
        alarm = dev.event("silent_panic")
        assert dev.wait_ack(alarm.id, "arc", 15), relay.output()[-2000:]
        dev.client.publish(f"lonewatch/{DEV}/event", json.dumps({"v": 1, "password": broker_users["relay"]}).encode(), qos=1)
        assert wait_until(lambda: "dead letter" in relay.output(), 10)
        dev.close()
        assert [(e["code"], e["zone"]) for e in events] == [("122", 17)]
    finally:
        relay.stop()
        receiver.stop()
    out = relay.output()
    assert "ARC ACK" in out and "dead letter" in out  # the relay did log its work
    for secret in (broker_users["relay"], redis_pw, aes_key):
        assert secret not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines and all(json.loads(ln)["level"] for ln in lines)


def test_secret_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    buf = io.StringIO()
    handler = setup_logging(fmt="json", level=logging.DEBUG, secrets=["s3cret-pass", "ab"], stream=buf)
    try:
        log = logging.getLogger("lonewatch.test")
        log.info("connecting with %s", "s3cret-pass")
        try:
            raise RuntimeError("auth failed for s3cret-pass")
        except RuntimeError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    out = buf.getvalue()
    assert "s3cret-pass" not in out and out.count("<hidden>") >= 3  # message, source line, exception
    first, second = (json.loads(ln) for ln in out.splitlines() if ln.startswith("{"))
    assert first["msg"] == "connecting with <hidden>" and first["level"] == "info"
    assert "RuntimeError" in second["exc"]
    assert SecretFilter(["ab"]).secrets == []  # too short to scrub without mangling logs


def test_json_formatter_keeps_extra_fields() -> None:
    rec = logging.makeLogRecord({"msg": "event %s", "args": ("x",), "levelname": "WARNING", "name": "relay", "device": "lw-0001"})
    obj = json.loads(JsonFormatter().format(rec))
    assert (obj["msg"], obj["level"], obj["device"]) == ("event x", "warning", "lw-0001")


def test_secrets_of_config() -> None:
    cfg = RelayConfig.from_dict({
        "mqtt": {"password": "mq-pass"}, "redis": {"url": "redis://:rd-pass@h:1/0"},
        "arc": {"receivers": [{"host": "a", "port": 1, "key": "0123456789ABCDEF"}]},
    })  # fmt: skip
    assert set(secrets_of(cfg)) >= {"mq-pass", "rd-pass", "0123456789ABCDEF"}


@pytest.mark.parametrize(("reason", "label"), [("invalid: v: unsupported", "invalid"), ("unknown device 'x': not in the registry", "unknown_device"),
                                               ("internal error in the relay pipeline", "internal"), ("something", "other")])  # fmt: skip
def test_dead_letter_reason_classes(reason: str, label: str) -> None:
    assert dead_letter_reason(reason) == label


def test_health_report_when_neither_broker_nor_redis_answers() -> None:
    from relay.health import health_report

    class _Svc:
        connected = type("E", (), {"is_set": staticmethod(lambda: False)})()

        class store:  # noqa: N801
            @staticmethod
            def ping() -> bool:
                raise ConnectionError("down")

    rep = health_report(_Svc())
    assert rep["status"] == "failing" and "broker not connected" in rep["problems"] and rep["redis"]["ok"] is False

"""Radio coverage survey of a site (issue 12; DGUV rule 112-139 asks for one before a
lone-worker system is used): ``lonewatch survey run`` records, every few seconds while an
installer walks the site, what an alarm raised *there* would have to work with.

One JSON line per sample (:class:`SurveySample`, file ``RUN.jsonl``)::

    {"v": 1, "i": 17, "t": 1800000123.4, "dbm": -97, "registration": "home",
     "mqtt_rtt_ms": 84.2, "sms_ready": true, "gnss_fix": false, "lat": null, "lon": null,
     "beacons": {"ib:…:1:17": -63.0}, "beacon": "ib:…:1:17", "place": "Basement laundry",
     "place_source": "typed"}

* ``dbm``/``registration`` from the modem (``AT+CSQ``, CREG/CGREG/CEREG), ``gnss_fix`` and
  the position from its GNSS;
* ``mqtt_rtt_ms``: a QoS 1 alive published with the device's own credentials until the
  broker's PUBACK (None: no broker connection, or no PUBACK within ``rtt_timeout_s``) — the
  path an alarm takes first;
* ``sms_ready``: SIM ready and registered (home or roaming) — the SMS fallback could go;
* ``beacons`` heard in this scan (id → smoothed dBm) and ``beacon`` the one taken as place;
* ``place``: what the installer typed last (``place_source`` ``typed``), else the beacon's id
  (``beacon``), else None.

The file is flushed after every line, so a walk cut short (battery, Ctrl-C) leaves every
sample taken; ``lonewatch survey report`` (:mod:`installer.survey_report`) reads partial or
damaged files with a warning. Stop the device service first (it owns the modem port).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = ["SURVEY_VERSION", "MqttRtt", "Probe", "SurveyRecorder", "SurveySample", "HardwareProbe"]

log = logging.getLogger(__name__)

SURVEY_VERSION = 1


@dataclass
class SurveySample:
    """One sample of a walk (field meanings: module docstring)."""

    i: int
    t: float
    dbm: int | None = None
    registration: str = "unknown"
    mqtt_rtt_ms: float | None = None
    sms_ready: bool = False
    gnss_fix: bool = False
    lat: float | None = None
    lon: float | None = None
    beacons: dict[str, float] = field(default_factory=dict)
    beacon: str | None = None
    place: str | None = None
    place_source: str | None = None

    def to_json(self) -> str:
        return json.dumps({"v": SURVEY_VERSION, **asdict(self)}, ensure_ascii=False, separators=(",", ":"))


class Probe(Protocol):
    """What the recorder asks every sample: fills the radio fields of ``sample``."""

    def measure(self, sample: SurveySample) -> None: ...


class MqttRtt:
    """MQTT round trip: a QoS 1 publish until the broker's PUBACK, on the device's own
    broker account (paho-mqtt). ``payload()`` gives each publish (an alive message).

    Raises nothing: an unreachable broker is a measurement (None)."""

    def __init__(self, host: str, port: int, *, username: str, password: str, topic_name: str,
                 payload: Callable[[], bytes], tls_ca: str | None = None, client_id: str = "",
                 rtt_timeout_s: float = 5.0) -> None:
        import paho.mqtt.client as mqtt

        self.topic, self.payload, self.rtt_timeout_s = topic_name, payload, rtt_timeout_s
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"{username}-survey",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=tls_ca or None)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.connect_async(host, port, keepalive=15)
        self.client.loop_start()

    def rtt_ms(self) -> float | None:
        """Milliseconds to the PUBACK, or None."""
        if not self.client.is_connected():
            return None
        t0 = time.monotonic()
        try:
            info = self.client.publish(self.topic, self.payload(), qos=1)
            info.wait_for_publish(self.rtt_timeout_s)
        except (RuntimeError, ValueError, OSError):
            return None
        if not info.is_published():
            return None
        return round((time.monotonic() - t0) * 1000, 1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class HardwareProbe:
    """Modem, MQTT and beacons of a device (real or simulated parts handed in).

    Args:
        modem: an opened :class:`modem.at.Modem`, or None.
        mqtt: a :class:`MqttRtt`, or None.
        beacons: a :class:`device.beacons.BeaconService`, or None.
    """

    def __init__(self, modem: Any = None, mqtt: MqttRtt | None = None, beacons: Any = None) -> None:
        self.modem, self.mqtt, self.beacons = modem, mqtt, beacons
        self._gnss_started = False

    def measure(self, s: SurveySample) -> None:
        from protocol.errors import LonewatchError

        if self.modem is not None:
            try:
                s.dbm = self.modem.signal().rssi_dbm
                reg = self.modem.registration()
                s.registration = reg.state
                s.sms_ready = reg.registered and self.modem.sim_state() == "READY"
                if not self._gnss_started:
                    self.modem.start_gnss()
                    self._gnss_started = True
                fix = self.modem.gnss()
                if fix is not None:
                    s.gnss_fix, s.lat, s.lon = True, round(fix.lat, 6), round(fix.lon, 6)
            except LonewatchError as exc:
                log.warning("survey: modem reading failed: %s", exc)
                s.registration = "unknown" if s.registration == "unknown" else s.registration
        if self.mqtt is not None:
            s.mqtt_rtt_ms = self.mqtt.rtt_ms()
        if self.beacons is not None:
            place = self.beacons.scan_once()
            s.beacons = self.beacons.tracker.heard()
            s.beacon = place.id if place else None

    def close(self) -> None:
        if self.mqtt is not None:
            self.mqtt.close()


class SurveyRecorder:
    """Takes a sample every ``every_s`` seconds and appends it to ``out`` (flushed per line).

    Args:
        probe: fills the radio fields. out: a text file opened for appending.
        every_s: seconds between samples (the start of one to the start of the next).
        on_sample: optional ``(SurveySample) -> None`` (progress on the terminal).
    """

    def __init__(self, probe: Probe, out: IO[str], *, every_s: float = 3.0,
                 on_sample: Callable[[SurveySample], None] | None = None) -> None:
        self.probe, self.out, self.every_s, self.on_sample = probe, out, every_s, on_sample
        self._place: str | None = None
        self._lock = threading.Lock()
        self.count = 0

    def set_place(self, text: str | None) -> None:
        """The installer typed where they are now ("" or None: back to the beacon's place)."""
        with self._lock:
            self._place = (text or "").strip() or None

    def sample(self) -> SurveySample:
        """Take one sample now and write it."""
        s = SurveySample(i=self.count, t=round(time.time(), 3))
        self.probe.measure(s)
        with self._lock:
            typed = self._place
        if typed:
            s.place, s.place_source = typed, "typed"
        elif s.beacon:
            s.place, s.place_source = s.beacon, "beacon"
        self.out.write(s.to_json() + "\n")
        self.out.flush()
        self.count += 1
        if self.on_sample is not None:
            self.on_sample(s)
        return s

    def run(self, stop: threading.Event, *, samples: int | None = None, duration_s: float | None = None) -> int:
        """Sample until ``stop`` is set, ``samples`` were taken or ``duration_s`` passed.
        Returns how many samples were written."""
        started = time.monotonic()
        while not stop.is_set():
            t0 = time.monotonic()
            self.sample()
            if samples is not None and self.count >= samples:
                break
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            stop.wait(max(0.0, self.every_s - (time.monotonic() - t0)))
        return self.count


def open_run(path: str | Path) -> IO[str]:
    """``path`` opened for appending (UTF-8), its directory created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return open(p, "a", encoding="utf-8")

"""``[beacons]`` and ``[readiness]`` of ``device.toml`` (issue 12), kept out of
:mod:`device.config` (which is at its size limit); :func:`device.config._build` calls
:func:`build_beacons` and :func:`build_readiness` and holds the results in
:class:`device.config.DeviceConfig` like every other section.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.configfile import TableReader

__all__ = ["BEACON_SOURCES", "BeaconConfig", "ReadinessConfig", "build_beacons", "build_readiness"]

BEACON_SOURCES = ("none", "bluez")


@dataclass(frozen=True)
class BeaconConfig:
    """``[beacons]``: BLE location beacons (:mod:`device.beacons`).

    ``source`` ``"none"`` (default: no scanning) or ``"bluez"`` (bleak on the Pi's radio,
    ``adapter`` e.g. ``"hci0"``); one scan of ``scan_s`` seconds every ``interval_s`` seconds
    on shift; ``alpha``, ``lost_after_scans``, ``hysteresis_db`` and ``min_rssi_dbm`` tune the
    smoothing; the place stays valid ``beacon_max_age_s`` seconds after its beacon was last
    heard."""

    source: str = "none"
    adapter: str = "hci0"
    scan_s: float = 2.0
    interval_s: float = 30.0
    alpha: float = 0.5
    lost_after_scans: int = 2
    hysteresis_db: float = 3.0
    min_rssi_dbm: int = -100
    beacon_max_age_s: float = 120.0


@dataclass(frozen=True)
class ReadinessConfig:
    """``[readiness]``: the self-test at every shift start and the unprotected warning
    (:mod:`device.readiness`, DGUV rule 112-139 asks for both).

    ``enabled``; ``ack_wait_s``: how long one round trip through the relay may take (the
    relay's ``received`` ack and its ARC link answer), s; ``ready_timeout_s``: the device keeps
    re-checking this long after the shift start before NOT ready is final, s;
    ``recheck_s`` between checks, s; ``min_battery_pct`` %; ``min_signal_dbm`` dBm;
    ``require_place``: a GNSS fix or a beacon is needed to be ready (else only reported);
    ``unprotected_after_s``: neither MQTT nor SMS possible this long → the unprotected
    pattern, repeated every ``unprotected_repeat_s`` until one is back."""

    enabled: bool = True
    ack_wait_s: float = 20.0
    ready_timeout_s: float = 120.0
    recheck_s: float = 10.0
    min_battery_pct: int = 30
    min_signal_dbm: int = -105
    require_place: bool = False
    unprotected_after_s: float = 120.0
    unprotected_repeat_s: float = 60.0


def build_beacons(t: TableReader, test_mode: bool) -> BeaconConfig:
    """Read ``[beacons]`` (problems are collected by ``t``'s checker)."""
    d = BeaconConfig
    return BeaconConfig(
        source=t.string("source", d.source, choices=BEACON_SOURCES),
        adapter=t.string("adapter", d.adapter, pattern=r"hci[0-9]{1,2}", describe="an adapter name like \"hci0\""),
        scan_s=t.number("scan_s", d.scan_s, min=0.05 if test_mode else 0.5, max=30),
        interval_s=t.number("interval_s", d.interval_s, min=0.1 if test_mode else 5, max=3600),
        alpha=t.number("alpha", d.alpha, min=0.05, max=1),
        lost_after_scans=t.integer("lost_after_scans", d.lost_after_scans, min=1, max=20),
        hysteresis_db=t.number("hysteresis_db", d.hysteresis_db, min=0, max=30),
        min_rssi_dbm=t.integer("min_rssi_dbm", d.min_rssi_dbm, min=-127, max=0),
        beacon_max_age_s=t.number("beacon_max_age_s", d.beacon_max_age_s, min=1 if test_mode else 10, max=3600),
    )


def build_readiness(t: TableReader, test_mode: bool) -> ReadinessConfig:
    """Read ``[readiness]`` (problems are collected by ``t``'s checker)."""
    d = ReadinessConfig
    low = 0.5 if test_mode else 5
    cfg = ReadinessConfig(
        enabled=t.boolean("enabled", d.enabled),
        ack_wait_s=t.number("ack_wait_s", d.ack_wait_s, min=low, max=300),
        ready_timeout_s=t.number("ready_timeout_s", d.ready_timeout_s, min=low, max=3600),
        recheck_s=t.number("recheck_s", d.recheck_s, min=0.2 if test_mode else 2, max=600),
        min_battery_pct=t.integer("min_battery_pct", d.min_battery_pct, min=0, max=100),
        min_signal_dbm=t.integer("min_signal_dbm", d.min_signal_dbm, min=-140, max=0),
        require_place=t.boolean("require_place", d.require_place),
        unprotected_after_s=t.number("unprotected_after_s", d.unprotected_after_s, min=0.5 if test_mode else 10, max=3600),
        unprotected_repeat_s=t.number("unprotected_repeat_s", d.unprotected_repeat_s, min=0.5 if test_mode else 10, max=3600),
    )
    return cfg

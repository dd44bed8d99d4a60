"""Monthly figures count each alarm in its site's time zone (issue 13 "Monthly figures";
decision in :mod:`console.figures`): the registry's ``timezone`` of the site, UTC for a site
without one. Real Redis, alarms opened as the relay opens them, with injected times."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest

from console import actions, figures
from console.users import User
from relay.alarms import AlarmStore
from relay.registry import Contact, RegistryDoc, RegistryStore, Site
from relay.store import Store

OP = User("ada", "operator", "Ada Operator", 1)
CPH = "Europe/Copenhagen"  # UTC+1 in November and December (CET)


@pytest.fixture
def store(redis_module) -> Store:
    s = Store.from_url(redis_module.url)
    s.r.flushall()
    RegistryStore(s).save(RegistryDoc(sites=(Site("Vestergade", timezone=CPH), Site("Depot"))))
    return s


def _utc(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc).timestamp()


def _open(store: Store, alarm_id: str, site: str, opened: float) -> None:
    fields = {"device": alarm_id.split(":")[0], "kind": "panic", "worker": "W", "site": site, "escalate_after_s": 120,
              "max_rounds": 3, "policy": "contacts_only"}
    AlarmStore(store).open(alarm_id, fields, (Contact("P", "manager", phone="+4520110001"),), escalate=False,
                           detail="t", now=opened)


def test_month_boundaries_are_local_midnight() -> None:
    assert figures.month_range("2026-11") == (_utc("2026-11-01 00:00"), _utc("2026-12-01 00:00"))
    assert figures.month_range("2026-11", CPH) == (_utc("2026-10-31 23:00"), _utc("2026-11-30 23:00"))
    assert figures.month_of(_utc("2026-11-30 23:30")) == "2026-11"
    assert figures.month_of(_utc("2026-11-30 23:30"), CPH) == "2026-12"
    assert figures.month_of(_utc("2026-11-30 23:30"), "No/Such_Zone") == "2026-11"  # unknown zone: UTC
    with pytest.raises(ValueError):
        figures.month_range("2026-13", CPH)
    assert figures._neighbours("2026-01") == ("2025-12", "2026-02") and figures._neighbours("2026-12")[1] == "2027-01"


def test_alarms_count_in_their_sites_month(store: Store) -> None:
    _open(store, "a:1", "Vestergade", _utc("2026-11-30 23:30"))  # 1 Dec 00:30 in Copenhagen
    _open(store, "b:1", "Depot", _utc("2026-11-30 23:30"))       # no zone: still November (UTC)
    _open(store, "a:2", "Vestergade", _utc("2026-10-31 23:30"))  # 1 Nov 00:30 in Copenhagen
    _open(store, "c:1", "", _utc("2026-11-15 12:00"))            # no site at all: UTC
    actions.resolve(store, OP, "a:1", "false_alarm")
    nov = figures.monthly(store, "2026-11")
    assert nov["alarms"] == 3 and nov["sites"]["Vestergade"]["alarms"] == 1 and nov["sites"]["Depot"]["alarms"] == 1
    assert nov["sites"]["Vestergade"]["tz"] == CPH and nov["sites"]["Depot"]["tz"] == "UTC"
    dec = figures.monthly(store, "2026-12")
    assert dec["alarms"] == 1 and dec["by_outcome"]["false_alarm"] == 1 and list(dec["sites"]) == ["Vestergade"]
    assert figures.monthly(store, "2026-10")["alarms"] == 0
    rows = {r["site"]: r for r in csv.DictReader(io.StringIO(figures.figures_csv(nov)))}
    assert rows["Vestergade"]["time_zone"] == CPH and rows["Depot"]["time_zone"] == "UTC"
    assert rows["(all sites)"]["time_zone"] == "" and rows["(all sites)"]["alarms"] == "3"
    # The facts outlive the alarm records and keep the zone they were counted in.
    for alarm_id in ("a:1", "b:1", "a:2", "c:1"):
        store.r.delete(f"lw:{{esc}}:alarm:{alarm_id}")
    assert figures.monthly(store, "2026-11")["alarms"] == 3 and figures.monthly(store, "2026-12")["alarms"] == 1


def test_a_site_that_changes_zone_moves_its_live_alarms_once(store: Store) -> None:
    _open(store, "a:1", "Vestergade", _utc("2026-11-30 23:30"))
    assert figures.monthly(store, "2026-12")["alarms"] == 1
    RegistryStore(store).save(RegistryDoc(sites=(Site("Vestergade"), Site("Depot"))), replace=True)  # zone removed
    assert figures.monthly(store, "2026-11")["alarms"] == 1  # now a November alarm (UTC) …
    assert figures.monthly(store, "2026-12")["alarms"] == 0  # … and counted nowhere else


def test_the_page_opens_on_this_month_in_the_sites_zone(store: Store) -> None:
    now = _utc("2026-11-30 23:30")
    assert figures.default_month(store, now) == "2026-11"  # Vestergade (Copenhagen) and Depot (UTC) differ
    RegistryStore(store).save(RegistryDoc(sites=(Site("Vestergade", timezone=CPH),)), replace=True)
    assert figures.default_month(store, now) == "2026-12"  # one zone for all sites: its month

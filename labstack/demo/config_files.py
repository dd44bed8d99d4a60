"""The local installation's identity and config files: relay.toml, the registry, device config.

Split out of :mod:`labstack.demo.stack` (issue 9), which re-exports every name here, so
``from labstack.demo.stack import DEVICE_ID, device_dict`` keeps working. The constants are the
demo's one account, worker, site, contacts and ARC receivers; :func:`relay_toml` (SPEC §4, §5),
:func:`registry_toml` (:mod:`relay.registry`) and :func:`device_dict` (SPEC §2,
:class:`device.config.DeviceConfig`) write the files :class:`labstack.demo.stack.DemoStack`
starts its parts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .local_arc import ArcTarget

__all__ = [
    "ACCOUNT",
    "ARC_NAMES",
    "CONTACTS",
    "DEVICE_ID",
    "LAT",
    "LON",
    "SITE",
    "WORKER",
    "ZONE",
    "device_dict",
    "registry_toml",
    "relay_toml",
]

DEVICE_ID = "lw-demo-0001"
#: Relay instances the scenarios start as extra processes (each gets the broker account relay-<instance>).
DEMO_RELAY_INSTANCES = ("relay-a", "relay-b")
ACCOUNT = "1234AB"
ZONE = 17
WORKER = "Anna Hansen"
SITE = "Vestergade 12, basement laundry"
#: Where the simulated GNSS says the worker is (Copenhagen).
LAT, LON = 55.668571, 12.576131
#: The site's contacts in the demo registry, in escalation order: (name, role, phone, language).
CONTACTS = (("Per Jensen", "manager", "+4520110001", "da"), ("Omar Haddad", "guard", "+4520110002", "ar"))
#: Names of the demo's local ARC receivers (primary, secondary).
ARC_NAMES = ("demo-arc", "demo-arc-2")


def relay_toml(mq_port: int, relay_password: str, redis_url: str, arc: ArcTarget | None, registry: Path,
               *, arc2: ArcTarget | None = None, modem_port: str = "") -> str:
    """The relay.toml of the local installation (plain MQTT on loopback; TLS is for real
    deployments). ``arc2``: a secondary receiver; ``modem_port``: the relay's SMS modem."""
    receivers = ""
    if arc is not None:
        limit = "max_xdata_blocks = 1\n" if arc.local else ""
        receivers = f"""
[[arc.receivers]]
name = "{"demo-arc" if arc.local else "external-arc"}"
host = "{arc.host}"
port = {arc.port}
timeout_s = 3.0
{limit}"""
    if arc2 is not None:
        receivers += f"""
[[arc.receivers]]
name = "{ARC_NAMES[1]}"
host = "{arc2.host}"
port = {arc2.port}
timeout_s = 3.0
max_xdata_blocks = 1
"""
    if modem_port:
        receivers += f"""
[modem]
port = "{modem_port}"
flavour = "sim7600"
poll_s = 1.0

[notify]
poll_s = 0.2
timezone = "Europe/Copenhagen"
"""
    return f"""# written by lonewatch demo
[relay]
instance = "demo"
dispatch_workers = 2

[mqtt]
host = "127.0.0.1"
port = {mq_port}
username = "relay"
password = "{relay_password}"
tls = false

[redis]
url = "{redis_url}"

[arc]
format = "ADM-CID"
attempts_per_receiver = 3
backoff_s = 0.2

[registry]
file = "{registry}"
{receivers}"""


def registry_toml() -> str:
    """The registry of the local installation: one ARC account, worker, site (with escape-route
    notes and two contacts, ``arc_then_contacts``) and device (:mod:`relay.registry`)."""
    contacts = "".join(f"""
  [[sites.contacts]]
  name = "{name}"
  role = "{role}"
  phone = "{phone}"
  language = "{language}"
""" for name, role, phone, language in CONTACTS)
    return f"""[[accounts]]
account = "{ACCOUNT}"
name = "Demo cleaning company"

[[workers]]
name = "{WORKER}"
number = {ZONE}
language = "da"

[[sites]]
name = "{SITE}"
address = "Vestergade 12, 1456 København K"
escape_routes = "Basement: stairs at the north end, door code 4711."
alarm_system = "Intruder alarm panel by the back door."
policy = "arc_then_contacts"
account = "{ACCOUNT}"
timezone = "Europe/Copenhagen"
{contacts}
[[devices]]
id = "{DEVICE_ID}"
worker = "{WORKER}"
site = "{SITE}"
"""


def device_dict(mq_port: int, state_dir: Path, modem_port: str, password: str) -> dict[str, Any]:
    """The device config of the simulated device (as a dict for ``DeviceConfig.from_dict``)."""
    return {
        "device": {"id": DEVICE_ID, "state_dir": str(state_dir), "silent": True},
        "mqtt": {"host": "127.0.0.1", "port": mq_port, "password": password, "tls": False, "keepalive_s": 10},
        "timing": {"hold_s": 2.0, "alive_interval_s": 60, "resend_after_s": 5},
        "modem": {"port": modem_port, "flavour": "sim7600"},
        "worker": {"name": WORKER, "site": SITE},
    }


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out

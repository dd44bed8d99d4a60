"""``[faults]`` of ``relay.toml`` (issue 14: our own outages and the administrators).

``admins``: E.164 numbers and e-mail addresses told about system events
(:mod:`relay.system_events`); ``link_lease_s``: how long a relay's broker link counts in
Redis without renewal (:mod:`relay.brokerlink`); ``fault_after_s``: no relay with a broker
link this long → one installation fault (Contact ID 350); ``mass_loss_threshold`` lost
contacts within ``mass_loss_window_s`` → one summary system event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FaultsSection:
    """``[faults]`` (see the module docstring); defaults fit 60 s alive intervals."""

    admins: tuple[str, ...] = ()
    link_lease_s: float = 6.0
    fault_after_s: float = 30.0
    mass_loss_threshold: int = 10
    mass_loss_window_s: float = 60.0


def faults_section(root: Any) -> FaultsSection:
    """Read ``[faults]`` from a :class:`protocol.configfile.TableReader` root (problems are
    reported through its checker, like every other section)."""
    t = root.table("faults")
    d = FaultsSection
    return FaultsSection(
        admins=tuple(t.string_list("admins", [], pattern=r"\+[1-9][0-9]{6,14}|[^@\s]+@[^@\s]+",
                                   describe="an E.164 number (+4512345678) or an e-mail address", unique=True)),
        link_lease_s=t.number("link_lease_s", d.link_lease_s, min=0.3, max=600),
        fault_after_s=t.number("fault_after_s", d.fault_after_s, min=0, max=3600),
        mass_loss_threshold=t.integer("mass_loss_threshold", d.mass_loss_threshold, min=2, max=1_000_000),
        mass_loss_window_s=t.number("mass_loss_window_s", d.mass_loss_window_s, min=1, max=86400),
    )

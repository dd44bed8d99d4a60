"""Contact ID (SIA DC-05, carried as DC-09 ``ADM-CID``) and the SIA-DCS codes of the same
events: the SPEC §3 event table, qualifiers, zones, and the DC-09 account check. Pure code."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from protocol.errors import ValidationError

__all__ = ["CONTACT_ID_EVENTS", "ContactId", "check_account", "contact_id_for", "sia_code"]

_ACCOUNT_VALUE_RE = re.compile(r"[0-9A-Fa-f]{3,16}")


# --------------------------------------------------------------------------- Contact ID
#: SPEC §3 event kind → (Contact ID event code, qualifier of the *new* event).
CONTACT_ID_EVENTS: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        "panic": (120, 1),
        "silent_panic": (122, 1),
        "man_down": (101, 1),
        "missed_checkin": (102, 1),
        "lost_contact": (356, 1),
        "low_battery": (302, 1),
        "battery_restore": (302, 3),
        "contact_restore": (356, 3),  # relay-raised: the device is heard again
        "cancel": (406, 1),
        "test": (601, 1),
        "periodic_test": (602, 1),
        "shift_start": (401, 3),  # 3 = start of supervision ("closing")
        "shift_end": (401, 1),  # 1 = end of supervision ("opening")
        "listen_in": (606, 1),  # listen-in to follow (issue 11)
    }
)
_RESTORABLE: Final = frozenset(
    {"panic", "silent_panic", "man_down", "missed_checkin", "lost_contact", "low_battery",
     "battery_restore"}
)
# Contact ID code → SIA-DCS two-letter code for qualifier 1 (new) and 3 (restore); the same
# pairs as pysiaalarm's ADM mapping, except 102, which it lacks: sent as QA/QH (emergency).
_SIA_CODES: Final[Mapping[int, tuple[str, str]]] = MappingProxyType(
    {
        120: ("PA", "PH"), 122: ("HA", "HH"), 101: ("QA", "QH"), 102: ("QA", "QH"),
        356: ("YC", "YK"), 302: ("YT", "YR"), 406: ("OC", "OC"), 601: ("RX", "RX"),
        602: ("RP", "RP"), 401: ("OP", "CL"),
        606: ("LF", "LE"),  # listen-in begin / ended (SIA DC-03)
    }
)


def contact_id_for(kind: str, restore: bool = False) -> tuple[int, int]:
    """``(code, qualifier)`` of an event kind per the SPEC §3 table; ``restore`` → qualifier 3.

    Raises ValidationError for an unknown kind or a restore of a kind that has none.
    """
    try:
        code, qualifier = CONTACT_ID_EVENTS[kind]
    except KeyError:
        raise ValidationError(
            "kind", f"no Contact ID for {kind!r}; known: {', '.join(sorted(CONTACT_ID_EVENTS))}"
        ) from None
    if restore:
        if kind not in _RESTORABLE:
            raise ValidationError("kind", f"{kind!r} has no restore")
        qualifier = 3
    return code, qualifier


def sia_code(code: int, qualifier: int) -> str:
    """SIA-DCS event code (``"PA"``…) for a Contact ID code/qualifier. Raises ValidationError."""
    try:
        new, restored = _SIA_CODES[code]
    except KeyError:
        raise ValidationError("code", f"no SIA-DCS code known for Contact ID {code:03d}") from None
    return restored if qualifier == 3 else new


@dataclass(frozen=True, slots=True)
class ContactId:
    """One Contact ID event (SIA DC-05 via DC-09 ``ADM-CID``; SPEC §3).

    ``qualifier`` 1 new / 3 restore / 6 status; ``code`` 0..999; ``partition`` 0..99;
    ``zone`` 0..999 (lonewatch: the worker number). Raises ValidationError when out of range.
    """

    qualifier: int
    code: int
    partition: int = 1
    zone: int = 0

    def __post_init__(self) -> None:
        if self.qualifier not in (1, 3, 6):
            raise ValidationError("qualifier", f"must be 1, 3 or 6, got {self.qualifier!r}")
        for name, top in (("code", 999), ("partition", 99), ("zone", 999)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ValidationError(name, f"must be an integer 0..{top}, got {value!r}")

    def body(self, account: str) -> str:
        """``ADM-CID`` data ``#acct|QEEE GG ZZZ``. Raises ValidationError for a bad account."""
        acct = check_account(account)
        return f"#{acct}|{self.qualifier}{self.code:03d} {self.partition:02d} {self.zone:03d}"

    def sia_dcs_body(self, account: str) -> str:
        """``SIA-DCS`` data ``#acct|Nri<partition>/<SIA code><zone:03d>`` (e.g. ``…|Nri1/PA017``)."""
        acct = check_account(account)
        return f"#{acct}|Nri{self.partition}/{sia_code(self.code, self.qualifier)}{self.zone:03d}"


def check_account(account: str) -> str:
    """A DC-09 account number upper-cased: 3-16 hex digits (SPEC §4). Raises ValidationError."""
    if not isinstance(account, str) or not _ACCOUNT_VALUE_RE.fullmatch(account):
        raise ValidationError("account", f"must be 3-16 hex digits, got {account!r}")
    return account.upper()

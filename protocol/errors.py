"""The one error root of lonewatch and the leaves shared by every package.

Every error lonewatch raises on purpose derives from :class:`LonewatchError`; leaves also
subclass the matching builtin where one fits (``ValidationError`` is a ``ValueError``), so
callers may catch either.
"""

from __future__ import annotations


class LonewatchError(Exception):
    """Root of all lonewatch errors."""


class ValidationError(LonewatchError, ValueError):
    """A message, field or value broke the wire contract.

    Attributes:
        field: dotted name of the offending field (``"payload.kind"``), or ``""`` when the
            input as a whole is bad (not JSON, too large).
        reason: human-readable why, e.g. ``"must be one of panic, silent_panic, man_down"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)

"""One ``lonewatch doctor`` result: :class:`Check` and its :data:`Status` (SPEC §5).

Split out of :mod:`device.doctor` (issue 9) so the doctor, its hardware checks
(:mod:`device.doctor_hardware`) and its voice checks (:mod:`device.doctor_voice`) share one
result type; :mod:`device.doctor` re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Check", "Status"]

Status = Literal["pass", "warn", "fail", "skip"]


@dataclass
class Check:
    """One result: ``name`` (see :data:`device.doctor.CHECK_NAMES`), ``status``, a one-line ``detail``,
    the ``fix`` to try (for warn/fail) and machine-readable ``data``."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix, **self.data}

"""A thread-safe timeline of named steps with monotonic milliseconds, printed for people or
as JSON lines (``lonewatch demo`` and ``lonewatch demo --json``)."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO


class Timeline:
    """Collects ``(step, t_ms, fields)``; ``t_ms`` counts from the timeline's creation on the
    monotonic clock. With ``live`` the steps are printed as they happen."""

    def __init__(self, *, as_json: bool = False, live: bool = True, out: TextIO | None = None) -> None:
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self.steps: list[dict[str, Any]] = []
        self.as_json, self.live = as_json, live
        self.out = out or sys.stdout
        self._cond = threading.Condition(self._lock)

    def add(self, step: str, **fields: Any) -> dict[str, Any]:
        """Record a step now and print it if live."""
        with self._cond:
            entry = {"step": step, "t_ms": round((time.monotonic() - self._t0) * 1000, 1), **fields}
            self.steps.append(entry)
            if self.live:
                self._print(entry)
            self._cond.notify_all()
        return entry

    def wait_for(self, step: str, timeout_s: float, **match: Any) -> dict[str, Any] | None:
        """Block until a step named ``step`` whose fields equal ``match`` is recorded."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for e in self.steps:
                    if e["step"] == step and all(e.get(k) == v for k, v in match.items()):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def first(self, step: str) -> dict[str, Any] | None:
        """The first recorded step with this name."""
        with self._lock:
            return next((e for e in self.steps if e["step"] == step), None)

    def _print(self, e: dict[str, Any]) -> None:
        if self.as_json:
            self.out.write(json.dumps(e, ensure_ascii=False, default=str) + "\n")
        else:
            rest = "  ".join(f"{k}={v}" for k, v in e.items() if k not in ("step", "t_ms"))
            self.out.write(f"  {e['t_ms']:>9.1f} ms  {e['step']:<18} {rest}\n")
        self.out.flush()

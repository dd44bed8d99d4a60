"""Demo scenarios: each brings the local installation into a situation and checks that
what the worker needs happened. A scenario returns True only if it did (exit status 0).

Add one with the :func:`scenario` decorator in a module listed in :data:`MODULES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .stack import ACCOUNT, ZONE, DemoStack

Scenario = Callable[[DemoStack], bool]
#: name → (function, one-line description)
SCENARIOS: dict[str, tuple[Scenario, str]] = {}
#: Modules that define further scenarios (imported by :func:`load_all`).
MODULES: tuple[str, ...] = ("labstack.demo.scenario_contacts", "labstack.demo.scenario_device", "labstack.demo.scenario_relay",
                             "labstack.demo.scenario_modem", "labstack.demo.scenario_privacy",
                             "labstack.demo.scenario_mandown")
MODULES += ("labstack.demo.scenario_voice",)  # issue 11
MODULES += ("labstack.demo.scenario_console",)  # issue 13 (console)
MODULES += ("labstack.demo.scenario_indoor",)  # issue 12
MODULES += ("labstack.demo.scenario_arcpath",)  # issue 14
MODULES += ("labstack.demo.scenario_guard",)  # issue 15
MODULES += ("labstack.demo.scenario_supply",)  # issue 15 (supply chain)


def scenario(name: str, description: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario under ``name`` for ``lonewatch demo --scenario NAME``."""

    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = (fn, description)
        return fn

    return register


def load_all() -> dict[str, tuple[Scenario, str]]:
    """Import every scenario module and return the registry."""
    import importlib

    for mod in MODULES:
        importlib.import_module(mod)
    return SCENARIOS


def expect_arc(stack: DemoStack, step: dict[str, Any] | None, code: str, qualifier: int = 1) -> bool:
    """Check an ``arc_ack`` step: present and, with the local receiver, decoded exactly as
    sent (account, Contact ID code, qualifier, zone). Records an ``error`` step if not."""
    if step is None:
        stack.tl.add("error", reason=f"the ARC did not acknowledge Contact ID {code} in time")
        return False
    if stack.local_arc is None:
        return True
    expected = {"account": ACCOUNT, "code": code, "qualifier": qualifier, "zone": ZONE}
    wrong = {k: step.get(k) for k, v in expected.items() if step.get(k) != v}
    if wrong:
        stack.tl.add("error", reason="the ARC decoded something else than was sent", expected=expected, got=wrong)
        return False
    return True


@scenario("panic", "hold the button 2.5 s: a silent panic (CID 122) reaches the ARC with the position")
def panic(stack: DemoStack) -> bool:
    stack.hold(2.5)
    ok = expect_arc(stack, stack.tl.wait_for("arc_ack", stack.timeout_s), "122")
    if ok and stack.tl.wait_for("feedback", 10, pattern="arc_delivered") is None:
        stack.tl.add("error", reason="the device got no `arc` ack (no delivered feedback)")
        ok = False
    return ok

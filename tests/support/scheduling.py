"""How pytest-xdist hands the suite to its workers (`--dist loadscope`, tests/conftest.py).

xdist's loadscope keeps a module's tests on one worker, so its module-scoped PGMs and stacks start once,
and sends the modules with the most tests first. Two things made the run longer than its work:

* a module ran on both databases in one worker, one after the other, though the two runs share no
  fixture that costs anything (each backend has its own PGM);
* the slowest modules have few tests (the OpenAPI fuzz has four, the image test three, the bench one),
  so they went out last and the run waited for them while the other workers sat idle.

Here a work unit is a module on one database, and the units known to be slow go out first, longest
first (a longest-job-first schedule leaves the shortest tail). The table holds each unit's time from a
run's `--durations` on the loaded CI machine; a module missing from it goes out after them, by its test
count as before. A wrong or stale figure only changes the order, never what runs."""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadScopeScheduling

BACKENDS = ("sqlite", "postgresql")

# Seconds one unit (a module on one database) took under CI load, for the slowest ones.
SLOW_UNITS: dict[str, float] = {
    "tests/saga/test_refunds_outside_the_saga.py": 97,
    "tests/deploy/test_image.py": 85,
    "tests/http/test_fuzz_openapi.py": 72,
    "tests/services/test_adoption.py": 68,
    "tests/saga/test_saga_reliability.py": 67,
    "tests/browser/test_dev_stack_pages.py": 64,
    "tests/devstack/test_local_stack.py": 56,
    "tests/sandbox/test_sandbox_in_production.py": 43,
    "tests/providers/test_satispay.py": 38,
    "tests/test_operator_cli.py": 32,
    "tests/outbox/test_outbox_delivery.py": 30,
    "tests/providers/test_stripe_saga.py": 30,
    "tests/deploy/test_monitoring.py": 32,
    "tests/deploy/test_kubernetes.py": 30,
    "tests/bench/test_bench_smoke.py": 28,
    "tests/providers/test_flowpay_legacy.py": 26,
    "tests/providers/test_providers_saga.py": 25,
    "tests/services/test_reconciliation.py": 25,
    "tests/providers/test_stripe.py": 25,
    "tests/saga/test_saga_flows.py": 24,
    "tests/test_startup.py": 24,
    "tests/services/test_callback_store.py": 24,
}


def backend_of(nodeid: str) -> str | None:
    """The database a test runs on, from its parameters (`test_x[postgresql-OK]`), if it has one."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    parameters = nodeid.rsplit("[", 1)[1][:-1].split("-")
    return next((backend for backend in BACKENDS if backend in parameters), None)


class ModuleAndDatabaseScheduling(LoadScopeScheduling):
    """loadscope with a module's run on each database as its own unit, the slowest units sent first."""

    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        self._ordered = False

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        backend = backend_of(nodeid)
        return f"{scope}[{backend}]" if backend else scope

    def _assign_work_unit(self, node: Any) -> None:
        # The queue is complete when the first unit is assigned: order it once, then hand out as xdist does.
        if not self._ordered:
            units = list(self.workqueue.items())
            self.workqueue.clear()
            for scope, work in sorted(units, key=lambda unit: -SLOW_UNITS.get(unit[0].split("[")[0].split("::")[0], 0)):
                self.workqueue[scope] = work
            self._ordered = True
        super()._assign_work_unit(node)

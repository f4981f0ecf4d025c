"""Watching a saga's refunds from a test: its business state and metadata, the events the PGM sent it,
the refund commands it ran, and `pgm reconcile` as an operator runs it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pgm.devstack.flow_manager import pgm_saga_config
from tests.support import preloaded
from tests.support.contract_machine import contract_saga_config
from tests.support.pgm_process import PgmProcess
from tests.support.saga_stack import SagaStack
from tests.support.servers import wait_for

# The shipped payment machine and the contract's: their state ids differ, their business states do not.
MACHINES: dict[str, Callable[[str], dict[str, Any]]] = {"shipped": pgm_saga_config, "contract": contract_saga_config}
PAID, PARTIALLY_REFUNDED, TOTALLY_REFUNDED = 1, 2, 3


def wait_settled(
    stack: SagaStack, saga_id: str, business_state: int, metadata_ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Wait until the saga is in `business_state` with metadata that satisfies `metadata_ok` (state ids
    differ between machines; business states do not)."""
    seen: list[dict[str, Any]] = []

    def settled() -> bool:
        seen.append(stack.saga(saga_id))
        return seen[-1]["businessStateId"] == business_state and metadata_ok(seen[-1]["metadata"])

    try:
        wait_for(settled, timeout=20, interval=0.05, what=f"saga {saga_id} in business state {business_state}")
    except TimeoutError as exc:
        last = seen[-1] if seen else {}
        raise AssertionError(f"saga stayed in {last.get('currentState')} with {last.get('metadata')}") from exc
    return seen[-1]


def refunded(*amounts: int) -> Callable[[dict[str, Any]], bool]:
    """The saga metadata lists exactly these refunds."""
    expected = {"totalRefundedAmount": sum(amounts), "refundedAmounts": list(amounts)}
    return lambda metadata: metadata.get("refundDetails") == expected


def refund_commands(stack: SagaStack, saga_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until the PGM has run `count` refund commands of the saga; return them."""

    def ran() -> list[dict[str, Any]]:
        seen = stack.pgm.get(f"/-/sagas/{saga_id}").json()
        return [c for c in seen["commands"] if c["route"] == "refund" and c["status"] == "DONE"]

    wait_for(lambda: len(ran()) >= count, timeout=20, what=f"{count} refund commands run")
    return ran()


def event_labels(stack: SagaStack, saga_id: str) -> list[str]:
    """The events the PGM sent the saga, in order."""
    return [event["label"] for event in stack.pgm.get(f"/-/sagas/{saga_id}").json()["events"]]


def reconcile_now(pgm: PgmProcess) -> list[dict[str, Any]]:
    """`pgm reconcile --wait`, as an operator runs it against the PGM's database."""
    ran = preloaded.run(
        "pgm",
        ["reconcile", "--wait", "30", "--json"],
        env=pgm.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    checked: list[dict[str, Any]] = json.loads(ran.stdout)
    return checked

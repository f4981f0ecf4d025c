"""Waiting for PaymentStatus notifications at a recording receiver."""

from __future__ import annotations

from typing import Any

from tests.support.servers import WAIT_BUDGET_SECONDS, RecordingReceiver, wait_for

STATUS_PATH = "/payment-status"


def statuses_for(receiver: RecordingReceiver, shop_transaction_id: str) -> list[dict[str, Any]]:
    """PaymentStatus documents received for one merchant reference, in arrival order."""
    return [
        body
        for request in receiver.requests
        if request.path == STATUS_PATH and request.status < 300
        for body in [request.json]
        if isinstance(body, dict) and body.get("shopTransactionId") == shop_transaction_id
    ]


def wait_for_status(
    receiver: RecordingReceiver,
    shop_transaction_id: str,
    status: str,
    action: str = "PAYMENT",
    timeout: float = WAIT_BUDGET_SECONDS,
) -> dict[str, Any]:
    """Block until a PaymentStatus with this status and action arrives; return it."""
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        found[:] = [
            s for s in statuses_for(receiver, shop_transaction_id) if s["status"] == status and s["action"] == action
        ]
        return bool(found)

    wait_for(arrived, timeout=timeout, what=f"{action} {status} for {shop_transaction_id}")
    return found[0]

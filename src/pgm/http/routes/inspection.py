"""What the PGM knows of one saga, for operators and the local stack's saga inspector: the commands it
received, the events it sent with their deliveries, the payments and refunds behind them, and which
delivered events the Flow Manager's machine did not take (docs/flow-manager.md)."""

import logging
from typing import Any

from fastapi import APIRouter, Depends

from pgm.domain.saga import taken_by_the_machine
from pgm.http.dependencies import Parts, require_token
from pgm.saga.crud import CrudUnavailable
from pgm.store.records import OutboxMessage
from pgm.wiring import Service

log = logging.getLogger(__name__)


def build_router() -> APIRouter:
    """GET /-/sagas/{sagaId}."""
    router = APIRouter(tags=["operations"], dependencies=[Depends(require_token)])

    @router.get("/-/sagas/{saga_id}", summary="Commands, events, deliveries and payments of one saga")
    async def saga(saga_id: str, parts: Parts) -> dict[str, Any]:
        async with parts.database.snapshot() as tx:
            commands = await tx.inbox.of_saga(saga_id)
            events = await tx.saga_events.of_saga(saga_id)
            outbox_ids = [event.outbox_id for event in events if event.outbox_id is not None]
            deliveries = {row.id: row for row in await tx.outbox.by_ids(outbox_ids)} if outbox_ids else {}
            payments = await tx.payments.of_saga(saga_id)
            refunds = await tx.payments.refunds_of_many([p.id for p in payments])
        described = [
            {
                "label": e.label,
                "messagePayload": e.envelope.get("value", {}).get("messagePayload"),
                "operationKey": e.operation_key,
                "createdAt": e.created_at,
                "delivery": _delivery(deliveries.get(e.outbox_id) if e.outbox_id is not None else None),
            }
            for e in events
        ]
        return {
            "sagaId": saga_id,
            "commands": [
                {
                    "deliveryId": c.delivery_id,
                    "route": c.route,
                    "label": c.label,
                    "status": c.status,
                    "attempts": c.attempts,
                    "operationKey": c.operation_key,
                    "result": c.result,
                    "receivedAt": c.created_at,
                }
                for c in commands
            ],
            "events": described,
            "flowManager": await _flow_manager_view(parts, saga_id, described),
            "payments": [
                {
                    "paymentId": p.provider_payment_id,
                    "provider": p.provider,
                    "kind": p.kind,
                    "status": p.status,
                    "amount": p.amount,
                    "currency": p.currency,
                    "description": p.description,
                    "refunds": [
                        {"refundId": r.provider_refund_id, "amount": r.amount, "status": r.status}
                        for r in refunds
                        if r.payment_id == p.id
                    ],
                }
                for p in payments
            ],
        }

    return router


def _delivery(message: OutboxMessage | None) -> dict[str, Any] | None:
    if message is None:
        return None
    return {
        "status": message.status,
        "attempts": message.attempts,
        "lastStatusCode": message.last_status_code,
        "lastError": message.last_error,
        "deliveredAt": message.delivered_at,
    }


# (saga, event position) already logged as not taken: the local stack's inspector asks every few seconds,
# and one warning per ignored event is enough. Bounded, oldest forgotten first.
_WARNED: dict[tuple[str, int], None] = {}
_WARNED_LIMIT = 10_000


async def _flow_manager_view(parts: Service, saga_id: str, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The saga as the Flow Manager keeps it (its state), and each delivered event marked
    `takenByFlowManager`: an outcome reached outside the saga's command (a link paid before
    `notificationSent`) may arrive in a state that ignores it. Those are listed and logged."""
    if parts.saga_inbox is None or parts.saga_crud is None:
        return None
    try:
        document = await parts.saga_crud.saga(saga_id)
    except CrudUnavailable as exc:
        return {"error": str(exc)}
    if document is None:
        return {"error": f"saga {saga_id} is not in the CRUD"}
    delivered = [
        (position, e)
        for position, e in enumerate(events)
        if e["delivery"] is not None and e["delivery"]["status"] == "DELIVERED"
    ]
    history = document.get("history")
    history_events = history.get("events") if isinstance(history, dict) else None
    taken = taken_by_the_machine([(e["label"], e["messagePayload"]) for _, e in delivered], history_events)
    state = document.get("currentState")
    not_taken = []
    for event in events:
        event["takenByFlowManager"] = None
    for (index, event), was_taken in zip(delivered, taken, strict=True):
        event["takenByFlowManager"] = was_taken
        if not was_taken:
            not_taken.append(event["label"])
            position = (saga_id, index)
            if position in _WARNED:
                continue
            _WARNED[position] = None
            if len(_WARNED) > _WARNED_LIMIT:
                del _WARNED[next(iter(_WARNED))]
            log.warning(
                "event delivered but not taken by the Flow Manager's machine: the PGM keeps the outcome",
                extra={"sagaId": saga_id, "label": event["label"], "state": state},
            )
    return {"currentState": state, "notTaken": not_taken}

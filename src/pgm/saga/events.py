"""Saga events out: the outcome -> event table of docs/flow-manager.md, applied to recorded outcomes.

Every event goes through the outbox in the transaction of the change it reports, in order per saga,
and is also kept in saga_events so a repeated command can re-send the same outcome.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pgm.clock import Clock
from pgm.domain.saga import (
    Event,
    envelope,
    refund_details,
    refund_requested,
    refund_settled_request,
    with_redirect,
    with_token,
)
from pgm.domain.statuses import PaymentKind, Status
from pgm.observability.metrics import Metrics
from pgm.outbound import HttpClient, Response
from pgm.outbox.dispatcher import Sender
from pgm.outbox.senders import post_json
from pgm.outbox.writer import Destination, enqueue, message_id_header
from pgm.providers.base import PayResult, PayResultCode
from pgm.saga.crud import SagaCrud
from pgm.services.settlement import PaymentChange, RefundChange, Source
from pgm.store import records
from pgm.store.records import Payment, Refund
from pgm.store.transaction import Transaction

log = logging.getLogger(__name__)

SUBSCRIPTION_KINDS = frozenset(
    {PaymentKind.SUBSCRIPTION_SCHEDULE, PaymentKind.SUBSCRIPTION_START, PaymentKind.SUBSCRIPTION_PAY}
)


def stable_message_id(
    saga_id: str, origin: str, label: str, ordinal: int, payload: dict[str, Any] | None = None
) -> str:
    """The X-Pgm-Message-Id of a saga event: a digest of the saga, what the event answers (`origin`: an
    operation key, or a refused command's content), the event and its ordinal (and, for a refusal, its
    payload), so the same logical event sent again carries the same id (docs/reliability.md)."""
    material = json.dumps([saga_id, origin, label, ordinal, payload], sort_keys=True, separators=(",", ":"))
    return "evt-" + hashlib.sha256(material.encode()).hexdigest()[:40]


class SagaEvents:
    """Writes saga events; registered as an outcome listener of the settlement."""

    def __init__(self, clock: Clock, metrics: Metrics) -> None:
        self.clock = clock
        self.metrics = metrics

    async def emit(
        self,
        tx: Transaction,
        saga_id: str,
        operation_key: str | None,
        event: Event,
        payload: dict[str, Any],
        origin: str | None = None,
    ) -> None:
        """Queue one event for the Flow Manager and remember it (with its delivery, for the inspector).

        Its X-Pgm-Message-Id is derived from the saga, what the event answers and the event (see
        `stable_message_id`): `operation_key` for an operation's outcome; `origin` for an event that
        answers a command without an operation (a refused command: see SagaCommands.refuse)."""
        document = envelope(saga_id, event, payload)
        if operation_key is not None:
            # The n-th such event of the operation: a reversal (executed, failed, executed again) is a new
            # event with a new id; a replay copies the id of the event it re-sends instead.
            earlier = await tx.saga_events.count(operation_key, event.value)
            message_id = stable_message_id(saga_id, operation_key, event.value, earlier)
        elif origin is not None:
            message_id = stable_message_id(saga_id, origin, event.value, 0, payload)
        else:
            message_id = None
        await self._record(tx, saga_id, operation_key, event.value, document, message_id)

    async def _record(
        self,
        tx: Transaction,
        saga_id: str,
        operation_key: str | None,
        label: str,
        document: dict[str, Any],
        message_id: str | None,
    ) -> None:
        now = self.clock.now()
        outbox_id = await enqueue(tx, Destination.FLOW_MANAGER, saga_id, document, now, message_id)
        await tx.saga_events.add(
            records.SagaEvent(
                saga_id=saga_id,
                operation_key=operation_key,
                label=label,
                envelope=document,
                outbox_id=outbox_id,
                created_at=now,
            )
        )
        self.metrics.saga_events.labels(label).inc()

    async def replay(self, tx: Transaction, saga_id: str, operation_key: str) -> bool:
        """Re-send the latest outcome of an operation (a repeated command), with the X-Pgm-Message-Id it
        was first sent with; False when there is none."""
        latest = await tx.saga_events.latest(operation_key)
        if latest is None:
            return False
        first_sent = await tx.outbox.message_id(latest.outbox_id) if latest.outbox_id is not None else None
        await self._record(tx, saga_id, operation_key, latest.label, latest.envelope, first_sent)
        return True

    async def payment_answered(self, tx: Transaction, payment: Payment, result: PayResult) -> None:
        """The provider's synchronous answer: scheduled, link created, authorization requested."""
        if not payment.saga_id:
            return
        kind = PaymentKind(payment.kind)
        pay_request = payment.saga_context.get("payRequestData") or {}
        key = payment.idempotency_key
        if kind is PaymentKind.AUTHORIZATION:
            # The machine only leaves AUTHORIZATION_REQUESTED on authorizationScheduled, so a refused
            # authorization is scheduled first and failed right after, instead of stalling the saga.
            redirected = with_redirect(pay_request, result.redirect_url, result.redirect_url_mobile)
            authorization = {"payRequestData": with_token(redirected, result.subscription_token)}
            await self.emit(tx, payment.saga_id, key, Event.AUTHORIZATION_SCHEDULED, authorization)
        elif kind is PaymentKind.PAY_BY_LINK:
            if result.result is not PayResultCode.KO:
                link = {"paymentId": payment.provider_payment_id, "link": payment.link}
                await self.emit(tx, payment.saga_id, key, Event.LINK_CREATED, link)
        elif result.result in (PayResultCode.PENDING, PayResultCode.REDIRECT_TO_URL):
            updated = with_redirect(pay_request, payment.redirect_url, payment.redirect_url_mobile)
            if kind in SUBSCRIPTION_KINDS and payment.subscription_token:
                updated = with_token(updated, payment.subscription_token)
            scheduled = {"paymentId": payment.provider_payment_id, "payRequestData": updated}
            await self.emit(tx, payment.saga_id, key, Event.PAYMENT_SCHEDULED, scheduled)

    async def payment_changed(self, tx: Transaction, payment: Payment, change: PaymentChange) -> None:
        """A saga's payment settled (answer, callback, status check or reconciliation)."""
        status = change.transition.status
        if not status.is_final:
            return
        saga_id = payment.saga_id
        if saga_id is None:
            await self._find_saga_later(tx, payment, status)
            return
        kind = PaymentKind(payment.kind)
        if kind is PaymentKind.PAY_BY_LINK or change.source is Source.RECONCILIATION:
            # Learnt outside the saga's command: the saga may be in a state that ignores the event (a link paid
            # before notificationSent); GET /-/sagas/{id} shows it. Not logged for every callback: hot path.
            log.info(
                "saga payment settled outside its command",
                extra={"sagaId": saga_id, "kind": kind.value, "status": status.value, "source": change.source.value},
            )
        if status is Status.FAILED:
            payload: dict[str, Any] = {
                "paymentId": payment.provider_payment_id,
                "error": payment.description or "the payment failed",
            }
            if payment.provider_payment_id is None:
                del payload["paymentId"]
            await self.emit(tx, saga_id, payment.idempotency_key, Event.PAYMENT_FAILED, payload)
        elif kind is not PaymentKind.AUTHORIZATION:
            payload = {"paymentId": payment.provider_payment_id}
            if kind in SUBSCRIPTION_KINDS:
                pay_request = payment.saga_context.get("payRequestData") or {}
                payload["payRequestData"] = with_token(pay_request, payment.subscription_token)
            await self.emit(tx, saga_id, payment.idempotency_key, Event.PAYMENT_EXECUTED, payload)

    async def refund_changed(self, tx: Transaction, payment: Payment, refund: Refund, change: RefundChange) -> None:
        """A saga's refund moved: pending, partial, total or failed (derived from the ledger)."""
        saga_id = refund.saga_id or payment.saga_id
        if saga_id is None:
            return
        details = refund_details(change.position.succeeded)
        status = change.transition.status
        outcome: dict[str, Any] = {"refundDetails": details}
        if refund.saga_id is None and status.is_final:
            # A refund that started outside the saga: its refundRequested put its id in the metadata.
            outcome["refundRequestData"] = refund_settled_request(refund.amount)
        if status is Status.PENDING:
            await self.emit(tx, saga_id, refund.idempotency_key, Event.REFUND_PENDING, outcome)
        elif status is Status.FAILED:
            payload = {"error": refund.description or "the refund failed", **outcome}
            await self.emit(tx, saga_id, refund.idempotency_key, Event.REFUND_FAILED, payload)
        elif status is Status.ACCEPTED:
            event = Event.TOTAL_REFUND_EXECUTED if change.position.is_total else Event.PARTIAL_REFUND_EXECUTED
            await self.emit(tx, saga_id, refund.idempotency_key, event, outcome)

    async def refund_started(self, tx: Transaction, payment: Payment, refund: Refund) -> None:
        """A refund of a saga's payment that no saga command asked for (the /v3 API, the provider's own
        dashboard): the saga hears `refundRequested` first, so that the contract's machine moves to
        REFUND_REQUESTED and can take the outcome event that follows. The refund command the Flow Manager
        sends back on entering that state carries the refund's id and resolves to this refund."""
        if payment.saga_id is None or refund.saga_id is not None:
            return
        log.info(
            "refund started outside the saga",
            extra={"sagaId": payment.saga_id, "refundId": refund.id, "amount": refund.amount},
        )
        payload = refund_requested(refund.amount, refund.id)
        await self.emit(tx, payment.saga_id, refund.idempotency_key, Event.REFUND_REQUESTED, payload)

    async def _find_saga_later(self, tx: Transaction, payment: Payment, status: Status) -> None:
        """A payment the PGM did not start for a saga may still belong to one: the sender asks the CRUD
        for the saga whose metadata names it, at delivery time (no network inside this transaction)."""
        if not payment.provider_payment_id or PaymentKind(payment.kind) is PaymentKind.AUTHORIZATION:
            return
        event = Event.PAYMENT_EXECUTED if status is Status.ACCEPTED else Event.PAYMENT_FAILED
        payload: dict[str, Any] = {"paymentId": payment.provider_payment_id}
        if event is Event.PAYMENT_FAILED:
            payload["error"] = payment.description or "the payment failed"
        lookup = {"paymentId": payment.provider_payment_id, "event": event.value, "messagePayload": payload}
        await enqueue(tx, Destination.FLOW_MANAGER_LOOKUP, payment.id, lookup, self.clock.now())


def flow_manager_senders(client: HttpClient, flow_manager_url: str, crud: SagaCrud) -> dict[str, Sender]:
    """Deliver the events this module queues to `{FLOW_MANAGER_URL}/event`, by destination."""
    event_url = f"{flow_manager_url}/event"

    async def find_saga_then_send(message: records.OutboxMessage) -> Response:
        # A payment the PGM did not start for a saga: its saga is the one whose metadata names it.
        document = await crud.saga_by_payment(str(message.payload["paymentId"]))
        saga_id = document.get("sagaId") if document else None
        if not isinstance(saga_id, str):
            return Response(204)
        event = envelope(saga_id, Event(message.payload["event"]), message.payload["messagePayload"])
        return await client.post(event_url, json=event, headers=message_id_header(message))

    return {
        Destination.FLOW_MANAGER.value: post_json(client, event_url),
        Destination.FLOW_MANAGER_LOOKUP.value: find_saga_then_send,
    }

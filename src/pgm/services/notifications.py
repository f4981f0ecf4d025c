"""PaymentStatus notifications to PAYMENT_CALLBACK_URL (docs/api.md), written to the outbox in the
transaction of the change they report. Sent on every status change of a payment or refund, and on
every /check."""

from __future__ import annotations

from typing import Any

from pgm.domain.statuses import Status
from pgm.outbound import HttpClient
from pgm.outbox.dispatcher import Sender
from pgm.outbox.senders import post_json
from pgm.outbox.writer import Destination, enqueue
from pgm.providers.base import PayResult
from pgm.services.settlement import PaymentChange, RefundChange
from pgm.store.records import Payment, Refund
from pgm.store.transaction import Transaction


def payment_status(
    payment: Payment, action: str = "PAYMENT", status: Status | None = None, **metadata: Any
) -> dict[str, Any]:
    """The PaymentStatus document of a payment (or of one of its refunds, with action REFUND)."""
    document: dict[str, Any] = {
        "status": (status or Status(payment.status)).public,
        "paymentId": payment.provider_payment_id,
        "shopTransactionId": payment.shop_transaction_id,
        "providerName": payment.provider,
        "paymentMethod": payment.payment_method,
        "action": action,
    }
    extra = {key: value for key, value in metadata.items() if value is not None}
    if payment.subscription_token:
        extra.setdefault("subscriptionToken", payment.subscription_token)
    if extra:
        document["metadata"] = extra
    return document


class PaymentStatusNotifier:
    """Queues PaymentStatus documents for PAYMENT_CALLBACK_URL, in order per payment."""

    def __init__(self, enabled: bool, now: Any) -> None:
        self.enabled = enabled
        self._now = now

    async def push(self, tx: Transaction, payment: Payment, **metadata: Any) -> None:
        """Queue the payment's current status (used by /check, which always notifies)."""
        if self.enabled:
            document = payment_status(payment, **metadata)
            await enqueue(tx, Destination.PAYMENT_CALLBACK, payment.id, document, self._now())

    async def payment_answered(self, tx: Transaction, payment: Payment, result: PayResult) -> None:
        """Answers are reported through the status change they cause."""

    async def payment_changed(self, tx: Transaction, payment: Payment, change: PaymentChange) -> None:
        """A payment's status moved: notify; a reversal says which outcome it replaces."""
        await self.push(tx, payment, reversedFrom=_reversed_from(change))

    async def refund_started(self, tx: Transaction, payment: Payment, refund: Refund) -> None:
        """Reported through the status changes that follow."""

    async def refund_changed(self, tx: Transaction, payment: Payment, refund: Refund, change: RefundChange) -> None:
        """A refund's status moved: notify with action REFUND."""
        if not self.enabled:
            return
        document = payment_status(
            payment,
            action="REFUND",
            status=change.transition.status,
            refundId=refund.provider_refund_id,
            refundAmount=refund.amount,
            totalRefundedAmount=change.position.total_refunded,
            reversedFrom=_reversed_from(change),
        )
        await enqueue(tx, Destination.PAYMENT_CALLBACK, payment.id, document, self._now())


def _reversed_from(change: PaymentChange | RefundChange) -> str | None:
    """The final status a confirmed reversal replaced (a chargeback, a late capture), else None."""
    return change.previous.value if change.transition.reversal else None


def payment_callback_sender(client: HttpClient, payment_callback_url: str) -> Sender:
    """Delivers the PaymentStatus documents this module queues to PAYMENT_CALLBACK_URL."""
    return post_json(client, payment_callback_url)

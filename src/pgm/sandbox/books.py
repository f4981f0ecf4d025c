"""The sandbox's own books: payments, refunds and tokens, and the webhooks their changes trigger."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pgm.outbox.writer import Destination, enqueue
from pgm.store.ids import new_id
from pgm.store.records import SandboxPayment, SandboxRefund, SandboxToken
from pgm.store.transaction import Transaction


class Outcome(enum.StrEnum):
    """`providerData.sandboxOutcome` (docs/sandbox.md)."""

    OK = "OK"
    KO = "KO"
    PENDING = "PENDING"
    REDIRECT_TO_URL = "REDIRECT_TO_URL"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"


class PaymentKind(enum.StrEnum):
    """What the sandbox is asked to create."""

    PAYMENT = "payment"
    SUBSCRIPTION_SCHEDULE = "subscription_schedule"
    SUBSCRIPTION_START = "subscription_start"
    SUBSCRIPTION_PAY = "subscription_pay"
    LINK = "link"


class TokenKind(enum.StrEnum):
    """A sandbox token is a provider-managed subscription, a merchant mandate or a payer authorization."""

    SUBSCRIPTION = "subscription"
    MANDATE = "mandate"
    AUTHORIZATION = "authorization"


PAYMENT_STATUSES = ("PENDING", "ACCEPTED", "FAILED")
DECLINE_REASON = "Card declined by the sandbox (sandboxOutcome KO)"


class SandboxRefusal(Exception):
    """The sandbox refuses a request (answered 4xx with this message)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class PaymentOrder:
    """A validated request to create a sandbox payment."""

    kind: PaymentKind
    amount: int
    currency: str
    reference: str
    outcome: Outcome
    idempotency_key: str | None
    success_url: str | None = None
    failure_url: str | None = None
    interval: str | None = None
    interval_count: int | None = None
    token: str | None = None


def payment_json(payment: SandboxPayment, public_url: str) -> dict[str, Any]:
    """The API representation of a payment."""
    page = f"{public_url}/sandbox/checkout/{payment.id}"
    return {
        "id": payment.id,
        "kind": payment.kind,
        "amount": payment.amount,
        "currency": payment.currency,
        "reference": payment.shop_transaction_id,
        "status": payment.status,
        "declineReason": payment.decline_reason,
        "token": payment.token,
        "checkoutUrl": page if payment.status == "PENDING" or payment.kind == PaymentKind.LINK else None,
        "checkoutUrlMobile": f"{page}?channel=mobile" if payment.status == "PENDING" else None,
        "createdAt": payment.created_at,
        "updatedAt": payment.updated_at,
    }


def refund_json(refund: SandboxRefund, public_url: str) -> dict[str, Any]:
    """The API representation of a refund."""
    return {
        "id": refund.id,
        "paymentId": refund.payment_id,
        "amount": refund.amount,
        "status": refund.status,
        "approvalUrl": f"{public_url}/sandbox/refunds/{refund.id}" if refund.status == "PENDING" else None,
        "createdAt": refund.created_at,
        "updatedAt": refund.updated_at,
    }


def token_json(token: SandboxToken, public_url: str) -> dict[str, Any]:
    """The API representation of a token."""
    page = f"{public_url}/sandbox/authorizations/{token.token}"
    pending_authorization = token.kind == TokenKind.AUTHORIZATION and token.status == "PENDING"
    return {
        "token": token.token,
        "kind": token.kind,
        "status": token.status,
        "reference": token.shop_transaction_id,
        "amount": token.amount,
        "currency": token.currency,
        "interval": token.interval,
        "intervalCount": token.interval_count,
        "approvalUrl": page if pending_authorization else None,
        "approvalUrlMobile": f"{page}?channel=mobile" if pending_authorization else None,
    }


class Books:
    """Operations on the sandbox's tables; every method runs inside the caller's write transaction."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url

    async def create_payment(self, tx: Transaction, order: PaymentOrder, now: float) -> SandboxPayment:
        """Create a payment (or return the one created earlier with the same idempotency key)."""
        # The payment goes in first, unless its key is taken (one statement, no lookup before it); the
        # token it creates, if any, only once it did.
        stored = await self._stored_token(tx, order)
        new_token = self._new_token(order, now)
        token = stored or new_token
        settled: tuple[str, str | None] | None = None
        if order.kind is PaymentKind.SUBSCRIPTION_PAY and (token is None or token.status != "ACTIVE"):
            settled = ("FAILED", "the subscription token is not active")
        elif order.outcome is Outcome.OK or (order.outcome is Outcome.TIMEOUT and order.kind is not PaymentKind.LINK):
            # OK on a link: the payer pays the moment it exists. TIMEOUT: the payment goes through and
            # only the answer to the PGM is lost (a link is created and waits for its payer).
            settled = ("ACCEPTED", None)
        elif order.outcome is Outcome.KO:
            settled = ("FAILED", DECLINE_REASON)
        status, reason = settled or ("PENDING", None)
        # Inserted with its final status (one statement), then settled like any other: token, webhook.
        payment = SandboxPayment(
            id=new_id("sbx_pay"),
            kind=order.kind.value,
            amount=order.amount,
            currency=order.currency,
            shop_transaction_id=order.reference,
            idempotency_key=order.idempotency_key,
            status=status,
            decline_reason=reason,
            success_url=order.success_url,
            failure_url=order.failure_url,
            token=token.token if token else None,
            created_at=now,
            updated_at=now,
        )
        if order.idempotency_key:
            if not await tx.sandbox.add_payment_unless_key_taken(payment):
                return (await tx.sandbox.payments_by_key(order.idempotency_key))[0]
        else:
            await tx.sandbox.add(payment)
        if new_token is not None:
            await tx.sandbox.add(new_token)
        if settled is not None:
            await self._settle_payment(tx, payment, status, now, reason)
        return payment

    @staticmethod
    async def _stored_token(tx: Transaction, order: PaymentOrder) -> SandboxToken | None:
        """The token a payment on a stored token is made on (None for any other payment)."""
        if order.kind is PaymentKind.SUBSCRIPTION_PAY and order.token:
            return await tx.sandbox.token(order.token)
        return None

    @staticmethod
    def _new_token(order: PaymentOrder, now: float) -> SandboxToken | None:
        """The subscription or mandate a payment creates (None for any other payment): inserted after it."""
        if order.kind not in (PaymentKind.SUBSCRIPTION_SCHEDULE, PaymentKind.SUBSCRIPTION_START):
            return None
        return SandboxToken(
            token=new_id("sbx_sub" if order.kind is PaymentKind.SUBSCRIPTION_SCHEDULE else "sbx_mdt"),
            kind=(
                TokenKind.SUBSCRIPTION if order.kind is PaymentKind.SUBSCRIPTION_SCHEDULE else TokenKind.MANDATE
            ).value,
            status="PENDING",
            shop_transaction_id=order.reference,
            amount=order.amount,
            currency=order.currency,
            interval=order.interval,
            interval_count=order.interval_count,
            created_at=now,
            updated_at=now,
        )

    async def create_authorization(self, tx: Transaction, order: PaymentOrder, now: float) -> SandboxToken:
        """Create a payer authorization (a mandate the payer approves on the hosted page)."""
        if order.idempotency_key:
            tokens = await tx.sandbox.tokens_by_key(order.idempotency_key)
            if tokens:
                return tokens[0]
        token = SandboxToken(
            token=new_id("sbx_auth"),
            kind=TokenKind.AUTHORIZATION.value,
            status="PENDING",
            shop_transaction_id=order.reference,
            amount=order.amount,
            currency=order.currency,
            idempotency_key=order.idempotency_key,
            success_url=order.success_url,
            failure_url=order.failure_url,
            created_at=now,
            updated_at=now,
        )
        await tx.sandbox.add(token)
        if order.outcome in (Outcome.OK, Outcome.TIMEOUT):
            await self.decide_authorization(tx, token, approve=True, now=now)
        elif order.outcome is Outcome.KO:
            await self.decide_authorization(tx, token, approve=False, now=now)
        return token

    async def decide_payment(self, tx: Transaction, payment: SandboxPayment, approve: bool, now: float) -> None:
        """The payer's decision on the hosted page."""
        if payment.status != "PENDING":
            raise SandboxRefusal(f"payment {payment.id} is already {payment.status}", status_code=409)
        if approve:
            await self._settle_payment(tx, payment, "ACCEPTED", now)
        else:
            await self._settle_payment(tx, payment, "FAILED", now, "Declined by the payer on the hosted page")

    async def decide_authorization(self, tx: Transaction, token: SandboxToken, approve: bool, now: float) -> None:
        """The payer's decision on an authorization request."""
        if token.status != "PENDING":
            raise SandboxRefusal(f"authorization {token.token} is already {token.status}", status_code=409)
        token.status = "ACTIVE" if approve else "CANCELED"
        token.updated_at = now
        await self._webhook(tx, "token.updated", token.token, token_json(token, self.public_url), now)

    async def refund(
        self, tx: Transaction, payment: SandboxPayment, amount: int, outcome: Outcome, key: str | None, now: float
    ) -> SandboxRefund:
        """Refund part of an accepted payment; refuses more than what is left, as real providers do."""
        if key:
            earlier = await tx.sandbox.refunds_by_key(key)
            if earlier:
                return earlier[0]
        if payment.status != "ACCEPTED":
            raise SandboxRefusal(f"payment {payment.id} is {payment.status}; only accepted payments can be refunded")
        refunds = await tx.sandbox.refunds_of([payment.id])
        committed = sum(r.amount for r in refunds if r.status in ("ACCEPTED", "PENDING"))
        if amount > payment.amount - committed:
            raise SandboxRefusal(f"refund of {amount} exceeds the {payment.amount - committed} left on {payment.id}")
        refund = SandboxRefund(
            id=new_id("sbx_ref"),
            payment_id=payment.id,
            amount=amount,
            status="PENDING",
            idempotency_key=key,
            created_at=now,
            updated_at=now,
        )
        await tx.sandbox.add(refund)
        if outcome is Outcome.OK:
            await self.decide_refund(tx, refund, approve=True, now=now)
        elif outcome is Outcome.KO:
            await self.decide_refund(tx, refund, approve=False, now=now)
        return refund

    async def decide_refund(self, tx: Transaction, refund: SandboxRefund, approve: bool, now: float) -> None:
        """Complete a pending refund (from its page, or at once for OK/KO outcomes)."""
        if refund.status != "PENDING":
            raise SandboxRefusal(f"refund {refund.id} is already {refund.status}", status_code=409)
        refund.status = "ACCEPTED" if approve else "FAILED"
        refund.updated_at = now
        await self._webhook(tx, "refund.updated", refund.payment_id, refund_json(refund, self.public_url), now)

    async def _settle_payment(
        self, tx: Transaction, payment: SandboxPayment, status: str, now: float, reason: str | None = None
    ) -> None:
        payment.status = status
        payment.decline_reason = reason
        payment.updated_at = now
        if payment.token and payment.kind != PaymentKind.SUBSCRIPTION_PAY:
            token = await tx.sandbox.token(payment.token)
            if token is not None and token.status == "PENDING":
                token.status = "ACTIVE" if status == "ACCEPTED" else "CANCELED"
                token.updated_at = now
        await self._webhook(tx, "payment.updated", payment.id, payment_json(payment, self.public_url), now)

    async def _webhook(
        self, tx: Transaction, event_type: str, ordering_key: str, data: dict[str, Any], now: float
    ) -> None:
        event = {"id": new_id("evt"), "type": event_type, "createdAt": int(now), "data": data}
        await enqueue(tx, Destination.SANDBOX_WEBHOOK, ordering_key, event, now)

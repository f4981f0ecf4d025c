"""The one interface every provider adapter implements, and the plain dataclasses at its boundary.

An adapter translates between the PGM's operations and one provider's API, and nothing else: no store
access, no events. What it supports is data (`Capabilities`), so an unsupported operation answers 501
without special cases anywhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgm.domain.statuses import Status


class Operation(enum.StrEnum):
    """The provider-agnostic operations of the /v3 API (docs/api.md)."""

    PAY = "pay"
    REFUND = "refund"
    SUBSCRIPTION_SCHEDULE = "subscription/schedule"
    SUBSCRIPTION_START = "subscription/start"
    SUBSCRIPTION_PAY = "subscription/pay"
    SUBSCRIPTION_UPDATE = "subscription/update"
    SUBSCRIPTION_STATUS = "subscription/status"
    SUBSCRIPTION_EXPIRE = "subscription/expire"
    AUTHORIZATION_TOKEN = "authorization token"
    PAY_BY_LINK = "pay-by-link"
    STATUS = "status"
    CALLBACK = "callback"


class Interval(enum.StrEnum):
    """Subscription billing intervals."""

    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"


@dataclass(frozen=True)
class Capabilities:
    """What a provider supports, as data."""

    operations: frozenset[Operation]
    payment_methods: frozenset[str]
    intervals: frozenset[Interval] = frozenset()
    currencies: frozenset[str] = frozenset({"EUR"})
    # The method a pay-like path without a payment-method segment means (`/v3/acme/pay`); None: the
    # provider's paths always name one.
    default_payment_method: str | None = None
    # The provider's API lists a payment's refunds (`list_refunds`): reconciliation then finds refunds
    # made at the provider whose notification never reached the PGM (docs/reliability.md).
    lists_refunds: bool = False


class PayResultCode(enum.StrEnum):
    """The `result` of a pay-like operation (docs/api.md)."""

    OK = "OK"
    KO = "KO"
    PENDING = "PENDING"
    REDIRECT_TO_URL = "REDIRECT_TO_URL"

    @property
    def status(self) -> Status:
        """The payment status this answer means."""
        return {
            PayResultCode.OK: Status.ACCEPTED,
            PayResultCode.KO: Status.FAILED,
            PayResultCode.PENDING: Status.PENDING,
            PayResultCode.REDIRECT_TO_URL: Status.PENDING,
        }[self]


# The largest expiresAfter accepted: a thousand payments is over 80 years of monthly payments.
MAX_SUBSCRIPTION_PAYMENTS = 1000


@dataclass(frozen=True)
class SubscriptionInfo:
    """Subscription terms, or the stored token for a merchant-initiated payment."""

    token: str | None = None
    interval: Interval | None = None
    interval_count: int | None = None
    # The maximum number of payments (Mia's type): a provider that bills by itself stops after that many.
    expires_after: int | None = None


@dataclass(frozen=True)
class PayRequest:
    """A pay-like request as the adapter sees it (pay, subscription, authorization, link)."""

    amount: int
    currency: str
    shop_transaction_id: str
    payment_method: str
    idempotency_key: str
    success_redirect_url: str | None = None
    failure_redirect_url: str | None = None
    provider_data: Mapping[str, Any] = field(default_factory=dict)
    subscription: SubscriptionInfo | None = None


@dataclass(frozen=True)
class PayResult:
    """The provider's answer to a pay-like request."""

    result: PayResultCode
    description: str
    payment_id: str | None
    redirect_url: str | None = None
    redirect_url_mobile: str | None = None
    subscription_token: str | None = None
    link: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundRequest:
    """A refund of (part of) a payment."""

    payment_id: str
    amount: int
    currency: str
    idempotency_key: str
    provider_data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundResult:
    """The provider's answer about a refund: ACCEPTED, FAILED or PENDING."""

    status: Status
    refund_id: str | None
    description: str = ""


@dataclass(frozen=True)
class ListedRefund:
    """One refund of a payment as the provider lists it: ACCEPTED, FAILED or PENDING."""

    refund_id: str
    amount: int
    status: Status


@dataclass(frozen=True)
class PaymentLookup:
    """What the provider says about a payment when asked."""

    status: Status
    payment_id: str
    shop_transaction_id: str | None = None
    amount: int | None = None
    subscription_token: str | None = None
    redirect_url: str | None = None
    link: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # What adopting a payment made before the switch needs, where the provider says it.
    currency: str | None = None
    refunded_amount: int | None = None
    payment_method: str | None = None
    # The succeeded refunds behind refunded_amount, by the provider's refund id, where it lists them.
    refunds: tuple[tuple[str, int], ...] = ()


class SubscriptionState(enum.StrEnum):
    """Subscription status values (docs/api.md)."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    EXPIRED = "EXPIRED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class SubscriptionLookup:
    """What the provider says about a subscription."""

    status: SubscriptionState
    token: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallbackRequest:
    """A provider's HTTP request to our callback endpoint, exactly as received."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    received_at: float


class Subject(enum.StrEnum):
    """What a provider notification is about."""

    PAYMENT = "PAYMENT"
    REFUND = "REFUND"
    AUTHORIZATION = "AUTHORIZATION"


@dataclass(frozen=True)
class Notification:
    """One verified fact from a callback. `status` is None when the provider does not sign its
    callbacks: the PGM then asks the provider and trusts that answer, never the callback body."""

    event_id: str
    subject: Subject
    payment_id: str | None
    status: Status | None
    refund_id: str | None = None
    token: str | None = None
    # The subject's amount when the provider says it: a refund's lets the PGM record a refund made
    # outside it; a payment's (with its currency and merchant reference, in a signed notification such
    # as Adyen's) is enough to adopt a payment made before the switch at a provider without lookups.
    amount: int | None = None
    currency: str | None = None
    shop_transaction_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Serialise for the callback store."""
        document = {
            "eventId": self.event_id,
            "subject": self.subject.value,
            "paymentId": self.payment_id,
            "status": self.status.value if self.status else None,
            "refundId": self.refund_id,
            "token": self.token,
            "amount": self.amount,
        }
        terms = {"currency": self.currency, "shopTransactionId": self.shop_transaction_id}
        return {**document, **{key: value for key, value in terms.items() if value is not None}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notification:
        """Rebuild a stored notification."""
        return cls(
            event_id=data["eventId"],
            subject=Subject(data["subject"]),
            payment_id=data.get("paymentId"),
            status=Status(data["status"]) if data.get("status") else None,
            refund_id=data.get("refundId"),
            token=data.get("token"),
            amount=data.get("amount"),
            currency=data.get("currency"),
            shop_transaction_id=data.get("shopTransactionId"),
        )


@dataclass(frozen=True)
class CallbackAnswer:
    """What to answer the provider (each provider expects its own acknowledgement)."""

    status_code: int = 200
    body: bytes = b""
    media_type: str = "text/plain"


class ProviderError(Exception):
    """Base class of the errors an adapter raises."""


class ProviderRejected(ProviderError):
    """The provider refused the request for good (a 4xx that retrying will not fix)."""


class OutcomeUnknown(ProviderError):
    """The answer was lost or useless (time-out, 5xx, malformed): the operation may or may not exist."""


class InvalidCallback(ProviderError):
    """A callback that is not provably from the provider (bad or stale signature): answer 401."""


class InvalidProviderData(ProviderError):
    """Input the provider needs is missing or wrong; answer 400 without calling the provider."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotSupported(ProviderError):
    """The provider does not offer this operation (answered 501)."""


class ProviderAdapter:
    """Base of every adapter. Operations a provider lacks stay unimplemented here; `capabilities`
    tells the HTTP edge not to call them, so these defaults are never reached in normal operation."""

    name: str
    capabilities: Capabilities

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Validate provider-specific input before anything is stored or sent; raise InvalidProviderData."""

    async def pay(self, request: PayRequest) -> PayResult:
        """Pay once."""
        raise NotSupported(self._unsupported(Operation.PAY))

    async def schedule_subscription(self, request: PayRequest) -> PayResult:
        """Create a provider-managed recurring payment."""
        raise NotSupported(self._unsupported(Operation.SUBSCRIPTION_SCHEDULE))

    async def start_subscription(self, request: PayRequest) -> PayResult:
        """Create a merchant-managed subscription (stored token) and its first payment."""
        raise NotSupported(self._unsupported(Operation.SUBSCRIPTION_START))

    async def pay_subscription(self, request: PayRequest) -> PayResult:
        """Charge a stored token once more."""
        raise NotSupported(self._unsupported(Operation.SUBSCRIPTION_PAY))

    async def update_subscription(self, token: str, request: PayRequest) -> SubscriptionLookup:
        """Change a subscription's terms."""
        raise NotSupported(self._unsupported(Operation.SUBSCRIPTION_UPDATE))

    async def subscription_status(self, token: str) -> SubscriptionLookup:
        """Look a subscription up."""
        raise NotSupported(self._unsupported(Operation.SUBSCRIPTION_STATUS))

    async def expire_subscription(self, token: str, shop_transaction_id: str | None) -> SubscriptionLookup:
        """Stop a subscription."""
        raise NotSupported(self._unsupported(Operation.SUBSCRIPTION_EXPIRE))

    async def authorization_token(self, request: PayRequest) -> PayResult:
        """Ask the payer for a token that later subscription payments use."""
        raise NotSupported(self._unsupported(Operation.AUTHORIZATION_TOKEN))

    async def pay_by_link(self, request: PayRequest) -> PayResult:
        """Create a payment link."""
        raise NotSupported(self._unsupported(Operation.PAY_BY_LINK))

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund (part of) a payment."""
        raise NotSupported(self._unsupported(Operation.REFUND))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Look a payment up by the provider's id."""
        raise NotSupported(self._unsupported(Operation.STATUS))

    async def payment_details(self, payment_id: str) -> PaymentLookup:
        """Look a payment up with what adopting it needs (amount, currency, already refunded); a provider
        that needs further calls for those overrides this rather than slowing every status lookup."""
        return await self.payment_status(payment_id)

    async def check_payment(self, payment_id: str) -> PaymentLookup:
        """Look a payment up for /check (a provider with its own check operation overrides this)."""
        return await self.payment_status(payment_id)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Find a payment whose creation answer was lost; None when the provider has no such payment."""
        raise NotSupported(self._unsupported(Operation.STATUS))

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """Look a refund up; None when the provider has no such refund."""
        raise NotSupported(self._unsupported(Operation.STATUS))

    async def list_refunds(self, payment_id: str) -> list[ListedRefund]:
        """Every refund the provider holds for a payment, however it was made (only where
        `capabilities.lists_refunds`)."""
        raise NotSupported(f"provider {self.name} does not list a payment's refunds")

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Verify a callback the provider's way and extract what it says; raise InvalidCallback if forged."""
        raise NotSupported(self._unsupported(Operation.CALLBACK))

    def callback_answer(self) -> CallbackAnswer:
        """The acknowledgement the provider expects for an accepted callback."""
        return CallbackAnswer()

    async def aclose(self) -> None:
        """Release the adapter's connections."""

    def _unsupported(self, operation: Operation) -> str:
        return f"provider {self.name} does not support {operation.value}"

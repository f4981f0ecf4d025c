"""Request and response bodies of the /v3 API (docs/api.md), validated at the edge, with examples.

Unknown fields are ignored, never executed. Wire names follow the existing PGM (camelCase).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from pgm.domain.money import MAX_AMOUNT, currency_problem
from pgm.providers.base import MAX_SUBSCRIPTION_PAYMENTS, Interval, SubscriptionInfo
from pgm.services.policy import (
    MAX_INTERVAL_COUNT,
    MAX_PAYMENT_METHOD_LENGTH,
    MAX_REFERENCE_LENGTH,
    MAX_URL_LENGTH,
    identifier_problem,
    redirect_url_problem,
)


def _currency(value: str) -> str:
    problem = currency_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _http_url(value: str) -> str:
    # The payer is sent here from the hosted page: nothing but http(s), so no javascript: links.
    problem = redirect_url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _identifier(value: str) -> str:
    problem = identifier_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Amount = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT, description="Minor units: 1299 means 12.99", examples=[1299])]
Currency = Annotated[str, Field(min_length=3, max_length=3, examples=["EUR"]), AfterValidator(_currency)]
Reference = Annotated[str, Field(min_length=1, max_length=MAX_REFERENCE_LENGTH)]
# A provider's identifier (paymentId, subscription token): it ends up in provider URLs (services/policy.py).
Identifier = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_REFERENCE_LENGTH,
        description="A provider's identifier: no spaces, control characters, '/', '\\', '?' or '#'",
    ),
    AfterValidator(_identifier),
]
RedirectUrl = Annotated[str, Field(max_length=MAX_URL_LENGTH), AfterValidator(_http_url)]
ProviderData = Annotated[
    dict[str, Any],
    Field(description="Provider-specific fields, e.g. `sandboxOutcome` and `sandboxDelayMs` for the sandbox"),
]


class Body(BaseModel):
    """Base of request bodies: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


class SubscriptionInfoBody(Body):
    """Subscription terms, or the token of a stored payment method."""

    token: Identifier | None = None
    interval: Interval | None = None
    intervalCount: Annotated[StrictInt, Field(ge=1, le=MAX_INTERVAL_COUNT)] | None = None  # noqa: N815
    # The maximum number of payments of the subscription, as Mia's PGM documents it.
    expiresAfter: Annotated[StrictInt, Field(ge=1, le=MAX_SUBSCRIPTION_PAYMENTS)] | None = None  # noqa: N815

    def to_domain(self) -> SubscriptionInfo:
        """The adapter-facing dataclass."""
        return SubscriptionInfo(
            token=self.token, interval=self.interval, interval_count=self.intervalCount, expires_after=self.expiresAfter
        )


PAY_EXAMPLE: dict[str, Any] = {
    "amount": 1299,
    "currency": "EUR",
    "shopTransactionId": "order-1001",
    "successRedirectUrl": "https://shop.example/ok",
    "failureRedirectUrl": "https://shop.example/ko",
    "providerData": {"sandboxOutcome": "OK"},
}


class PayBody(Body):
    """A payment request."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [PAY_EXAMPLE]})

    amount: Amount
    currency: Currency
    shopTransactionId: Reference  # noqa: N815
    successRedirectUrl: RedirectUrl | None = None  # noqa: N815
    failureRedirectUrl: RedirectUrl | None = None  # noqa: N815
    providerData: ProviderData = Field(default_factory=dict)  # noqa: N815


class SubscriptionBody(PayBody):
    """A subscription request: pay fields and `subscriptionInfo`."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{**PAY_EXAMPLE, "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}}]
        },
    )

    subscriptionInfo: SubscriptionInfoBody  # noqa: N815


class PayByLinkBody(PayBody):
    """A payment link request: pay fields, and optionally the payment method the link is for."""

    paymentMethod: Annotated[str, Field(min_length=1, max_length=MAX_PAYMENT_METHOD_LENGTH)] | None = None  # noqa: N815


class RefundBody(Body):
    """A refund of (part of) a payment."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"amount": 500, "currency": "EUR", "paymentId": "sbx_pay_0123456789abcdef"}]},
    )

    amount: Amount
    currency: Currency
    paymentId: Identifier  # noqa: N815
    providerData: ProviderData = Field(default_factory=dict)  # noqa: N815


class PayResponse(BaseModel):
    """Answer to pay and subscription operations."""

    result: Literal["OK", "KO", "PENDING", "REDIRECT_TO_URL"] = Field(examples=["REDIRECT_TO_URL"])
    resultDescription: str = Field(examples=["The payer must complete the payment on the hosted page"])  # noqa: N815
    paymentId: str | None = Field(examples=["sbx_pay_0123456789abcdef"])  # noqa: N815
    redirectToUrl: str | None = None  # noqa: N815
    redirectToUrlMobile: str | None = None  # noqa: N815
    subscriptionToken: str | None = None  # noqa: N815
    metadata: dict[str, Any] | None = None


class RefundResponse(BaseModel):
    """Answer to a refund."""

    result: Literal["OK", "KO", "PENDING"] = Field(examples=["OK"])
    resultDescription: str | None = Field(default=None, examples=["The refund was executed"])  # noqa: N815
    refundId: str | None = None  # noqa: N815


class AuthorizationTokenResponse(BaseModel):
    """Answer to an authorization token request."""

    result: Literal["OK", "KO", "PENDING", "REDIRECT_TO_URL"]
    resultDescription: str  # noqa: N815
    token: str | None
    redirectToUrl: str | None = None  # noqa: N815
    redirectToUrlMobile: str | None = None  # noqa: N815


class PayByLinkResponse(BaseModel):
    """Answer to a pay-by-link request."""

    resultCode: Literal["OK", "KO"]  # noqa: N815
    resultDescription: str  # noqa: N815
    paymentId: str | None = None  # noqa: N815
    link: str | None


class SubscriptionUpdateResponse(BaseModel):
    """Answer to a subscription update."""

    result: Literal["OK", "KO"]
    resultDescription: str  # noqa: N815
    subscriptionToken: str  # noqa: N815


class SubscriptionStatusResponse(BaseModel):
    """A subscription's status."""

    status: Literal["PENDING", "ACTIVE", "PAST_DUE", "EXPIRED", "CANCELED", "UNKNOWN"]
    subscriptionToken: str  # noqa: N815
    providerName: str  # noqa: N815
    metadata: dict[str, Any] | None = None


class ExpireResponse(BaseModel):
    """Answer to a subscription expiry."""

    result: Literal["OK", "KO"]
    resultDescription: str | None = None  # noqa: N815


class PaymentStatusBody(BaseModel):
    """PaymentStatus (docs/api.md): answered by /status and /check, and pushed to PAYMENT_CALLBACK_URL."""

    status: Literal["ACCEPTED", "FAILED", "PENDING"] = Field(examples=["ACCEPTED"])
    paymentId: str | None = Field(examples=["sbx_pay_0123456789abcdef"])  # noqa: N815
    shopTransactionId: str | None = Field(examples=["order-1001"])  # noqa: N815
    providerName: str = Field(examples=["sandbox"])  # noqa: N815
    paymentMethod: str | None = Field(default=None, examples=["credit-cards"])  # noqa: N815
    action: Literal["PAYMENT", "REFUND"] = "PAYMENT"
    metadata: dict[str, Any] | None = None

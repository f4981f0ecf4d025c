"""The policy of the two front doors, in one place: which provider serves an operation, and the rules a
payment request must pass, whichever door it came in by (docs/api.md#limits-and-identifiers).

A `/v3` route and a saga command resolve their provider with `provider_for`, and end in the same
`PaymentService` calls, which apply the request rules before anything is stored or sent: redirect URLs,
amounts, what the store can keep (lengths), identifiers, the provider's currencies, payment methods,
intervals and subscription terms; the service also decides idempotency conflicts (`IdempotencyConflict`).
The `/v3` edge also declares most field rules in its schemas (so the OpenAPI document shows them and a
field gets pydantic's precise message), with the same constants; a saga's data is only seen here.
Each refusal is an exception with a neutral message: the `/v3` edge maps it to a status and code
(`http/errors.py: REFUSALS`), a saga command ends in its failure event with the same message, the field
named as the saga names it (`saga/commands.py`; docs/flow-manager.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pgm.domain.money import amount_problem, currency_problem
from pgm.providers.base import (
    MAX_SUBSCRIPTION_PAYMENTS,
    Operation,
    PayRequest,
    ProviderAdapter,
    RefundRequest,
    SubscriptionInfo,
)
from pgm.providers.registry import ProviderRegistry

# What the store keeps (store/models.py): references and identifiers are String(255), payment methods
# String(64). A longer value would fail its INSERT on PostgreSQL (SQLite does not enforce lengths).
MAX_REFERENCE_LENGTH = 255
MAX_PAYMENT_METHOD_LENGTH = 64
MAX_URL_LENGTH = 2048
MAX_INTERVAL_COUNT = 1000
# Characters no provider's identifier contains, and that would change the meaning of a provider URL
# if one slipped through unencoded: control characters, whitespace, and the URL delimiters.
_FORBIDDEN_IN_IDENTIFIERS = frozenset("/\\?#")


class RequestRefused(Exception):
    """The request breaks a rule: `field` is its `/v3` name (None when no single field is at fault)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ProviderNotFound(Exception):
    """The named provider is unknown or not enabled."""


class NotOffered(Exception):
    """The provider does not offer the operation, or the payment method."""


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request (never raised for a saga, whose key is
    its own id: a delivery that differs gets the first outcome again, docs/flow-manager.md)."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used for a different request")


# Pay-like operations whose subscription terms must say how often to charge, and the one that charges
# a stored payment method again (its token).
_SUBSCRIBING = frozenset({Operation.SUBSCRIPTION_SCHEDULE, Operation.SUBSCRIPTION_START})


def provider_for(
    registry: ProviderRegistry, name: str, operation: Operation, payment_method: str | None = None
) -> ProviderAdapter:
    """The enabled provider `name` if it offers `operation` (and `payment_method`, when one is named);
    raises ProviderNotFound or NotOffered otherwise."""
    adapter = registry.get(name)
    if adapter is None:
        enabled = ", ".join(registry.names) or "none"
        raise ProviderNotFound(f"provider {name!r} is unknown or not enabled (enabled: {enabled})")
    if operation not in adapter.capabilities.operations:
        raise NotOffered(f"provider {adapter.name} does not support {operation.value}")
    if payment_method is not None:
        offers_payment_method(adapter, operation, payment_method)
    return adapter


def offers_payment_method(adapter: ProviderAdapter, operation: Operation, method: str) -> None:
    """Raise NotOffered unless the provider takes this payment method for the operation."""
    capabilities = adapter.capabilities
    if method not in capabilities.payment_methods:
        supported = ", ".join(sorted(capabilities.payment_methods))
        raise NotOffered(
            f"provider {adapter.name} does not support payment method {method!r} for {operation.value} "
            f"(supported: {supported})"
        )


def redirect_url_problem(value: str) -> str | None:
    """Why `value` cannot be a redirect URL, or None. The payer is sent there from a page on our origin:
    nothing but an absolute http(s) URL, so never `javascript:` or `data:`."""
    if len(value) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if not value.lower().startswith(("http://", "https://")) or any(c.isspace() or ord(c) < 32 for c in value):
        return "must be an absolute http(s) URL"
    if len(value.split("://", 1)[1]) == 0:
        return "must be an absolute http(s) URL"
    return None


def identifier_problem(value: str) -> str | None:
    """Why `value` cannot be a provider's identifier (a paymentId, a subscription token), or None."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_REFERENCE_LENGTH:
        return f"must be at most {MAX_REFERENCE_LENGTH} characters"
    if value in (".", ".."):
        return "is not an identifier"
    if any(c.isspace() or not c.isprintable() or c in _FORBIDDEN_IN_IDENTIFIERS for c in value):
        return "must not contain spaces, control characters, '/', '\\', '?' or '#'"
    return None


def reference_problem(value: str) -> str | None:
    """Why `value` cannot be a merchant reference (shopTransactionId), or None."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_REFERENCE_LENGTH:
        return f"must be at most {MAX_REFERENCE_LENGTH} characters"
    return None


def check_pay_request(adapter: ProviderAdapter, operation: Operation, request: PayRequest) -> None:
    """Apply every rule to a pay-like request; raise RequestRefused naming the first one broken (NotOffered
    for a payment method the provider does not take)."""
    required_terms(operation, request.subscription)
    _refuse(amount_problem(request.amount), "amount")
    _refuse(currency_problem(request.currency), "currency")
    _refuse(_prefixed("shopTransactionId", reference_problem(request.shop_transaction_id)), "shopTransactionId")
    for name, url in (
        ("successRedirectUrl", request.success_redirect_url),
        ("failureRedirectUrl", request.failure_redirect_url),
    ):
        if url is not None:
            _refuse(_prefixed(name, redirect_url_problem(url)), name)
    method = request.payment_method
    if not method or len(method) > MAX_PAYMENT_METHOD_LENGTH:
        raise RequestRefused(f"paymentMethod must be 1 to {MAX_PAYMENT_METHOD_LENGTH} characters", "paymentMethod")
    if operation is not Operation.PAY_BY_LINK:
        offers_payment_method(adapter, operation, method)
    check_terms(adapter, request.currency, request.subscription)


def required_terms(operation: Operation, subscription: SubscriptionInfo | None) -> None:
    """What a subscription operation cannot do without: how often to charge (to schedule or start one), the
    stored payment method's token (to pay again)."""
    if operation is Operation.SUBSCRIPTION_PAY and (subscription is None or not subscription.token):
        raise RequestRefused("subscriptionInfo.token is required", "subscriptionInfo.token")
    if operation in _SUBSCRIBING and (subscription is None or subscription.interval is None):
        raise RequestRefused("subscriptionInfo.interval is required", "subscriptionInfo.interval")


def check_terms(adapter: ProviderAdapter, currency: str, subscription: SubscriptionInfo | None) -> None:
    """The provider takes this currency and these subscription terms (their limits: interval count 1 to
    MAX_INTERVAL_COUNT, expiresAfter 1 to MAX_SUBSCRIPTION_PAYMENTS)."""
    if currency not in adapter.capabilities.currencies:
        accepted = ", ".join(sorted(adapter.capabilities.currencies))
        raise RequestRefused(f"provider {adapter.name} accepts currencies {accepted}", "currency")
    if subscription is None:
        return
    if subscription.token is not None:
        _refuse(_prefixed("subscriptionInfo.token", identifier_problem(subscription.token)), "subscriptionInfo.token")
    interval = subscription.interval
    if interval is not None and interval not in adapter.capabilities.intervals:
        accepted = ", ".join(sorted(adapter.capabilities.intervals)) or "none"
        raise RequestRefused(f"provider {adapter.name} accepts intervals {accepted}", "subscriptionInfo.interval")
    count = subscription.interval_count
    if count is not None and not 1 <= count <= MAX_INTERVAL_COUNT:
        raise RequestRefused(
            f"subscriptionInfo.intervalCount must be from 1 to {MAX_INTERVAL_COUNT}", "subscriptionInfo.intervalCount"
        )
    expires = subscription.expires_after
    if expires is not None and not 1 <= expires <= MAX_SUBSCRIPTION_PAYMENTS:
        raise RequestRefused(
            f"subscriptionInfo.expiresAfter must be an integer from 1 to {MAX_SUBSCRIPTION_PAYMENTS}",
            "subscriptionInfo.expiresAfter",
        )


def check_refund_request(request: RefundRequest) -> None:
    """Apply the rules of a refund; raise RequestRefused naming the first one broken."""
    _refuse(amount_problem(request.amount), "amount")
    _refuse(currency_problem(request.currency), "currency")
    _refuse(_prefixed("paymentId", identifier_problem(request.payment_id)), "paymentId")


def request_digest(request: PayRequest) -> str:
    """A fingerprint of everything a pay-like request asks for (SHA-256 of its canonical JSON): a key
    reused with any difference (payment method, providerData, redirect URLs, terms) is a conflict."""
    subscription = request.subscription
    content: dict[str, Any] = {
        "amount": request.amount,
        "currency": request.currency,
        "shopTransactionId": request.shop_transaction_id,
        "paymentMethod": request.payment_method,
        "successRedirectUrl": request.success_redirect_url,
        "failureRedirectUrl": request.failure_redirect_url,
        "providerData": _plain(request.provider_data),
        "subscriptionInfo": None
        if subscription is None
        else {
            "token": subscription.token,
            "interval": subscription.interval.value if subscription.interval else None,
            "intervalCount": subscription.interval_count,
            "expiresAfter": subscription.expires_after,
        },
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _prefixed(name: str, problem: str | None) -> str | None:
    return f"{name} {problem}" if problem else None


def _refuse(problem: str | None, field: str) -> None:
    if problem:
        raise RequestRefused(problem, field)

"""Adapter for Stripe: Checkout Sessions for pay and provider-managed subscriptions, Payment Links for
pay-by-link, Refunds, and webhooks verified with `Stripe-Signature` (with STRIPE_WEBHOOK_SECRET) or,
without it, confirmed by fetching the event they name from Stripe's API.

It uses the official SDK's async client (`StripeClient`), sending through the PGM's own HTTP client
(pgm.outbound, as the SDK's custom `HTTPClient`), so no call blocks the event loop; every result is
turned into a plain dict at once, so a malformed answer is a missing key we detect, never an attribute
error. Every POST carries an `Idempotency-Key`, every call the pinned
`Stripe-Version` and the provider time-out, and the SDK's own retries are off: a lost answer is left
UNKNOWN and settled by a lookup (docs/reliability.md), never by a blind retry.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe
from stripe.params import (
    PaymentLinkCreateParams,
    PaymentLinkListParams,
    PriceCreateParams,
    RefundCreateParams,
    RefundListParams,
)
from stripe.params.checkout import SessionCreateParams, SessionListParams

from pgm.config import ConfigurationError, Settings
from pgm.crypto import timestamped_hmac
from pgm.domain.statuses import Status
from pgm.outbound import HttpClient, NoAnswer, Transport
from pgm.providers.base import (
    CallbackAnswer,
    CallbackRequest,
    Capabilities,
    Interval,
    InvalidCallback,
    InvalidProviderData,
    ListedRefund,
    Notification,
    Operation,
    OutcomeUnknown,
    PaymentLookup,
    PayRequest,
    PayResult,
    PayResultCode,
    ProviderAdapter,
    ProviderRejected,
    RefundRequest,
    RefundResult,
    Subject,
    SubscriptionLookup,
    SubscriptionState,
)

# STRIPE_WEBHOOK_SECRET is recommended, not required: the old PGM's environment has none (docs/migration.md).
REQUIRED_VARIABLES: tuple[str, ...] = ("STRIPE_PRIVATE_KEY",)
EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
log = logging.getLogger("pgm.providers.stripe")
DEFAULT_BASE_URL = "https://api.stripe.com"
# Pinned: the shapes this adapter reads are those of this version (the one stripe-python 16.1.0 targets).
STRIPE_VERSION = "2026-10-28.endive"
SIGNATURE_HEADER = "stripe-signature"
SIGNATURE_TOLERANCE_SECONDS = 300
# How far back find_payment looks for a session whose creation answer was lost. Reconciliation asks
# within hours of the attempt, far inside this window.
LOOKBACK_SECONDS = 7 * 24 * 3600
PAGE_SIZE = 100
MAX_PAGES = 50
PRODUCT_NAME_MAX = 250
METADATA_SHOP_ID = "shopTransactionId"
METADATA_KEY = "pgmIdempotencyKey"
METADATA_PAYMENT_ID = "pgmPaymentId"
# subscriptionInfo.expiresAfter, carried by the session and the subscription until the subscription gets its end.
METADATA_EXPIRES_AFTER = "pgmExpiresAfter"

CAPABILITIES = Capabilities(
    operations=frozenset(
        {
            Operation.PAY,
            Operation.REFUND,
            Operation.SUBSCRIPTION_SCHEDULE,
            Operation.SUBSCRIPTION_STATUS,
            Operation.SUBSCRIPTION_EXPIRE,
            Operation.PAY_BY_LINK,
            Operation.STATUS,
            Operation.CALLBACK,
        }
    ),
    payment_methods=frozenset({"credit-cards", "pay-pal"}),
    intervals=frozenset({Interval.MONTH}),
    currencies=frozenset({"EUR"}),
    lists_refunds=True,
)

# Our payment method path segment → Stripe's payment_method_types value.
PAYMENT_METHOD_TYPES = {"credit-cards": "card", "pay-pal": "paypal"}

# Checkout Session (status, payment_status) → ours. The first three rows are the reference's mapping;
# `complete` + `unpaid` is a delayed-notification method still settling (async_payment_* follows), and
# `no_payment_required` is a session that owes nothing (a zero first invoice), which is a success.
CHECKOUT_STATUS: dict[tuple[str, str], Status] = {
    ("open", "unpaid"): Status.PENDING,
    ("complete", "paid"): Status.ACCEPTED,
    ("expired", "unpaid"): Status.FAILED,
    ("complete", "unpaid"): Status.PENDING,
    ("complete", "no_payment_required"): Status.ACCEPTED,
    ("open", "no_payment_required"): Status.PENDING,
    ("expired", "no_payment_required"): Status.FAILED,
}

# Refund.status → ours (https://docs.stripe.com/api/refunds/object#refund_object-status).
REFUND_STATUS: dict[str, Status] = {
    "pending": Status.PENDING,
    "requires_action": Status.PENDING,
    "succeeded": Status.ACCEPTED,
    "failed": Status.FAILED,
    "canceled": Status.FAILED,
}

# Subscription.status → ours. `unpaid` keeps the subscription but stops trying: past due for the
# merchant. `paused` (a trial ended without a payment method) waits for the payer: pending.
SUBSCRIPTION_STATE: dict[str, SubscriptionState] = {
    "incomplete": SubscriptionState.PENDING,
    "trialing": SubscriptionState.ACTIVE,
    "active": SubscriptionState.ACTIVE,
    "past_due": SubscriptionState.PAST_DUE,
    "unpaid": SubscriptionState.PAST_DUE,
    "paused": SubscriptionState.PENDING,
    "canceled": SubscriptionState.CANCELED,
    "incomplete_expired": SubscriptionState.EXPIRED,
}

# Webhook event type → the payment status it reports for the session in `data.object`.
SESSION_EVENTS: dict[str, Status | None] = {
    # None: read it from the session's own (status, payment_status), as a completed session may still settle.
    "checkout.session.completed": None,
    "checkout.session.async_payment_succeeded": Status.ACCEPTED,
    "checkout.session.async_payment_failed": Status.FAILED,
    "checkout.session.expired": Status.FAILED,
}
# refund.created also reports refunds made in the Dashboard, which carry none of the PGM's metadata.
REFUND_EVENTS = frozenset({"refund.created", "charge.refund.updated", "refund.updated", "refund.failed"})

T = TypeVar("T")


class SdkHttpClient(stripe.HTTPClient):
    """The SDK's requests sent through our client: aiohttp directly (the SDK's own HTTPX client costs about
    three times the CPU per request), our time-outs, our request log line for HTTP_LOG_LEVEL=basic, and a
    transport tests can replace. Only the async half exists: the adapter never calls the SDK synchronously."""

    name = "pgm"

    def __init__(self, client: HttpClient) -> None:
        super().__init__()
        self._client = client

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        body = post_data.encode() if isinstance(post_data, str) else post_data
        try:
            response = await self._client.request(method.upper(), url, headers=headers, content=body)
        except NoAnswer as exc:
            # Never retried (max_network_retries=0): the adapter reports the outcome as unknown.
            lost = stripe.APIConnectionError(f"Stripe gave no answer ({exc})", should_retry=False)  # type: ignore[no-untyped-call]
            raise lost from exc
        return response.content, response.status_code, response.headers

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[AsyncIterator[bytes], int, Mapping[str, str]]:
        content, status, answer_headers = await self.request_async(method, url, headers, post_data)

        async def whole() -> AsyncIterator[bytes]:
            yield content

        return whole(), status, answer_headers

    async def close_async(self) -> None:
        await self._client.aclose()

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)


class StripeAdapter(ProviderAdapter):
    """Stripe behind the common adapter interface."""

    name = "stripe"
    capabilities = CAPABILITIES

    def __init__(
        self,
        api_key: str,
        webhook_secrets: list[str],
        base_url: str,
        timeout_seconds: float,
        clock: Callable[[], float] = time.time,
        *,
        transport: Transport | None = None,
    ) -> None:
        self._http = SdkHttpClient(HttpClient(timeout_seconds, transport=transport))
        self._client = stripe.StripeClient(
            api_key,
            stripe_version=STRIPE_VERSION,
            base_addresses={"api": base_url.rstrip("/")},
            max_network_retries=0,
            http_client=self._http,
        )
        self._webhook_secrets = webhook_secrets
        self._clock = clock

    async def aclose(self) -> None:
        """Close the SDK's HTTP client."""
        await self._http.close_async()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Validate providerData and the redirect URLs Checkout needs before anything is stored."""
        if isinstance(request, RefundRequest):
            return
        _product_name(request)
        _buyer_email(request)
        _interval_count(request)
        if operation in (Operation.PAY, Operation.SUBSCRIPTION_SCHEDULE) and not request.success_redirect_url:
            raise InvalidProviderData(
                "successRedirectUrl is required: Stripe Checkout sends the payer back there", field="successRedirectUrl"
            )
        if operation is Operation.PAY_BY_LINK and request.payment_method not in (
            *PAYMENT_METHOD_TYPES,
            "pay-by-link",
        ):
            raise InvalidProviderData(
                f"paymentMethod must be one of {sorted(PAYMENT_METHOD_TYPES)} for Stripe", field="paymentMethod"
            )

    async def pay(self, request: PayRequest) -> PayResult:
        """A Checkout Session in payment mode: the payer pays on Stripe's page."""
        return await self._checkout("payment", request)

    async def schedule_subscription(self, request: PayRequest) -> PayResult:
        """A Checkout Session in subscription mode: Stripe bills monthly once the payer subscribes."""
        return await self._checkout("subscription", request)

    async def pay_by_link(self, request: PayRequest) -> PayResult:
        """A single-use Payment Link for a new Price; the payment settles when the payer pays."""
        self.check(Operation.PAY_BY_LINK, request)
        price_params: PriceCreateParams = {
            "currency": request.currency.lower(),
            "unit_amount": request.amount,
            "product_data": {"name": _product_name(request)},
            "metadata": {METADATA_SHOP_ID: request.shop_transaction_id},
        }
        price = await self._call(
            self._client.v1.prices.create_async(price_params, {"idempotency_key": f"{request.idempotency_key}-price"})
        )
        if not isinstance(price.get("id"), str):
            raise OutcomeUnknown("Stripe answered a price without an id")
        params: PaymentLinkCreateParams = {
            "line_items": [{"price": price["id"], "quantity": 1}],
            "metadata": _metadata(request),
            # One payment per link, as one PGM payment stands for it; Stripe deactivates it once paid.
            "restrictions": {"completed_sessions": {"limit": 1}},
        }
        if request.payment_method in PAYMENT_METHOD_TYPES:
            params["payment_method_types"] = [PAYMENT_METHOD_TYPES[request.payment_method]]
        if request.success_redirect_url:
            params["after_completion"] = {"type": "redirect", "redirect": {"url": request.success_redirect_url}}
        link = await self._call(
            self._client.v1.payment_links.create_async(params, {"idempotency_key": request.idempotency_key})
        )
        if not isinstance(link.get("id"), str) or not isinstance(link.get("url"), str):
            raise OutcomeUnknown("Stripe answered a payment link without an id or a url")
        return PayResult(
            result=PayResultCode.PENDING,
            description="The payment link was created; the payment settles when the payer pays",
            payment_id=link["id"],
            link=link["url"],
        )

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund (part of) the PaymentIntent behind a Checkout Session or Payment Link."""
        intent = await self._payment_intent(request.payment_id)
        if intent is None:
            raise ProviderRejected(f"Stripe holds no successful payment for {request.payment_id} to refund")
        params: RefundCreateParams = {
            "payment_intent": intent,
            "amount": request.amount,
            "metadata": {METADATA_PAYMENT_ID: request.payment_id, METADATA_KEY: request.idempotency_key},
        }
        refund = await self._call(
            self._client.v1.refunds.create_async(params, {"idempotency_key": request.idempotency_key})
        )
        return _refund_result(refund)

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Look a Checkout Session or a Payment Link up."""
        if payment_id.startswith("plink_"):
            return await self._link_lookup(payment_id)
        if not payment_id.startswith("cs_"):
            raise ProviderRejected(f"{payment_id!r} is not a Stripe Checkout Session or Payment Link id")
        session = await self._call(self._client.v1.checkout.sessions.retrieve_async(payment_id))
        lookup = _session_lookup(session)
        if lookup.status is Status.ACCEPTED:
            # A status check may be the first the PGM hears of a completed subscription (no webhook).
            await self._bound_subscription(session)
        return lookup

    async def payment_details(self, payment_id: str) -> PaymentLookup:
        """The lookup, with what was already refunded of a paid one-off payment (its PaymentIntent's refunds)."""
        lookup = await self.payment_status(payment_id)
        intent = lookup.metadata.get("paymentIntentId")
        if lookup.status is not Status.ACCEPTED or not isinstance(intent, str) or lookup.subscription_token:
            return lookup
        succeeded = [
            (refund.refund_id, refund.amount)
            for refund in await self._intent_refunds(intent)
            if refund.status is Status.ACCEPTED
        ]
        return replace(lookup, refunded_amount=sum(amount for _, amount in succeeded), refunds=tuple(succeeded))

    async def list_refunds(self, payment_id: str) -> list[ListedRefund]:
        """Every refund of the PaymentIntent behind a Checkout Session or Payment Link, the Dashboard's too."""
        intent = await self._payment_intent(payment_id)
        return await self._intent_refunds(intent) if intent is not None else []

    async def _intent_refunds(self, intent: str) -> list[ListedRefund]:
        """A PaymentIntent's refunds, every page of them."""

        def refunds(after: str | None) -> Awaitable[Any]:
            params: RefundListParams = {"payment_intent": intent, "limit": PAGE_SIZE}
            if after:
                params["starting_after"] = after
            return self._client.v1.refunds.list_async(params)

        listed: list[ListedRefund] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await self._call(refunds(cursor))
            items = page.get("data")
            if not isinstance(items, list):
                raise OutcomeUnknown("Stripe answered a list without data")
            for item in items:
                status = REFUND_STATUS.get(str(item.get("status"))) if isinstance(item, dict) else None
                if status is not None and isinstance(item.get("id"), str) and isinstance(item.get("amount"), int):
                    listed.append(ListedRefund(item["id"], item["amount"], status))
            if not page.get("has_more") or not items:
                return listed
            cursor = str(items[-1].get("id")) if isinstance(items[-1], dict) else None
        raise OutcomeUnknown("Stripe's list of refunds was too long to read whole")

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Find what we created with this key: a recent Checkout Session, else a Payment Link."""
        since = int(self._clock()) - LOOKBACK_SECONDS

        def sessions(after: str | None) -> Awaitable[Any]:
            params: SessionListParams = {"created": {"gte": since}, "limit": PAGE_SIZE}
            if after:
                params["starting_after"] = after
            return self._client.v1.checkout.sessions.list_async(params)

        def links(after: str | None) -> Awaitable[Any]:
            params: PaymentLinkListParams = {"limit": PAGE_SIZE}
            if after:
                params["starting_after"] = after
            return self._client.v1.payment_links.list_async(params)

        session = await self._scan(sessions, idempotency_key)
        if session is not None:
            link_id = session.get("payment_link")
            # Stripe copies a link's metadata to the sessions it opens: the payment is the link.
            return (
                await self._link_lookup(link_id) if isinstance(link_id, str) and link_id else _session_lookup(session)
            )
        link = await self._scan(links, idempotency_key)
        return await self._link_lookup(link["id"]) if link is not None else None

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """Look a refund up by its id, or among the payment's refunds by the key it was created with."""
        if refund_id:
            return _refund_result(await self._call(self._client.v1.refunds.retrieve_async(refund_id)))
        intent = await self._payment_intent(payment_id)
        if intent is None:
            # Nothing was paid, so nothing can have been refunded.
            return None

        def refunds(after: str | None) -> Awaitable[Any]:
            params: RefundListParams = {"payment_intent": intent, "limit": PAGE_SIZE}
            if after:
                params["starting_after"] = after
            return self._client.v1.refunds.list_async(params)

        refund = await self._scan(refunds, idempotency_key)
        return _refund_result(refund) if refund is not None else None

    async def subscription_status(self, token: str) -> SubscriptionLookup:
        """Where a subscription stands at Stripe."""
        return _subscription(await self._call(self._client.v1.subscriptions.retrieve_async(token)))

    async def expire_subscription(self, token: str, shop_transaction_id: str | None) -> SubscriptionLookup:
        """Cancel a subscription now (no further invoices); an already ended one is left as it is."""
        subscription = await self._call(self._client.v1.subscriptions.retrieve_async(token))
        owner = (subscription.get("metadata") or {}).get(METADATA_SHOP_ID)
        if shop_transaction_id and owner != shop_transaction_id:
            # Never cancel someone else's subscription because of a mistyped token.
            raise ProviderRejected(f"subscription {token} does not belong to shopTransactionId {shop_transaction_id}")
        if subscription.get("status") in ("canceled", "incomplete_expired"):
            return _subscription(subscription)
        return _subscription(await self._call(self._client.v1.subscriptions.cancel_async(token)))

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Read a webhook's event: the signed body when STRIPE_WEBHOOK_SECRET is set (`Stripe-Signature`,
        300 s tolerance), otherwise the event Stripe's API returns for the id the body names."""
        if self._webhook_secrets:
            try:
                timestamped_hmac.verify(
                    callback.headers.get(SIGNATURE_HEADER),
                    callback.body,
                    self._webhook_secrets,
                    now=callback.received_at,
                    tolerance_seconds=SIGNATURE_TOLERANCE_SECONDS,
                )
            except timestamped_hmac.SignatureError as exc:
                raise InvalidCallback(str(exc)) from exc
            try:
                event = json.loads(callback.body)
            except ValueError as exc:
                raise InvalidCallback("the signed callback is not a Stripe event") from exc
        else:
            event = await self._fetched_event(callback.body)
        try:
            event_id, event_type, obj = str(event["id"]), str(event["type"]), event["data"]["object"]
            if not isinstance(obj, dict):
                raise TypeError("data.object is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCallback("the callback is not a Stripe event") from exc
        if event_type in SESSION_EVENTS:
            notifications = _session_notification(event_id, event_type, obj)
            if event_type == "checkout.session.completed":
                await self._bound_subscription(obj)
            return notifications
        if event_type in REFUND_EVENTS and isinstance(obj.get("id"), str):
            payment_id = (obj.get("metadata") or {}).get(METADATA_PAYMENT_ID)
            if not isinstance(payment_id, str) and isinstance(obj.get("payment_intent"), str):
                # Made in the Dashboard: none of our metadata, only the PaymentIntent that moved the money.
                payment_id = await self._payment_of_intent(obj["payment_intent"])
            amount = obj.get("amount")
            return [
                Notification(
                    event_id,
                    Subject.REFUND,
                    payment_id=payment_id,
                    status=REFUND_STATUS.get(str(obj.get("status"))),
                    refund_id=obj["id"],
                    amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
                )
            ]
        # Renewal invoices and other events change no payment of ours: acknowledged, nothing to apply.
        return []

    async def _bound_subscription(self, session: Mapping[str, Any]) -> None:
        """End a subscription created with expiresAfter after that many billing periods.

        Checkout cannot give a subscription an end when it creates it, so the count travels in the
        session's and the subscription's metadata, and once the subscription exists it gets `cancel_at` =
        billing cycle anchor + expiresAfter periods: Stripe bills exactly expiresAfter invoices, then
        cancels at the end of the last period. Idempotent: a subscription that already ends is left alone.
        """
        if (session.get("metadata") or {}).get(METADATA_EXPIRES_AFTER) is None:
            return
        subscription_id = session.get("subscription")
        if isinstance(subscription_id, dict):
            subscription_id = subscription_id.get("id")
        if not isinstance(subscription_id, str) or not subscription_id:
            return
        subscription = await self._call(self._client.v1.subscriptions.retrieve_async(subscription_id))
        if subscription.get("cancel_at") or subscription.get("status") in ("canceled", "incomplete_expired"):
            return
        raw_count = (subscription.get("metadata") or {}).get(METADATA_EXPIRES_AFTER)
        if not isinstance(raw_count, str) or not raw_count.isdigit() or int(raw_count) < 1:
            return
        count = int(raw_count)
        await self._call(
            self._client.v1.subscriptions.update_async(
                subscription_id,
                {"cancel_at": _end_after(subscription, count), "proration_behavior": "none"},
                {"idempotency_key": f"{subscription_id}-end-after-{count}"},
            )
        )

    async def _fetched_event(self, body: bytes) -> dict[str, Any]:
        """Without a webhook secret nothing in the body can be trusted but the event id it names: the event
        itself comes from Stripe's API, so a forged body changes nothing (an unknown id is refused)."""
        try:
            claimed = json.loads(body)
            event_id = claimed["id"] if isinstance(claimed, dict) else None
        except ValueError:
            event_id = None
        if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
            raise InvalidCallback("the callback does not name a Stripe event")
        try:
            return await self._call(self._client.v1.events.retrieve_async(event_id))
        except ProviderRejected as exc:
            raise InvalidCallback(f"Stripe does not know the event {event_id}") from exc

    def callback_answer(self) -> CallbackAnswer:
        """Stripe only needs a 2xx; a small JSON body helps when reading delivery logs in the Dashboard."""
        return CallbackAnswer(200, b'{"received":true}', "application/json")

    async def _checkout(self, mode: str, request: PayRequest) -> PayResult:
        self.check(Operation.PAY if mode == "payment" else Operation.SUBSCRIPTION_SCHEDULE, request)
        price_data: dict[str, Any] = {
            "currency": request.currency.lower(),
            "unit_amount": request.amount,
            "product_data": {"name": _product_name(request)},
        }
        if mode == "subscription":
            price_data["recurring"] = {"interval": "month", "interval_count": _interval_count(request)}
        params: dict[str, Any] = {
            "mode": mode,
            "line_items": [{"price_data": price_data, "quantity": 1}],
            "payment_method_types": [PAYMENT_METHOD_TYPES[request.payment_method]],
            "success_url": request.success_redirect_url,
            "client_reference_id": request.shop_transaction_id,
            "metadata": _metadata(request),
        }
        # Copied to what Stripe creates on completion, so refunds and renewals carry our reference too.
        child = "payment_intent_data" if mode == "payment" else "subscription_data"
        params[child] = {"metadata": {METADATA_SHOP_ID: request.shop_transaction_id}}
        expires_after = request.subscription.expires_after if request.subscription else None
        if mode == "subscription" and expires_after:
            params["metadata"][METADATA_EXPIRES_AFTER] = str(expires_after)
            params[child]["metadata"][METADATA_EXPIRES_AFTER] = str(expires_after)
        if request.failure_redirect_url:
            params["cancel_url"] = request.failure_redirect_url
        email = _buyer_email(request)
        if email:
            params["customer_email"] = email
        typed: SessionCreateParams = params  # type: ignore[assignment]
        session = await self._call(
            self._client.v1.checkout.sessions.create_async(typed, {"idempotency_key": request.idempotency_key})
        )
        if not isinstance(session.get("id"), str) or not isinstance(session.get("url"), str):
            raise OutcomeUnknown("Stripe answered a Checkout Session without an id or a url")
        return PayResult(
            result=PayResultCode.REDIRECT_TO_URL,
            description="The payer must complete the payment on Stripe Checkout",
            payment_id=session["id"],
            redirect_url=session["url"],
            redirect_url_mobile=session["url"],
        )

    async def _payment_intent(self, payment_id: str) -> str | None:
        """The PaymentIntent that moved the money of a session or link; None when nothing was paid."""
        if payment_id.startswith("plink_"):
            session = await self._paid_link_session(payment_id)
        elif payment_id.startswith("cs_"):
            session = await self._call(self._client.v1.checkout.sessions.retrieve_async(payment_id))
        else:
            raise ProviderRejected(f"{payment_id!r} is not a Stripe Checkout Session or Payment Link id")
        if session is None:
            return None
        if session.get("mode") == "subscription":
            raise ProviderRejected(
                "refunds of subscription invoices are not made through the PGM; refund the invoice in Stripe"
            )
        intent = session.get("payment_intent")
        if isinstance(intent, dict):
            intent = intent.get("id")
        return intent if isinstance(intent, str) and session.get("payment_status") == "paid" else None

    async def _payment_of_intent(self, intent: str) -> str | None:
        """Our payment id (the Checkout Session's, or its Payment Link's) for the PaymentIntent a session
        created; None when no Checkout Session did (a subscription's invoice, a payment made elsewhere)."""
        page = await self._call(self._client.v1.checkout.sessions.list_async({"payment_intent": intent, "limit": 1}))
        sessions = page.get("data")
        if not isinstance(sessions, list):
            raise OutcomeUnknown("Stripe answered a list without data")
        session = sessions[0] if sessions and isinstance(sessions[0], dict) else None
        if session is None:
            return None
        link = session.get("payment_link")
        identifier = link if isinstance(link, str) and link else session.get("id")
        return identifier if isinstance(identifier, str) else None

    async def _paid_link_session(self, link_id: str) -> dict[str, Any] | None:
        page = await self._call(
            self._client.v1.checkout.sessions.list_async({"payment_link": link_id, "status": "complete", "limit": 10})
        )
        sessions = page.get("data")
        if not isinstance(sessions, list):
            raise OutcomeUnknown("Stripe answered a list without data")
        paid = [s for s in sessions if isinstance(s, dict) and s.get("payment_status") == "paid"]
        return paid[0] if paid else None

    async def _link_lookup(self, link_id: str) -> PaymentLookup:
        link = await self._call(self._client.v1.payment_links.retrieve_async(link_id))
        if not isinstance(link.get("active"), bool):
            raise OutcomeUnknown("Stripe answered a payment link without its active flag")
        session = await self._paid_link_session(link_id)
        # An active link can still be paid; one deactivated without a payment never will be.
        status = Status.ACCEPTED if session is not None else Status.PENDING if link["active"] else Status.FAILED
        metadata = link.get("metadata") or {}
        return PaymentLookup(
            status=status,
            payment_id=link_id,
            shop_transaction_id=metadata.get(METADATA_SHOP_ID),
            amount=session.get("amount_total") if session else None,
            metadata={
                key: value
                for key, value in {
                    "checkoutSessionId": session.get("id") if session else None,
                    "paymentIntentId": session.get("payment_intent") if session else None,
                    "linkActive": link["active"],
                }.items()
                if value is not None
            },
        )

    async def _scan(self, page: Callable[[str | None], Awaitable[Any]], idempotency_key: str) -> dict[str, Any] | None:
        """Page through a Stripe list (newest first) for the object whose metadata carries our key."""
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            answer = await self._call(page(cursor))
            items = answer.get("data")
            if not isinstance(items, list):
                raise OutcomeUnknown("Stripe answered a list without data")
            for item in items:
                if isinstance(item, dict) and (item.get("metadata") or {}).get(METADATA_KEY) == idempotency_key:
                    return item
            if not answer.get("has_more") or not items:
                return None
            cursor = str(items[-1].get("id")) if isinstance(items[-1], dict) else None
            if not cursor:
                raise OutcomeUnknown("Stripe answered a list item without an id")
        # Too many objects to be sure: better unknown than a wrong "never created".
        raise OutcomeUnknown("Stripe's list was too long to search for the lost payment")

    async def _call(self, call: Awaitable[Any]) -> dict[str, Any]:
        """Await an SDK call; its result as a plain dict, its failures as our three outcomes."""
        try:
            result = await call
        except stripe.APIConnectionError as exc:
            raise OutcomeUnknown("Stripe could not be reached or did not answer in time") from exc
        except stripe.APIError as exc:
            # 5xx, or a 2xx whose body is not JSON: the request may or may not have been executed.
            raise OutcomeUnknown(f"Stripe answered HTTP {exc.http_status} without a usable result") from exc
        except stripe.RateLimitError as exc:
            raise OutcomeUnknown("Stripe is rate limiting requests (HTTP 429)") from exc
        except stripe.IdempotencyError as exc:
            if exc.http_status == 409:
                # Another request with this key is still running at Stripe: its outcome is unknown.
                raise OutcomeUnknown("Stripe is still executing a request with this idempotency key") from exc
            raise ProviderRejected(_refusal(exc)) from exc
        except stripe.AuthenticationError as exc:
            # Never echo Stripe's message here: it repeats part of the key.
            raise ProviderRejected("Stripe refused the API key (HTTP 401): check STRIPE_PRIVATE_KEY") from exc
        except stripe.StripeError as exc:
            if exc.http_status is None or exc.http_status >= 500:
                raise OutcomeUnknown(f"Stripe answered HTTP {exc.http_status}") from exc
            raise ProviderRejected(_refusal(exc)) from exc
        as_dict = getattr(result, "to_dict", None)
        if as_dict is None:
            raise OutcomeUnknown("Stripe answered something that is not an object")
        data: dict[str, Any] = as_dict()
        return data


def _refusal(exc: stripe.StripeError) -> str:
    error = exc.error
    code = getattr(error, "code", None) if error is not None else None
    message = getattr(error, "message", None) if error is not None else None
    detail = f" {code}" if code else ""
    suffix = f": {message}" if message else ""
    return f"Stripe refused the request (HTTP {exc.http_status}{detail}){suffix}"


def _product_name(request: PayRequest) -> str:
    name = request.provider_data.get("productName")
    if name is None:
        return f"Order {request.shop_transaction_id}"[:PRODUCT_NAME_MAX]
    if not isinstance(name, str) or not name.strip() or len(name) > PRODUCT_NAME_MAX:
        raise InvalidProviderData(
            f"providerData.productName must be a non-empty string of at most {PRODUCT_NAME_MAX} characters",
            field="providerData.productName",
        )
    return name


def _buyer_email(request: PayRequest) -> str | None:
    email = request.provider_data.get("buyerEmail")
    if email is None:
        return None
    if not isinstance(email, str) or "@" not in email or len(email) > 512:
        raise InvalidProviderData("providerData.buyerEmail must be an e-mail address", field="providerData.buyerEmail")
    return email


def _interval_count(request: PayRequest) -> int:
    count = request.subscription.interval_count if request.subscription else None
    if count is None:
        return 1
    # Stripe bills at most yearly: 12 months is the longest monthly interval it accepts.
    if not 1 <= count <= 12:
        raise InvalidProviderData(
            "subscriptionInfo.intervalCount must be from 1 to 12 months for Stripe",
            field="subscriptionInfo.intervalCount",
        )
    return count


def _add_months(moment: int, months: int) -> int:
    """`moment` plus whole months, the day clamped to the month's length as Stripe bills (Jan 31 → Feb 28)."""
    start = datetime.fromtimestamp(moment, UTC)
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def _end_after(subscription: Mapping[str, Any], payments: int) -> int:
    """When a subscription has billed `payments` periods: its billing cycle anchor plus that many intervals."""
    anchor = subscription.get("billing_cycle_anchor")
    try:
        recurring = subscription["items"]["data"][0]["price"]["recurring"]
        interval, interval_count = str(recurring["interval"]), int(recurring.get("interval_count") or 1)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise OutcomeUnknown("Stripe answered a subscription without its billing interval") from exc
    if not isinstance(anchor, int):
        raise OutcomeUnknown("Stripe answered a subscription without its billing cycle anchor")
    periods = payments * interval_count
    if interval == "month":
        return _add_months(anchor, periods)
    if interval == "year":
        return _add_months(anchor, 12 * periods)
    if interval in ("week", "day"):
        return anchor + periods * (7 if interval == "week" else 1) * 24 * 3600
    raise OutcomeUnknown(f"Stripe answered a subscription with the unknown interval {interval!r}")


def _metadata(request: PayRequest) -> dict[str, str]:
    # The key lets find_payment recognise what a lost answer created; it is already a hash, never ours verbatim.
    return {METADATA_SHOP_ID: request.shop_transaction_id, METADATA_KEY: request.idempotency_key}


def _session_status(session: Mapping[str, Any]) -> Status:
    status = CHECKOUT_STATUS.get((str(session.get("status")), str(session.get("payment_status"))))
    if status is None:
        raise OutcomeUnknown("Stripe answered a Checkout Session with an unknown status")
    return status


def _session_lookup(session: Mapping[str, Any]) -> PaymentLookup:
    if not isinstance(session.get("id"), str):
        raise OutcomeUnknown("Stripe answered a Checkout Session without an id")
    subscription = session.get("subscription")
    intent = session.get("payment_intent")
    metadata = {
        "checkoutStatus": session.get("status"),
        "paymentIntentId": intent.get("id") if isinstance(intent, dict) else intent,
        "subscriptionToken": subscription.get("id") if isinstance(subscription, dict) else subscription,
    }
    return PaymentLookup(
        status=_session_status(session),
        payment_id=session["id"],
        shop_transaction_id=session.get("client_reference_id") or (session.get("metadata") or {}).get(METADATA_SHOP_ID),
        amount=session.get("amount_total"),
        subscription_token=metadata["subscriptionToken"],
        metadata={key: value for key, value in metadata.items() if value is not None},
        currency=str(session["currency"]).upper() if isinstance(session.get("currency"), str) else None,
        # Found again after a lost answer, an open session still takes its payer to Stripe's page.
        redirect_url=session.get("url")
        if session.get("status") == "open" and isinstance(session.get("url"), str)
        else None,
    )


def _session_notification(event_id: str, event_type: str, session: Mapping[str, Any]) -> list[Notification]:
    session_id = session.get("id")
    if not isinstance(session_id, str):
        raise InvalidCallback("the signed Checkout event carries no session id")
    link = session.get("payment_link")
    if isinstance(link, str) and link:
        # A Payment Link can be retried in a new session, so only a paid session says something about it.
        paid = event_type == "checkout.session.async_payment_succeeded" or (
            event_type == "checkout.session.completed" and session.get("payment_status") == "paid"
        )
        return [Notification(event_id, Subject.PAYMENT, payment_id=link, status=Status.ACCEPTED)] if paid else []
    status = SESSION_EVENTS[event_type] or CHECKOUT_STATUS.get(
        (str(session.get("status")), str(session.get("payment_status")))
    )
    subscription = session.get("subscription")
    return [
        Notification(
            event_id,
            Subject.PAYMENT,
            payment_id=session_id,
            status=status,
            token=subscription if isinstance(subscription, str) else None,
        )
    ]


def _refund_result(refund: Mapping[str, Any]) -> RefundResult:
    status = REFUND_STATUS.get(str(refund.get("status")))
    if status is None or not isinstance(refund.get("id"), str):
        raise OutcomeUnknown("Stripe answered a refund without an id or a known status")
    descriptions = {
        Status.ACCEPTED: "The refund was executed",
        Status.FAILED: f"The refund failed at Stripe ({refund.get('failure_reason') or refund.get('status')})",
        Status.PENDING: "The refund was accepted by Stripe; its outcome comes later",
    }
    return RefundResult(status=status, refund_id=refund["id"], description=descriptions[status])


def _subscription(subscription: Mapping[str, Any]) -> SubscriptionLookup:
    if not isinstance(subscription.get("id"), str):
        raise OutcomeUnknown("Stripe answered a subscription without an id")
    stripe_status = str(subscription.get("status"))
    metadata = {
        "stripeStatus": stripe_status,
        "cancelAtPeriodEnd": subscription.get("cancel_at_period_end"),
        "canceledAt": subscription.get("canceled_at"),
        "latestInvoice": subscription.get("latest_invoice"),
    }
    return SubscriptionLookup(
        status=SUBSCRIPTION_STATE.get(stripe_status, SubscriptionState.UNKNOWN),
        token=subscription["id"],
        metadata={key: value for key, value in metadata.items() if value is not None},
    )


def build(settings: Settings, transport: Transport | None = None) -> StripeAdapter:
    """The Stripe adapter from STRIPE_* variables (STRIPE_WEBHOOK_SECRET may list several, comma-separated)."""
    env = settings.provider_env
    base_url = env.get("STRIPE_BASE_URL") or DEFAULT_BASE_URL
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"STRIPE_BASE_URL must be an http(s) URL, got {base_url!r}")
    if not env["STRIPE_PRIVATE_KEY"].startswith(("sk_", "rk_")):
        # A publishable key (pk_...) or a webhook secret pasted here would fail every payment with a 401.
        raise ConfigurationError("STRIPE_PRIVATE_KEY must be a secret or restricted API key (sk_... or rk_...)")
    secrets = [secret.strip() for secret in env.get("STRIPE_WEBHOOK_SECRET", "").split(",") if secret.strip()]
    if not secrets:
        log.warning(
            "STRIPE_WEBHOOK_SECRET is not set: each Stripe webhook is confirmed by fetching its event from "
            "Stripe's API (one more call per webhook); set it to check signatures instead"
        )
    return StripeAdapter(
        api_key=env["STRIPE_PRIVATE_KEY"],
        webhook_secrets=secrets,
        base_url=base_url,
        timeout_seconds=settings.provider_timeout_seconds,
        transport=transport,
    )

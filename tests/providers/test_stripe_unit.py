"""Stripe adapter, pure parts: capabilities, status tables, the webhook signature (known answers, cross-
checked with the official SDK), callback parsing, input checks, and the fake's form decoding."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from pgm.config import ConfigurationError, Settings
from pgm.crypto import timestamped_hmac
from pgm.domain.statuses import Status
from pgm.providers import stripe as adapter_module
from pgm.providers.base import (
    CallbackRequest,
    Interval,
    InvalidCallback,
    InvalidProviderData,
    Notification,
    Operation,
    PayRequest,
    Subject,
    SubscriptionInfo,
    SubscriptionState,
)
from pgm.providers.stripe import (
    CAPABILITIES,
    CHECKOUT_STATUS,
    REFUND_STATUS,
    REQUIRED_VARIABLES,
    STRIPE_VERSION,
    SUBSCRIPTION_STATE,
    StripeAdapter,
    build,
)
from tests.fakes.stripe import API_VERSION, parse_form

SECRET = "whsec_test_known_answer"
TIMESTAMP = 1_700_000_000
BODY = b'{"id":"evt_test_1","object":"event","type":"checkout.session.completed"}'
# HMAC-SHA256(SECRET, "1700000000." + BODY), computed once from Stripe's documented algorithm.
EXPECTED_V1 = "2aa9fb16dc9f137b32168e7d2a6472b7bc4ca06a6943979a2dc83a2e5b6665e1"


def adapter(secrets: list[str] | None = None) -> StripeAdapter:
    """An adapter that is never asked to reach Stripe."""
    return StripeAdapter("sk_test_unit", secrets or [SECRET], "http://127.0.0.1:9", 1.0)


def callback(body: bytes, signature: str | None, received_at: float) -> CallbackRequest:
    """A POST to /v3/stripe/callback as the HTTP edge hands it over."""
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["stripe-signature"] = signature
    return CallbackRequest("POST", "/v3/stripe/callback", {}, headers, body, received_at)


def event(event_type: str, obj: dict[str, Any], event_id: str = "evt_1") -> bytes:
    """A Stripe event body."""
    return json.dumps({"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}}).encode()


def signed(body: bytes, secret: str = SECRET, timestamp: int = TIMESTAMP) -> CallbackRequest:
    """A callback signed the way Stripe signs, received at `TIMESTAMP`."""
    return callback(
        body, stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp), TIMESTAMP
    )


def parse(stripe_adapter: StripeAdapter, request: CallbackRequest) -> list[Notification]:
    """Run the adapter's callback parsing to completion."""
    return asyncio.run(stripe_adapter.parse_callback(request))


def pay_request(**changes: Any) -> PayRequest:
    """A valid Stripe pay request, with `changes`."""
    fields: dict[str, Any] = {
        "amount": 1000,
        "currency": "EUR",
        "shop_transaction_id": "order-1",
        "payment_method": "credit-cards",
        "idempotency_key": "pgm-abc",
        "success_redirect_url": "https://shop.example/ok",
        **changes,
    }
    return PayRequest(**fields)


def test_capabilities_are_exactly_the_reference_table() -> None:
    assert CAPABILITIES.operations == {
        Operation.PAY,
        Operation.REFUND,
        Operation.SUBSCRIPTION_SCHEDULE,
        Operation.SUBSCRIPTION_STATUS,
        Operation.SUBSCRIPTION_EXPIRE,
        Operation.PAY_BY_LINK,
        Operation.STATUS,
        Operation.CALLBACK,
    }
    assert CAPABILITIES.payment_methods == {"credit-cards", "pay-pal"}
    assert CAPABILITIES.intervals == {Interval.MONTH}
    assert CAPABILITIES.currencies == {"EUR"}


def test_checkout_status_table_has_the_reference_rows() -> None:
    assert CHECKOUT_STATUS[("open", "unpaid")] is Status.PENDING
    assert CHECKOUT_STATUS[("complete", "paid")] is Status.ACCEPTED
    assert CHECKOUT_STATUS[("expired", "unpaid")] is Status.FAILED
    # A delayed-notification payment still settling is not a success yet.
    assert CHECKOUT_STATUS[("complete", "unpaid")] is Status.PENDING


def test_refund_status_table() -> None:
    assert REFUND_STATUS == {
        "pending": Status.PENDING,
        "requires_action": Status.PENDING,
        "succeeded": Status.ACCEPTED,
        "failed": Status.FAILED,
        "canceled": Status.FAILED,
    }


def test_subscription_status_table_covers_every_stripe_status() -> None:
    stripe_statuses = {"incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid"}
    assert stripe_statuses | {"paused"} == set(SUBSCRIPTION_STATE)
    assert SUBSCRIPTION_STATE["active"] is SubscriptionState.ACTIVE
    assert SUBSCRIPTION_STATE["past_due"] is SubscriptionState.PAST_DUE
    assert SUBSCRIPTION_STATE["canceled"] is SubscriptionState.CANCELED
    assert SUBSCRIPTION_STATE["incomplete_expired"] is SubscriptionState.EXPIRED
    assert SUBSCRIPTION_STATE["incomplete"] is SubscriptionState.PENDING


def test_pinned_version_is_the_sdks_and_the_fakes() -> None:
    assert STRIPE_VERSION == stripe.api_version == API_VERSION


def test_signature_known_answer_from_the_documented_algorithm() -> None:
    manual = hmac.new(SECRET.encode(), f"{TIMESTAMP}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert manual == EXPECTED_V1
    assert timestamped_hmac.header(SECRET, TIMESTAMP, BODY) == f"t={TIMESTAMP},v1={EXPECTED_V1}"


def test_signature_known_answer_matches_the_official_sdk() -> None:
    sdk_header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, timestamp=TIMESTAMP)
    assert sdk_header == f"t={TIMESTAMP},v1={EXPECTED_V1}"
    # And the SDK's verifier accepts what our routine produces.
    assert stripe.WebhookSignature.verify_header(
        BODY.decode(), timestamped_hmac.header(SECRET, TIMESTAMP, BODY), SECRET, tolerance=None
    )


def test_sdk_signed_event_is_accepted() -> None:
    body = event("checkout.session.completed", {"id": "cs_1", "status": "complete", "payment_status": "paid"})
    [notification] = parse(adapter(), signed(body))
    assert notification.event_id == "evt_1"
    assert (notification.subject, notification.payment_id, notification.status) == (
        Subject.PAYMENT,
        "cs_1",
        Status.ACCEPTED,
    )


@pytest.mark.parametrize(
    ("signature", "received_at", "reason"),
    [
        (f"t={TIMESTAMP},v1={'0' * 64}", TIMESTAMP, "does not match"),
        (None, TIMESTAMP, "missing"),
        (f"t={TIMESTAMP}", TIMESTAMP, "no v1"),
        (f"t=soon,v1={EXPECTED_V1}", TIMESTAMP, "not an integer"),
        (f"t={TIMESTAMP},v1={EXPECTED_V1}", TIMESTAMP + 301, "older than"),
        (f"t={TIMESTAMP},v1={EXPECTED_V1}", TIMESTAMP - 301, "older than"),
        (f"t={TIMESTAMP},v0={EXPECTED_V1}", TIMESTAMP, "no v1"),
    ],
)
def test_forged_missing_or_stale_signature_is_refused(signature: str | None, received_at: float, reason: str) -> None:
    with pytest.raises(InvalidCallback, match=reason):
        parse(adapter(), callback(BODY, signature, received_at))


def test_signature_within_the_300_second_tolerance_is_accepted() -> None:
    [notification] = parse(
        adapter(),
        callback(
            event("checkout.session.expired", {"id": "cs_1"}),
            timestamped_hmac.header(SECRET, TIMESTAMP, event("checkout.session.expired", {"id": "cs_1"})),
            TIMESTAMP + 300,
        ),
    )
    assert notification.status is Status.FAILED


def test_a_signature_from_a_rotated_secret_is_accepted_among_several() -> None:
    body = event("checkout.session.expired", {"id": "cs_1"})
    header = f"t={TIMESTAMP},v1={'1' * 64},v1={timestamped_hmac.compute('whsec_new', TIMESTAMP, body)}"
    notifications = parse(adapter(["whsec_old", "whsec_new"]), callback(body, header, TIMESTAMP))
    assert [n.status for n in notifications] == [Status.FAILED]


def test_signed_body_that_is_not_an_event_is_refused() -> None:
    with pytest.raises(InvalidCallback, match="not a Stripe event"):
        parse(adapter(), signed(b'{"hello": "world"}'))


@pytest.mark.parametrize(
    ("event_type", "session", "status"),
    [
        ("checkout.session.completed", {"status": "complete", "payment_status": "paid"}, Status.ACCEPTED),
        ("checkout.session.completed", {"status": "complete", "payment_status": "unpaid"}, Status.PENDING),
        ("checkout.session.async_payment_succeeded", {"status": "complete", "payment_status": "paid"}, Status.ACCEPTED),
        ("checkout.session.async_payment_failed", {"status": "complete", "payment_status": "unpaid"}, Status.FAILED),
        ("checkout.session.expired", {"status": "expired", "payment_status": "unpaid"}, Status.FAILED),
    ],
)
def test_checkout_events_map_to_payment_statuses(event_type: str, session: dict[str, Any], status: Status) -> None:
    body = event(event_type, {"id": "cs_9", **session, "subscription": "sub_9"}, event_id="evt_9")
    [notification] = parse(adapter(), signed(body))
    assert (notification.payment_id, notification.status, notification.token) == ("cs_9", status, "sub_9")


def test_a_paid_payment_link_session_reports_the_link_and_an_abandoned_one_nothing() -> None:
    paid = {"id": "cs_1", "status": "complete", "payment_status": "paid", "payment_link": "plink_1"}
    [notification] = parse(adapter(), signed(event("checkout.session.completed", paid)))
    assert (notification.payment_id, notification.status) == ("plink_1", Status.ACCEPTED)
    expired = {"id": "cs_2", "status": "expired", "payment_status": "unpaid", "payment_link": "plink_1"}
    # The payer can open the link again, so an expired session does not fail the link.
    assert parse(adapter(), signed(event("checkout.session.expired", expired))) == []


@pytest.mark.parametrize("event_type", ["charge.refund.updated", "refund.updated", "refund.failed"])
def test_refund_events_name_the_refund_and_our_payment(event_type: str) -> None:
    refund = {"id": "re_1", "status": "failed", "metadata": {"pgmPaymentId": "cs_1"}, "payment_intent": "pi_1"}
    [notification] = parse(adapter(), signed(event(event_type, refund)))
    assert (notification.subject, notification.refund_id, notification.payment_id, notification.status) == (
        Subject.REFUND,
        "re_1",
        "cs_1",
        Status.FAILED,
    )


def test_other_events_are_acknowledged_without_notifications() -> None:
    invoice = {"id": "in_1", "billing_reason": "subscription_cycle"}
    assert parse(adapter(), signed(event("invoice.payment_succeeded", invoice))) == []


def test_callback_answer_is_a_2xx() -> None:
    answer = adapter().callback_answer()
    assert answer.status_code == 200
    assert json.loads(answer.body) == {"received": True}


@pytest.mark.parametrize(
    ("operation", "changes", "field"),
    [
        (Operation.PAY, {"success_redirect_url": None}, "successRedirectUrl"),
        (Operation.PAY, {"provider_data": {"productName": ""}}, "providerData.productName"),
        (Operation.PAY, {"provider_data": {"productName": "x" * 251}}, "providerData.productName"),
        (Operation.PAY, {"provider_data": {"buyerEmail": "nobody"}}, "providerData.buyerEmail"),
        (Operation.PAY_BY_LINK, {"payment_method": "satispay"}, "paymentMethod"),
        (
            Operation.SUBSCRIPTION_SCHEDULE,
            {"subscription": SubscriptionInfo(interval=Interval.MONTH, interval_count=13)},
            "subscriptionInfo.intervalCount",
        ),
    ],
)
def test_invalid_input_is_refused_before_anything_is_stored(
    operation: Operation, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidProviderData) as refused:
        adapter().check(operation, pay_request(**changes))
    assert refused.value.field == field


def test_valid_input_passes_the_check() -> None:
    adapter().check(Operation.PAY, pay_request(provider_data={"productName": "Shoes", "buyerEmail": "a@b.example"}))
    adapter().check(Operation.PAY_BY_LINK, pay_request(success_redirect_url=None, payment_method="pay-by-link"))


def test_only_the_key_is_required_the_webhook_secret_is_recommended() -> None:
    assert REQUIRED_VARIABLES == ("STRIPE_PRIVATE_KEY",)


def test_build_reads_several_webhook_secrets_and_refuses_a_non_http_base_url() -> None:
    env = {"STRIPE_PRIVATE_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_a, whsec_b"}
    built = build(Settings(provider_env=env))
    assert built._webhook_secrets == ["whsec_a", "whsec_b"]
    with pytest.raises(ConfigurationError, match="STRIPE_BASE_URL"):
        build(Settings(provider_env={**env, "STRIPE_BASE_URL": "ftp://x"}))
    assert adapter_module.DEFAULT_BASE_URL == "https://api.stripe.com"


def test_fake_decodes_stripe_form_encoding_like_the_sdk_sends_it() -> None:
    body = (
        b"mode=payment&line_items[0][price_data][currency]=eur&line_items[0][price_data][unit_amount]=1000"
        b"&line_items[0][quantity]=1&payment_method_types[0]=card&metadata[shopTransactionId]=o-1"
        b"&expand[]=a&expand[]=b"
    )
    assert parse_form(body) == {
        "mode": "payment",
        "line_items": [{"price_data": {"currency": "eur", "unit_amount": "1000"}, "quantity": "1"}],
        "payment_method_types": ["card"],
        "metadata": {"shopTransactionId": "o-1"},
        "expand": ["a", "b"],
    }


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("anchor", "recurring", "payments", "end"),
    [
        ("2027-01-31T10:00:00", {"interval": "month", "interval_count": 1}, 1, "2027-02-28T10:00:00"),
        ("2027-01-31T10:00:00", {"interval": "month", "interval_count": 1}, 3, "2027-04-30T10:00:00"),
        ("2027-11-15T00:00:00", {"interval": "month", "interval_count": 2}, 3, "2028-05-15T00:00:00"),
        ("2028-02-29T00:00:00", {"interval": "year", "interval_count": 1}, 1, "2029-02-28T00:00:00"),
        ("2027-03-01T00:00:00", {"interval": "week", "interval_count": 2}, 2, "2027-03-29T00:00:00"),
    ],
)
def test_a_subscription_ends_after_that_many_billing_periods_from_its_anchor(
    anchor: str, recurring: dict[str, Any], payments: int, end: str
) -> None:
    subscription = {"billing_cycle_anchor": _utc(anchor), "items": {"data": [{"price": {"recurring": recurring}}]}}
    assert adapter_module._end_after(subscription, payments) == _utc(end)

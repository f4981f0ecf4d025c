"""Pure tests of the Adyen adapter: mapping tables, the notification HMAC, tokens, configuration."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from Adyen import util  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from pgm.config import ConfigurationError, Settings
from pgm.domain.statuses import Status
from pgm.providers import adyen
from pgm.providers.base import (
    CallbackRequest,
    InvalidCallback,
    InvalidProviderData,
    Operation,
    PayRequest,
    RefundRequest,
    Subject,
    SubscriptionInfo,
)
from tests.fakes.adyen import HMAC_KEY, MERCHANT_ACCOUNT, notification_body, sign_item

# Adyen's documented HMAC example (Webhooks, "Verify HMAC signatures"): key, item and expected signature.
DOC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
DOC_ITEM: dict[str, Any] = {
    "pspReference": "7914073381342284",
    "merchantAccountCode": "TestMerchant",
    "merchantReference": "TestPayment-1407325143704",
    "amount": {"value": 1130, "currency": "EUR"},
    "eventCode": "AUTHORISATION",
    "success": "true",
}
DOC_SIGNATURE = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="


def adapter(is_test: bool = True) -> adyen.AdyenAdapter:
    """An adapter that is never asked to call out."""
    return adyen.AdyenAdapter(
        base_url="http://127.0.0.1:9/v71",
        api_key="key",
        merchant_account=MERCHANT_ACCOUNT,
        hmac_key=HMAC_KEY,
        is_test=is_test,
        return_url="http://localhost:3000",
        timeout_seconds=1,
    )


def callback(body: bytes, method: str = "POST") -> CallbackRequest:
    """A callback request as the HTTP edge builds it."""
    return CallbackRequest(method, "/v3/adyen/callback", {}, {"content-type": "application/json"}, body, 0.0)


def item(event: str = "AUTHORISATION", success: str = "true", **fields: Any) -> dict[str, Any]:
    """One notification item for our merchant account."""
    return {
        "merchantAccountCode": MERCHANT_ACCOUNT,
        "eventCode": event,
        "success": success,
        "pspReference": "PSP0000000000001",
        "merchantReference": "order-1",
        "amount": {"value": 1000, "currency": "EUR"},
        "eventDate": "2026-01-01T10:00:00+01:00",
        "additionalData": {},
        **fields,
    }


def parse(body: bytes, is_test: bool = True) -> list[Any]:
    """Run parse_callback synchronously."""
    return asyncio.run(adapter(is_test).parse_callback(callback(body)))


def test_result_codes_map_to_the_documented_statuses() -> None:
    assert adyen.RESULT_CODE_STATUS == {
        "Authorised": Status.ACCEPTED,
        "Refused": Status.FAILED,
        "Error": Status.FAILED,
        "Cancelled": Status.FAILED,
        "Pending": Status.PENDING,
        "Received": Status.PENDING,
        "RedirectShopper": Status.PENDING,
        "IdentifyShopper": Status.PENDING,
        "ChallengeShopper": Status.PENDING,
        "PresentToShopper": Status.PENDING,
    }


def test_payment_link_statuses_map_to_payment_statuses() -> None:
    assert adyen.PAYMENT_LINK_STATUS == {
        "active": Status.PENDING,
        "paymentPending": Status.PENDING,
        "completed": Status.ACCEPTED,
        "paid": Status.ACCEPTED,
        "expired": Status.FAILED,
    }


def test_notification_events_map_to_subjects_and_statuses() -> None:
    rules = {code: (r.subject, r.on_success, r.on_failure) for code, r in adyen.EVENT_RULES.items()}
    assert rules == {
        "AUTHORISATION": (Subject.PAYMENT, Status.ACCEPTED, Status.FAILED),
        "OFFER_CLOSED": (Subject.PAYMENT, Status.FAILED, None),
        "CAPTURE_FAILED": (Subject.PAYMENT, Status.FAILED, None),
        "REFUND": (Subject.REFUND, Status.ACCEPTED, Status.FAILED),
        "REFUND_FAILED": (Subject.REFUND, Status.FAILED, None),
        "REFUNDED_REVERSED": (Subject.REFUND, Status.FAILED, None),
    }


def test_capabilities_follow_the_reference_matrix() -> None:
    caps = adyen.CAPABILITIES
    assert Operation.STATUS not in caps.operations
    assert Operation.SUBSCRIPTION_SCHEDULE not in caps.operations
    assert {
        Operation.PAY,
        Operation.REFUND,
        Operation.SUBSCRIPTION_START,
        Operation.SUBSCRIPTION_PAY,
    } <= caps.operations
    assert Operation.PAY_BY_LINK in caps.operations
    assert caps.payment_methods == {"credit-cards"}
    assert caps.currencies == {"EUR"}


def test_hmac_matches_adyens_documented_example() -> None:
    assert adyen.notification_signature(DOC_ITEM, DOC_KEY) == DOC_SIGNATURE


def test_hmac_matches_the_official_sdk_helper() -> None:
    refund = {**DOC_ITEM, "eventCode": "REFUND", "originalReference": "8313842560770001", "success": "false"}
    for sample in (DOC_ITEM, refund, item()):
        assert adyen.notification_signature(sample, HMAC_KEY) == util.generate_notification_sig(
            copy.deepcopy(sample), HMAC_KEY
        ).decode("ascii")


def test_the_fakes_signatures_pass_the_official_sdk_check() -> None:
    document = json.loads(notification_body([item()]))
    assert util.is_valid_hmac_notification(document, HMAC_KEY)
    assert sign_item(DOC_ITEM, DOC_KEY) == DOC_SIGNATURE


def test_signed_authorisation_is_read_as_an_accepted_payment() -> None:
    [notification] = parse(notification_body([item()]))
    assert notification.subject is Subject.PAYMENT
    assert notification.payment_id == "PSP0000000000001"
    assert notification.status is Status.ACCEPTED


def test_refused_authorisation_is_a_failed_payment() -> None:
    [notification] = parse(notification_body([item(success="false")]))
    assert notification.status is Status.FAILED


def test_refund_notification_names_the_refund_and_its_payment() -> None:
    body = notification_body(
        [
            item(
                "REFUND",
                pspReference="REF0000000000001",
                originalReference="PSP0000000000001",
                amount={"value": 400, "currency": "EUR"},
            )
        ]
    )
    [notification] = parse(body)
    assert (
        notification.subject,
        notification.refund_id,
        notification.payment_id,
        notification.status,
        notification.amount,
    ) == (Subject.REFUND, "REF0000000000001", "PSP0000000000001", Status.ACCEPTED, 400)


def test_link_payment_is_known_by_the_link_id_and_a_refused_attempt_leaves_the_link_open() -> None:
    paid = item(additionalData={"paymentLinkId": "PL1234567890ABCDEF"})
    [notification] = parse(notification_body([paid]))
    assert notification.payment_id == "PL1234567890ABCDEF"
    assert parse(notification_body([{**paid, "success": "false"}])) == []


def test_events_without_a_payment_outcome_are_acknowledged_and_ignored() -> None:
    assert parse(notification_body([item("RECURRING_CONTRACT"), item("REPORT_AVAILABLE")])) == []


def test_duplicates_share_an_event_id_and_different_outcomes_do_not() -> None:
    first = parse(notification_body([item()]))[0]
    again = parse(notification_body([item(eventDate="2026-01-02T10:00:00+01:00")]))[0]
    refused = parse(notification_body([item(success="false")]))[0]
    assert first.event_id == again.event_id != refused.event_id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (notification_body([item()], hmac_key="00" * 32), "does not match"),
        (notification_body([item()]).replace(b'"value": 1000', b'"value": 100000'), "does not match"),
        (json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item()}]}).encode(), "no hmac"),
        (notification_body([item(merchantAccountCode="SomeoneElse")]), "another merchant account"),
        (notification_body([item()], live="true"), "live=true"),
        (b"not json", "not an Adyen notification"),
        (b'{"live": "false", "notificationItems": []}', "no items"),
    ],
)
def test_forged_tampered_foreign_or_malformed_notifications_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidCallback, match=reason):
        parse(body)


def test_one_forged_item_refuses_the_whole_batch() -> None:
    good = json.loads(notification_body([item()]))["notificationItems"]
    bad = json.loads(notification_body([item(pspReference="PSP2")], hmac_key="11" * 32))["notificationItems"]
    body = json.dumps({"live": "false", "notificationItems": good + bad}).encode()
    with pytest.raises(InvalidCallback):
        parse(body)


def test_a_live_setup_refuses_test_notifications_and_accepts_live_ones() -> None:
    with pytest.raises(InvalidCallback):
        parse(notification_body([item()]), is_test=False)
    assert len(parse(notification_body([item()], live="true"), is_test=False)) == 1


def test_notifications_must_be_posted() -> None:
    with pytest.raises(InvalidCallback):
        asyncio.run(adapter().parse_callback(callback(notification_body([item()]), method="GET")))


def test_acknowledgement_is_accepted_in_brackets() -> None:
    answer = adapter().callback_answer()
    assert (answer.status_code, answer.body) == (200, b"[accepted]")


@given(
    stored_id=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=16),
    shopper=st.text(min_size=3, max_size=37),
)
def test_subscription_token_round_trips_and_is_path_safe(stored_id: str, shopper: str) -> None:
    token = adyen.subscription_token(stored_id, shopper)
    assert adyen.parse_subscription_token(token) == (stored_id, shopper)
    assert all(c.isalnum() or c in "-_." for c in token)
    assert len(token) <= 255


def test_a_bare_stored_payment_method_id_is_accepted_as_a_token() -> None:
    assert adyen.parse_subscription_token("8415718415172204") == ("8415718415172204", None)


def pay_request(operation_data: dict[str, Any], token: str | None = None) -> PayRequest:
    """A pay-like request with this providerData."""
    return PayRequest(
        amount=1000,
        currency="EUR",
        shop_transaction_id="order-1",
        payment_method="credit-cards",
        idempotency_key="pgm-key",
        provider_data=operation_data,
        subscription=SubscriptionInfo(token=token) if token else None,
    )


CARD = {
    "encryptedCardNumber": "test_4111111111111111",
    "encryptedExpiryMonth": "test_03",
    "encryptedExpiryYear": "test_2030",
    "encryptedSecurityCode": "test_737",
}


@pytest.mark.parametrize(
    ("operation", "data", "token", "field"),
    [
        (Operation.PAY, {}, None, "providerData.encryptedCardNumber"),
        (Operation.PAY, {**CARD, "encryptedSecurityCode": ""}, None, "providerData.encryptedSecurityCode"),
        (Operation.SUBSCRIPTION_START, CARD, None, "providerData.paymentMethod"),
        (Operation.SUBSCRIPTION_START, {"paymentMethod": CARD}, None, "providerData.shopperReference"),
        (Operation.SUBSCRIPTION_PAY, {}, "8415718415172204", "providerData.shopperReference"),
        (
            Operation.SUBSCRIPTION_PAY,
            {"shopperReference": "someone-else"},
            adyen.subscription_token("8415718415172204", "shopper-1"),
            "providerData.shopperReference",
        ),
    ],
)
def test_missing_or_inconsistent_provider_data_is_refused_before_any_call(
    operation: Operation, data: dict[str, Any], token: str | None, field: str
) -> None:
    with pytest.raises(InvalidProviderData) as refused:
        adapter().check(operation, pay_request(data, token))
    assert refused.value.field == field


def test_complete_provider_data_passes_the_check() -> None:
    adapter().check(Operation.PAY, pay_request(CARD))
    adapter().check(Operation.SUBSCRIPTION_START, pay_request({"paymentMethod": CARD, "shopperReference": "shopper-1"}))
    adapter().check(Operation.SUBSCRIPTION_PAY, pay_request({}, adyen.subscription_token("8415718415172204", "abc")))


def test_refunding_a_link_payment_needs_the_payments_psp_reference() -> None:
    request = RefundRequest(payment_id="PL1234567890ABCDEF", amount=100, currency="EUR", idempotency_key="k")
    with pytest.raises(InvalidProviderData):
        adapter().check(Operation.REFUND, request)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "https://checkout-test.adyen.com/v71"),
        ({"ADYEN_IS_TEST": "true", "ADYEN_LIVE_URL": "ignored"}, "https://checkout-test.adyen.com/v71"),
        (
            {"ADYEN_IS_TEST": "false", "ADYEN_LIVE_URL": "1797a841fbb37ca7-AdyenDemo"},
            "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout/v71",
        ),
        ({"ADYEN_BASE_URL": "http://127.0.0.1:8080/v71/"}, "http://127.0.0.1:8080/v71"),
    ],
)
def test_base_url_follows_the_environment(env: dict[str, str], expected: str) -> None:
    assert adyen.base_url_from(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"ADYEN_IS_TEST": "false"},
        {"ADYEN_IS_TEST": "maybe"},
        {"ADYEN_IS_TEST": "false", "ADYEN_LIVE_URL": "bad prefix/"},
        {"ADYEN_BASE_URL": "ftp://example"},
    ],
)
def test_incomplete_or_invalid_endpoint_configuration_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        adyen.base_url_from(env)


def test_build_refuses_an_hmac_key_that_is_not_hex_without_echoing_it() -> None:
    env = {"ADYEN_PRIVATE_KEY": "k", "ADYEN_MERCHANT_ACCOUNT": "m", "ADYEN_HMAC_KEY": "not-hex-secret"}
    with pytest.raises(ConfigurationError) as refused:
        adyen.build(Settings(provider_env=env))
    assert "not-hex-secret" not in str(refused.value)

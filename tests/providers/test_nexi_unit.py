"""The Nexi adapter on its own, against the Nexi fake: how notifications are verified and read, how
order ids are made, and what a refund answers when Nexi cannot be asked first."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pgm.config import ConfigurationError, Settings
from pgm.domain.statuses import Status
from pgm.providers.base import (
    CallbackRequest,
    InvalidCallback,
    PayRequest,
    ProviderAdapter,
    ProviderRejected,
    RefundRequest,
    Subject,
)
from pgm.providers.nexi import (
    NexiAdapter,
    build,
    contract_id_for,
    notification_signature,
    order_id_for,
)
from tests.fakes.nexi import NexiFake, running_nexi_fake

API_KEY = "unit-test-key"


@pytest.fixture(scope="module")
def fake() -> Iterator[NexiFake]:
    """A Nexi fake that sends no notifications (no PGM listens)."""
    with running_nexi_fake() as running:
        yield running


def adapter_for(env: dict[str, str]) -> ProviderAdapter:
    """The adapter as `pgm serve` builds it."""
    return build(Settings(public_url="https://pgm.example", provider_timeout_seconds=5, provider_env=env))


def notification(order_id: str, **changes: Any) -> dict[str, Any]:
    """A notification as Nexi sends it."""
    body: dict[str, Any] = {
        "eventId": "e-1",
        "eventTime": "2026-12-03T10:00:00.000Z",
        "securityToken": "token",
        "operation": {
            "orderId": order_id,
            "operationId": "42",
            "operationType": "AUTHORIZATION",
            "operationResult": "EXECUTED",
        },
    }
    body.update(changes)
    return body


def callback(body: object, signature: str | None, method: str = "POST") -> CallbackRequest:
    """Our callback endpoint's view of a request."""
    query = {"pgmSignature": signature} if signature is not None else {}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return CallbackRequest(method, "/v3/nexi/callback", query, {}, raw, time.time())


def parse(body: object, signature: str | None, method: str = "POST") -> list[Any]:
    """parse_callback of an adapter keyed with API_KEY."""
    adapter = adapter_for({"NEXI_BASE_URL": "http://127.0.0.1:9", "NEXI_API_KEY": API_KEY})
    return asyncio.run(adapter.parse_callback(callback(body, signature, method)))


def test_order_ids_fit_nexi_and_the_same_key_gives_the_same_order() -> None:
    order_id = order_id_for("pgm-abc")
    assert len(order_id) == 27
    assert order_id.isalnum()
    assert order_id == order_id_for("pgm-abc") != order_id_for("pgm-abd")
    assert contract_id_for(order_id) != order_id
    assert contract_id_for(order_id)[1:] == order_id[1:]


def test_a_signed_notification_is_a_hint_about_its_order() -> None:
    order_id = order_id_for("k")
    (hint,) = parse(notification(order_id), notification_signature(API_KEY, order_id))
    assert (hint.subject, hint.payment_id, hint.status, hint.event_id) == (Subject.PAYMENT, order_id, None, "e-1")


@pytest.mark.parametrize("operation_type", ["REFUND", "VOID"])
def test_a_refund_or_cancel_notification_names_the_refund_operation(operation_type: str) -> None:
    order_id = order_id_for("k")
    body = notification(order_id)
    body["operation"].update(operationType=operation_type, operationId="777")
    (hint,) = parse(body, notification_signature(API_KEY, order_id))
    assert (hint.subject, hint.refund_id, hint.payment_id, hint.status) == (Subject.REFUND, "777", order_id, None)


@pytest.mark.parametrize(
    ("body", "signature", "method"),
    [
        (notification("P1"), None, "POST"),
        (notification("P1"), notification_signature("another-key", "P1"), "POST"),
        (notification("P1"), notification_signature(API_KEY, "P2"), "POST"),
        (notification("P1"), notification_signature(API_KEY, "P1"), "GET"),
        (notification("P1", eventId=""), notification_signature(API_KEY, "P1"), "POST"),
        (notification("P1", securityToken=None), notification_signature(API_KEY, "P1"), "POST"),
        (notification("../x"), notification_signature(API_KEY, "../x"), "POST"),
        ({"eventId": "e"}, notification_signature(API_KEY, "P1"), "POST"),
        (b"<xml/>", notification_signature(API_KEY, "P1"), "POST"),
        ([1, 2], notification_signature(API_KEY, "P1"), "POST"),
    ],
)
def test_what_is_not_a_notification_of_ours_is_refused(body: object, signature: str | None, method: str) -> None:
    with pytest.raises(InvalidCallback):
        parse(body, signature, method)


def test_a_notification_with_another_security_token_than_nexi_gave_is_refused(fake: NexiFake) -> None:
    adapter = adapter_for(fake.env())

    async def scenario() -> None:
        try:
            request = PayRequest(
                1000, "EUR", "unit-1", "credit-cards", "unit-key-1", success_redirect_url="https://s/ok"
            )
            order_id = (await adapter.pay(request)).payment_id
            assert order_id is not None
            signature = notification_signature(fake.api_key, order_id)
            with pytest.raises(InvalidCallback, match="securityToken"):
                await adapter.parse_callback(callback(notification(order_id), signature))
            token = fake.security_token(order_id)  # the token Nexi gave is accepted
            (hint,) = await adapter.parse_callback(callback(notification(order_id, securityToken=token), signature))
            assert hint.payment_id == order_id
        finally:
            await adapter.aclose()

    asyncio.run(scenario())


def test_a_refund_is_refused_without_any_call_when_nexi_cannot_be_asked_for_the_order(fake: NexiFake) -> None:
    adapter = adapter_for(fake.env())
    order_id = fake.create_paid_order("unit-2", 1000)
    fake.fail_next(503, "GET")

    async def scenario() -> None:
        try:
            with pytest.raises(ProviderRejected, match="nothing was refunded"):
                await adapter.refund(RefundRequest(order_id, 100, "EUR", "unit-refund-1"))
        finally:
            await adapter.aclose()

    asyncio.run(scenario())
    assert fake.payments("unit-2")[0]["refunds"] == []


def test_a_lookup_reads_the_order_and_what_was_refunded(fake: NexiFake) -> None:
    adapter = adapter_for(fake.env())
    order_id = fake.create_paid_order("unit-3", 1000)
    fake.refund_directly(order_id, 250)

    async def scenario() -> None:
        try:
            found = await adapter.payment_details(order_id)
            assert (found.status, found.amount, found.currency, found.shop_transaction_id) == (
                Status.ACCEPTED,
                1000,
                "EUR",
                "unit-3",
            )
            assert found.refunded_amount == 250
            assert isinstance(adapter, NexiAdapter)
        finally:
            await adapter.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NEXI_BASE_URL": "xpay.nexigroup.com", "NEXI_API_KEY": "k"}, "NEXI_BASE_URL"),
        ({"NEXI_BASE_URL": "https://x", "NEXI_API_KEY": "k", "NEXI_CALLBACK_URL": "pgm/cb"}, "NEXI_CALLBACK_URL"),
        ({"NEXI_BASE_URL": "https://x", "NEXI_API_KEY": " "}, "NEXI_API_KEY"),
    ],
)
def test_a_bad_variable_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        adapter_for(env)

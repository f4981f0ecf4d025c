"""The Soisy adapter on its own, against the Soisy fake: how callbacks are read (and what is refused),
every Soisy order status mapped, what an unknown status or a search without a list means, and which
variable a bad configuration names."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from pgm.config import ConfigurationError, Settings
from pgm.domain.statuses import Status
from pgm.providers.base import (
    CallbackRequest,
    InvalidCallback,
    OutcomeUnknown,
    PayRequest,
    ProviderAdapter,
    ProviderRejected,
    Subject,
)
from pgm.providers.soisy import PAYMENT_STATUS, build
from tests.fakes.soisy import SoisyFake, running_soisy_fake


@pytest.fixture(scope="module")
def fake() -> Iterator[SoisyFake]:
    """A Soisy fake that sends no callbacks (no PGM listens)."""
    with running_soisy_fake() as running:
        yield running


def adapter_for(env: dict[str, str]) -> ProviderAdapter:
    """The adapter as `pgm serve` builds it."""
    return build(Settings(public_url="https://pgm.example", provider_timeout_seconds=5, provider_env=env))


def callback(body: bytes, method: str = "POST") -> CallbackRequest:
    """A request to /v3/soisy/callback."""
    return CallbackRequest(method, "/v3/soisy/callback", {}, {}, body, 1.0)


def form(**fields: str) -> bytes:
    """A callback form as Soisy posts it."""
    values = {
        "eventId": "LoanWasVerified",
        "eventMessage": "verified",
        "eventDate": "2026-12-03T10:00:00Z",
        "orderToken": "a1b2c3",
        "orderReference": "order-1",
        "amount": "120000",
        **fields,
    }
    return urlencode(values).encode()


def test_a_callback_names_its_order_and_leaves_the_status_to_a_lookup(fake: SoisyFake) -> None:
    adapter = adapter_for(fake.env())
    (notification,) = asyncio.run(adapter.parse_callback(callback(form())))
    assert notification.subject is Subject.PAYMENT
    assert notification.payment_id == "a1b2c3"
    assert notification.status is None  # unsigned: never trusted
    # The same event of the same order is recognised; another event is another notification.
    (again,) = asyncio.run(adapter.parse_callback(callback(form())))
    (other,) = asyncio.run(adapter.parse_callback(callback(form(eventId="LoanWasDisbursed"))))
    assert again.event_id == notification.event_id != other.event_id


@pytest.mark.parametrize(
    ("body", "method"),
    [
        (form(), "GET"),
        (form(orderToken=""), "POST"),
        (form(orderToken="../orders"), "POST"),
        (form(eventId=""), "POST"),
        (form(eventId="<script>"), "POST"),
        (b'{"orderToken": "a1b2c3", "eventId": "LoanWasVerified"}', "POST"),
        (b"\xff\xfe", "POST"),
    ],
)
def test_what_is_not_a_soisy_callback_is_refused(fake: SoisyFake, body: bytes, method: str) -> None:
    with pytest.raises(InvalidCallback):
        asyncio.run(adapter_for(fake.env()).parse_callback(callback(body, method)))


@pytest.mark.parametrize(("soisy_status", "status"), sorted(PAYMENT_STATUS.items()))
def test_every_soisy_status_is_mapped(fake: SoisyFake, soisy_status: str, status: Status) -> None:
    token = fake.create_paid_order(f"order-{soisy_status}", 150_000)
    fake.set_status(token, soisy_status)
    lookup = asyncio.run(adapter_for(fake.env()).payment_status(token))
    assert (lookup.status, lookup.shop_transaction_id, lookup.amount) == (status, f"order-{soisy_status}", 150_000)
    assert lookup.metadata["providerSpecificProperties"]["status"] == soisy_status


def test_an_unknown_soisy_status_leaves_the_outcome_unknown(fake: SoisyFake) -> None:
    token = fake.create_paid_order("order-unknown-status", 150_000)
    fake.set_status(token, "under_review_by_a_new_team")
    with pytest.raises(OutcomeUnknown, match="unknown status"):
        asyncio.run(adapter_for(fake.env()).payment_status(token))


def test_a_token_that_cannot_be_soisys_is_refused_without_a_call(fake: SoisyFake) -> None:
    calls = len(fake.requests)
    with pytest.raises(ProviderRejected):
        asyncio.run(adapter_for(fake.env()).payment_status("a/b"))
    assert len(fake.requests) == calls


def test_a_search_answer_without_its_list_leaves_the_outcome_unknown(fake: SoisyFake) -> None:
    fake.malformed_next("GET")
    with pytest.raises(OutcomeUnknown):
        asyncio.run(adapter_for(fake.env()).find_payment("key", "order-never"))
    assert asyncio.run(adapter_for(fake.env()).find_payment("key", "order-never")) is None


def test_the_loan_request_carries_the_callback_url_and_the_payer(fake: SoisyFake) -> None:
    adapter = adapter_for(fake.env())
    request = PayRequest(
        150_000,
        "EUR",
        "order-carried",
        "soisy",
        "key-carried",
        success_redirect_url="https://shop.example/ok",
        provider_data={"firstname": " Anna ", "instalments": 6, "zeroInterestRate": False},
    )
    result = asyncio.run(adapter.pay(request))
    (order,) = fake.payments("order-carried")
    assert result.payment_id == order["token"]
    assert (order["firstname"], order["instalments"], order["zeroInterestRate"]) == ("Anna", 6, False)
    assert fake.callback_url(order["token"]) == "https://pgm.example/v3/soisy/callback"
    assert fake.error_url(order["token"]) == "https://shop.example/ok"  # no failureRedirectUrl: the same page


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"SOISY_BASE_URL": "api.soisy.it"}, "SOISY_BASE_URL"),
        ({"SOISY_BASE_URL": "https://api.soisy.it/api/shops/acme"}, "SOISY_BASE_URL"),
        ({"SOISY_SHOP_ID": "acme shop"}, "SOISY_SHOP_ID"),
        ({"SOISY_PARTNER_KEY": "  "}, "SOISY_PARTNER_KEY"),
    ],
)
def test_a_bad_variable_is_named(fake: SoisyFake, changes: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        adapter_for({**fake.env(), **changes})

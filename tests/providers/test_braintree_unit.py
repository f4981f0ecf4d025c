"""Braintree pieces without a PGM process: the webhook signature cross-checked with the official SDK's
own test notifications, configuration, amounts, and the fake's authentication."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import braintree
import httpx
import pytest

from pgm.config import ConfigurationError
from pgm.domain.statuses import Status
from pgm.providers import braintree as braintree_provider
from pgm.providers.base import CallbackRequest, InvalidCallback, Notification
from tests.fakes.braintree import MERCHANT_ID, PRIVATE_KEY, PUBLIC_KEY, Fake, running_braintree_fake, signature


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    """The Braintree fake."""
    with running_braintree_fake() as running:
        yield running


def adapter(env: dict[str, str]) -> braintree_provider.BraintreeAdapter:
    """An adapter with the fake's keys on the environment `env` describes."""
    return braintree_provider.BraintreeAdapter(
        environment=braintree_provider.environment_from(env),
        merchant_id=MERCHANT_ID,
        merchant_account_id="acct",
        public_key=PUBLIC_KEY,
        private_key=PRIVATE_KEY,
        timeout_seconds=5,
    )


def sdk_gateway() -> braintree.BraintreeGateway:
    """The official SDK with the fake's keys (sample notifications are built offline)."""
    config = braintree.Configuration(braintree.Environment.Sandbox, MERCHANT_ID, PUBLIC_KEY, PRIVATE_KEY)
    return braintree.BraintreeGateway(config)


def parse(form: dict[str, str]) -> list[Notification]:
    """What the adapter reads from a webhook form."""
    callback = CallbackRequest("POST", "/v3/braintree/callback", {}, {}, urlencode(form).encode(), time.time())
    return asyncio.run(adapter({}).parse_callback(callback))


def test_the_fakes_signature_is_the_sdks() -> None:
    sample = sdk_gateway().webhook_testing.sample_notification("transaction_settled", "abc123")
    payload = sample["bt_payload"]
    assert signature(payload.decode() if isinstance(payload, bytes) else payload) == sample["bt_signature"]


def test_sdk_sample_notifications_are_read_and_forged_ones_refused() -> None:
    settled = sdk_gateway().webhook_testing.sample_notification("transaction_settlement_declined", "sale42")
    [notification] = parse(settled)
    assert (notification.payment_id, notification.status) == ("sale42", Status.FAILED)
    assert notification.event_id == parse(settled)[0].event_id  # the same delivery twice: one event id
    assert parse(sdk_gateway().webhook_testing.sample_notification("subscription_charged_successfully", "s1")) == []
    forged = {**settled, "bt_signature": f"{PUBLIC_KEY}|{'0' * 40}"}
    with pytest.raises(InvalidCallback):
        parse(forged)
    with pytest.raises(InvalidCallback):
        parse({"bt_payload": settled["bt_payload"]})
    with pytest.raises(InvalidCallback):
        parse({"bt_signature": settled["bt_signature"], "bt_payload": "not base64 <xml/>"})


@pytest.mark.parametrize(("minor", "text"), [(1299, "12.99"), (1, "0.01"), (100, "1.00"), (99999999, "999999.99")])
def test_amounts_are_braintree_decimals_both_ways(minor: int, text: str) -> None:
    assert braintree_provider.amount_text(minor) == text
    assert braintree_provider.minor_units(text) == minor
    assert braintree_provider.minor_units("not a number") is None


def test_the_environment_is_the_sandbox_unless_told_otherwise() -> None:
    assert braintree_provider.environment_from({}) is braintree.Environment.Sandbox
    assert braintree_provider.environment_from({"BRAINTREE_IS_SANDBOX": "false"}) is braintree.Environment.Production
    custom = braintree_provider.environment_from({"BRAINTREE_BASE_URL": "http://127.0.0.1:8123"})
    assert custom.base_url == "http://127.0.0.1:8123"
    secure = braintree_provider.environment_from({"BRAINTREE_BASE_URL": "https://gateway.example"})
    assert secure.base_url == "https://gateway.example:443"
    for env in (
        {"BRAINTREE_IS_SANDBOX": "maybe"},
        {"BRAINTREE_BASE_URL": "ftp://host"},
        {"BRAINTREE_BASE_URL": "https://gateway.example:8443"},
    ):
        with pytest.raises(ConfigurationError):
            braintree_provider.environment_from(env)


def test_the_fake_enforces_braintrees_authentication(fake: Fake) -> None:
    path = f"{fake.url}/merchants/{MERCHANT_ID}/transactions/anything"
    version = {"X-ApiVersion": "6"}
    assert httpx.get(path, headers=version).status_code == 401
    assert httpx.get(path, headers=version, auth=(PUBLIC_KEY, "wrong")).status_code == 401
    assert httpx.get(path, auth=(PUBLIC_KEY, PRIVATE_KEY)).status_code == 426
    other = f"{fake.url}/merchants/someone-else/transactions/anything"
    assert httpx.get(other, headers=version, auth=(PUBLIC_KEY, PRIVATE_KEY)).status_code == 403
    assert httpx.get(path, headers=version, auth=(PUBLIC_KEY, PRIVATE_KEY)).status_code == 404
    token = base64.b64encode(f"{PUBLIC_KEY}:{PRIVATE_KEY}".encode()).decode()
    assert fake.requests[-1][2]["authorization"] == f"Basic {token}"

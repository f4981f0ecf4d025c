"""Satispay pieces on their own: signing (known answers from the documentation and from openssl),
key formats, status tables, callback parsing, input checks, configuration, and the adapter against
the fake's signature verification."""

from __future__ import annotations

import asyncio
import base64
import calendar
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from multidict import CIMultiDict
from yarl import URL

from pgm.config import ConfigurationError, Settings
from pgm.domain.statuses import Status
from pgm.outbound import Request
from pgm.providers import satispay
from pgm.providers.base import (
    CallbackRequest,
    InvalidCallback,
    InvalidProviderData,
    Operation,
    OutcomeUnknown,
    PayRequest,
    ProviderRejected,
    RefundRequest,
    Subject,
    SubscriptionInfo,
    SubscriptionState,
)
from pgm.providers.satispay import SatispayAdapter, SatispayConfig, build, payment_status_of
from pgm.providers.satispay.signing import (
    SatispaySignature,
    UnusableKey,
    authorization,
    digest,
    http_date,
    load_private_key,
    sign,
    signing_string,
)
from tests.fakes.satispay import SatispayFake, running_satispay_fake

# The example of Satispay's "Create the digest" and "Create the string" pages.
DOC_BODY = b'{\n  "flow": "MATCH_CODE",\n  "amount_unit": 100,\n  "currency": "EUR"\n}'
DOC_DIGEST = "SHA-256=ZML76UQPYzw5yDTmhySnU1S8nmqGde/jhqOG5rpfVSI="
EMPTY_DIGEST = "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
DOC_DATE = "Mon, 18 Mar 2019 15:10:24 +0000"
DOC_STRING = (
    "(request-target): post /wally-services/protocol/tests/signature\n"
    "host: staging.authservices.satispay.com\n"
    f"date: {DOC_DATE}\n"
    f"digest: {DOC_DIGEST}"
)

# A throw-away RSA key generated for these vectors only (it authenticates nothing anywhere), and the
# signature of DOC_STRING that `openssl dgst -sha256 -sign key.pem -binary | base64` printed for it.
TEST_KEY_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDqe38+FhzwKAgW\n"
    "uL7yFmUps4DIigJwFWRZOaf1bu4kvVws2zbfZv19pQ/STJE+e6duQ7cfMBnRVs42\n"
    "JDCOj22Effj45PlZODTi+PTCGzev4FF6IJPXt4FcfBlqscRLcLzXIO4M842yGHbK\n"
    "SDSfpf6O89+U2OnUKhudqfzibYvlOHO+QRIedQ012MRLu+MCNP+YLS8kojPYuJ/j\n"
    "3rMNXuUy5P4VV5PDVR3O70ML4NuJeeCiURxZTLL5N/SkVfzhcpsvstHRYJseTW8Q\n"
    "XmGDkGwo1Jq5ytIskc28ejrCMYSqM+MwgEXjlh4NWq2xE94vbIFzk1xAaUex5kLX\n"
    "v1qi4tKDAgMBAAECggEAD6ojOWhl+hx1uROrtfKNdl65wMWJHVtgfwSqCTk/vlz9\n"
    "vNI126QLiHEWTUwa++ifQ9Xqp7IhipzY9w1hE3UJ5PfUqGDSA5+mPaK4fzf53WcH\n"
    "9zeyVY8hAw1LVjEwCU/FXddv78kpjMQaBrBFZVD3YGEMbVFpNZvmiMuwmDpA369o\n"
    "CkTjPH9bf6KC2C8iGgGLGfrxapV6Ppco1qyzpmqMxUZJrxgm/V77fPy3QyFj/x68\n"
    "vCpdWZfIC35WvncXtDMA0xLChhis3nj9x1G4tLCn3WNAHMy5vrv/8V+wY6HAQBZi\n"
    "W+qsAW7XeOy31WtE7Zpc/oNdGWrXBxNwPzlA9BhWsQKBgQD4JkQQbEKXr5k98u9N\n"
    "p/12be77BZc6UaVN4FsgBUjQaScKUaCuYaI2L0Q22WAQtkMsAinO5mDask2gZyrP\n"
    "HjVt1fZs+RRygE63C9gW9xfARs1Ob0p7sP6M6tycll8pcbyWNGq7BiBsGq+pFeW9\n"
    "4IMF5NBGdhHTi6dDJLZqtrrUawKBgQDx5osNGVFeCu5flh0a+Z6Oa5OSfKN6fQqh\n"
    "Opv8GRb7gOgN2wThYvyiRzxPt6y7Z84tvMx6UoszbgKmqP/sX9rBqjeO+egvowUf\n"
    "0lCo39Gk8hb5Zhv+AwWYeBsKmvrEXJ9uz3f0XW2AwIACP2K09kaLy+z8LlTa3Ynq\n"
    "w0636+TASQKBgGPvPTAD+VmPHT7GjDsQ8VF1em3bVYjmApV3Sht+JVHRVyifsP8p\n"
    "UKNTq7wPFNIGJM0fXej1/IF2ly6G/cWFm+zM4z4FnYdzRsAO5ApznjwQB3ST+0IP\n"
    "CKSFnSzungpZxKIVH/qLwBjpMl7885XhScLg4EPQHuO79TNkIJafWmRbAoGBALjL\n"
    "2JpvJvvi+evH8AA1he1jPV+BHBps//vfnF5ghHAqMBy1nurYBguqw+ZaePjJ+nZy\n"
    "bvtbp7/oYNoU7T4UlDey47K0M66AqV9/+eKo6a1KzEZGvUe140ZxKqdVchEkeR/c\n"
    "GtVxsj/Tz3boGW4JXidZ6HdWpbh12fCgt7hF24ERAoGBAJ/rmSEk/RcRb2gViXSM\n"
    "cNPT1GpWtYlDD1IGUWendQA8AnmQ4awHz6OGiIQseGW2TCJMefzdk77ET5uao7QK\n"
    "duoKMQtAMQ1YSJmX4pKdBOnT9Q8FQfLaVfRH8vjS2hh3iukB13zF9vhZLU+B50Zk\n"
    "/uv4p2yW/rNnkZ7MBe+0sOvW\n"
    "-----END PRIVATE KEY-----\n"
)
OPENSSL_SIGNATURE = (
    "2AtZLDR97x/OkozABP7bAAZ5PBgSxiCDmv3j/8Upp0mJXiVr82dICGJUbQVDHm/zHqzZMpc36WU9HunL1FJFIRa5xc2sPB104EDEM/Wtl6mk"
    "rAB5xnLkjKJPnhXxxpZeBxw1tbwrQbQuiI0V92NE2It+89dRNuFtqQVF2eoImeqivk33OFJ6pwy20gCPO/wRZ+4MyFcQ7K0lQsyIgVNhQRcB"
    "FoxYIMHunYm/FqE3lq0R5FGPxyiBjj1HqJU64RqXt5z/pU/8zazpF8/LQ9ltfsUlm0oc36vXRl//DC6bSYTSnZGaw+cydQW+wDnApr6GAF3r"
    "iPgKr0fmc8pAJM0OYw=="
)


def test_digest_matches_the_documented_examples() -> None:
    assert digest(DOC_BODY) == DOC_DIGEST
    assert digest(b"") == EMPTY_DIGEST


def test_date_uses_the_documented_rfc_2822_form() -> None:
    assert http_date(calendar.timegm((2019, 3, 18, 15, 10, 24))) == DOC_DATE


def test_signing_string_matches_the_documented_example() -> None:
    string = signing_string(
        "POST", "/wally-services/protocol/tests/signature", "staging.authservices.satispay.com", DOC_DATE, DOC_DIGEST
    )
    assert string == DOC_STRING


def test_signature_equals_openssl_for_the_same_key_and_message() -> None:
    assert sign(load_private_key(TEST_KEY_PEM), DOC_STRING) == OPENSSL_SIGNATURE


def test_signature_is_cross_checked_with_the_openssl_command_line(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    (tmp_path / "key.pem").write_text(TEST_KEY_PEM)
    (tmp_path / "message").write_text(DOC_STRING)
    raw = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(tmp_path / "key.pem"), "-binary", str(tmp_path / "message")],
        check=True,
        capture_output=True,
    ).stdout
    assert base64.b64encode(raw).decode() == sign(load_private_key(TEST_KEY_PEM), DOC_STRING)


def test_authorization_header_has_the_documented_shape() -> None:
    assert authorization("key-1", "c2ln") == (
        'Signature keyId="key-1", algorithm="rsa-sha256", headers="(request-target) host date digest", signature="c2ln"'
    )


def _numbers(key: rsa.RSAPrivateKey) -> int:
    return key.private_numbers().d


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(TEST_KEY_PEM, id="pem"),
        pytest.param(" ".join(TEST_KEY_PEM.strip().split("\n")), id="single-spaces-like-the-existing-pgm"),
        pytest.param(TEST_KEY_PEM.replace("\n", "\\n"), id="escaped-newlines"),
        pytest.param(
            base64.b64encode(
                load_private_key(TEST_KEY_PEM).private_bytes(
                    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            ).decode(),
            id="base64-der",
        ),
        pytest.param(
            load_private_key(TEST_KEY_PEM)
            .private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
            .decode()
            .replace("\n", " "),
            id="pkcs1-single-spaces",
        ),
    ],
)
def test_private_key_is_read_in_every_form_deployments_use(form: str) -> None:
    assert _numbers(load_private_key(form)) == _numbers(load_private_key(TEST_KEY_PEM))


@pytest.mark.parametrize("text", ["", "not a key", "-----BEGIN PRIVATE KEY----- AAAA -----END PRIVATE KEY-----"])
def test_unreadable_private_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(UnusableKey) as refused:
        load_private_key(text)
    assert "AAAA" not in str(refused.value)


def test_request_signature_covers_the_host_path_query_and_body_actually_sent() -> None:
    key = load_private_key(TEST_KEY_PEM)
    auth = SatispaySignature("key-1", key, clock=lambda: calendar.timegm((2019, 3, 18, 15, 10, 24)))
    signed = Request("GET", URL("http://127.0.0.1:8123/g_business/v1/payments?limit=2&starting_after=x"), CIMultiDict())
    auth(signed)
    assert signed.headers["digest"] == EMPTY_DIGEST
    assert signed.headers["date"] == DOC_DATE
    expected = (
        "(request-target): get /g_business/v1/payments?limit=2&starting_after=x\n"
        f"host: 127.0.0.1:8123\ndate: {DOC_DATE}\ndigest: {EMPTY_DIGEST}"
    )
    value = signed.headers["authorization"].split('signature="')[1].rstrip('"')
    key.public_key().verify(base64.b64decode(value), expected.encode(), padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(
    ("satispay_status", "status"),
    [("PENDING", Status.PENDING), ("ACCEPTED", Status.ACCEPTED), ("CANCELED", Status.FAILED)],
)
def test_payment_and_token_statuses_map_as_the_existing_pgm(satispay_status: str, status: Status) -> None:
    assert satispay.PAYMENT_STATUS[satispay_status] is status
    assert satispay.TOKEN_STATUS[satispay_status] is status
    assert payment_status_of({"status": satispay_status, "expired": False}) is status


def test_subscription_states_map_pending_active_canceled() -> None:
    assert satispay.SUBSCRIPTION_STATE == {
        "PENDING": SubscriptionState.PENDING,
        "ACCEPTED": SubscriptionState.ACTIVE,
        "CANCELED": SubscriptionState.CANCELED,
    }


def test_an_expired_pending_payment_is_failed_and_an_unknown_status_is_not_guessed() -> None:
    assert payment_status_of({"status": "PENDING", "expired": True}) is Status.FAILED
    assert payment_status_of({"status": "ACCEPTED", "expired": True}) is Status.ACCEPTED
    with pytest.raises(OutcomeUnknown):
        payment_status_of({"status": "AUTHORIZED"})


def test_capabilities_are_the_reference_table() -> None:
    capabilities = satispay.CAPABILITIES
    assert capabilities.payment_methods == {"satispay"}
    assert capabilities.currencies == {"EUR"}
    assert capabilities.intervals == frozenset()
    assert Operation.PAY_BY_LINK not in capabilities.operations
    assert Operation.SUBSCRIPTION_SCHEDULE not in capabilities.operations
    assert {Operation.PAY, Operation.REFUND, Operation.AUTHORIZATION_TOKEN, Operation.SUBSCRIPTION_PAY} <= (
        capabilities.operations
    )


def config(**overrides: Any) -> SatispayConfig:
    """An adapter configuration with the test key."""
    values: dict[str, Any] = {
        "base_url": "http://127.0.0.1:9",
        "key_id": "key-1",
        "private_key": load_private_key(TEST_KEY_PEM),
        "callback_url": "https://pgm.example/v3/satispay/callback",
        "timeout_seconds": 2.0,
        "web_redirect_url": "https://shop.example/done",
        "mobile_redirect_url": "shopapp://done",
    }
    values.update(overrides)
    return SatispayConfig(**values)


def callback(path: str, query: dict[str, str], method: str = "GET", at: float = 1000.0) -> CallbackRequest:
    """A callback as the PGM's edge hands it over."""
    return CallbackRequest(method=method, path=path, query=query, headers={}, body=b"", received_at=at)


def test_payment_callback_is_an_unsigned_hint_about_the_payment_in_the_query() -> None:
    (notification,) = asyncio.run(
        SatispayAdapter(config()).parse_callback(callback("/v3/satispay/callback", {"payment_id": "a-1"}))
    )
    assert (notification.subject, notification.payment_id, notification.status) == (Subject.PAYMENT, "a-1", None)


def test_authorization_callback_names_the_token_as_payment_and_token() -> None:
    (notification,) = asyncio.run(
        SatispayAdapter(config()).parse_callback(
            callback("/v3/satispay/callback/authorization", {"authorization_id": "t-1"}, method="POST")
        )
    )
    assert notification.subject is Subject.AUTHORIZATION
    assert (notification.payment_id, notification.token, notification.status) == ("t-1", "t-1", None)


def test_each_callback_delivery_is_its_own_event_so_a_later_change_is_not_dropped() -> None:
    adapter = SatispayAdapter(config())
    first = asyncio.run(adapter.parse_callback(callback("/v3/satispay/callback", {"payment_id": "a-1"}, at=1.0)))
    later = asyncio.run(adapter.parse_callback(callback("/v3/satispay/callback", {"payment_id": "a-1"}, at=9.0)))
    assert first[0].event_id != later[0].event_id


@pytest.mark.parametrize("query", [{}, {"payment_id": ""}, {"payment_id": "../../admin"}, {"payment_id": "a" * 80}])
def test_callback_without_a_usable_id_is_refused(query: dict[str, str]) -> None:
    with pytest.raises(InvalidCallback):
        asyncio.run(SatispayAdapter(config()).parse_callback(callback("/v3/satispay/callback", query)))


def pay_request(**overrides: Any) -> PayRequest:
    """A pay request for the adapter."""
    values: dict[str, Any] = {
        "amount": 1000,
        "currency": "EUR",
        "shop_transaction_id": "order-1",
        "payment_method": "satispay",
        "idempotency_key": "pgm-key-1",
    }
    values.update(overrides)
    return PayRequest(**values)


def test_check_refuses_a_reference_longer_than_satispay_accepts() -> None:
    with pytest.raises(InvalidProviderData) as refused:
        SatispayAdapter(config()).check(Operation.PAY, pay_request(shop_transaction_id="x" * 51))
    assert refused.value.field == "shopTransactionId"


def test_check_requires_a_return_page_when_none_is_configured() -> None:
    adapter = SatispayAdapter(config(web_redirect_url=None))
    with pytest.raises(InvalidProviderData) as refused:
        adapter.check(Operation.PAY, pay_request())
    assert refused.value.field == "successRedirectUrl"
    adapter.check(Operation.PAY, pay_request(success_redirect_url="https://shop.example/ok"))
    adapter.check(Operation.SUBSCRIPTION_PAY, pay_request(subscription=SubscriptionInfo(token="t-1")))
    adapter.check(Operation.REFUND, RefundRequest(payment_id="p", amount=1, currency="EUR", idempotency_key="k"))


@pytest.mark.parametrize("reason", ["", 42, "r" * 256])
def test_check_refuses_a_bad_authorization_reason(reason: object) -> None:
    with pytest.raises(InvalidProviderData) as refused:
        SatispayAdapter(config()).check(Operation.AUTHORIZATION_TOKEN, pay_request(provider_data={"reason": reason}))
    assert refused.value.field == "providerData.reason"


def settings(**env: str) -> Settings:
    """Settings with these SATISPAY_* variables over a valid set."""
    values = {
        "SATISPAY_IS_SANDBOX": "true",
        "SATISPAY_KEY_ID": "key-1",
        "SATISPAY_PRIVATE_KEY": " ".join(TEST_KEY_PEM.strip().split("\n")),
    }
    values.update(env)
    return Settings(public_url="https://pgm.example", provider_env=values)


def test_required_variables_are_the_sandbox_flag_key_id_and_private_key() -> None:
    assert satispay.REQUIRED_VARIABLES == ("SATISPAY_IS_SANDBOX", "SATISPAY_KEY_ID", "SATISPAY_PRIVATE_KEY")


@pytest.mark.parametrize(
    ("flag", "base_url", "expected"),
    [
        ("true", "", "https://staging.authservices.satispay.com"),
        ("FALSE", "", "https://authservices.satispay.com"),
        ("false", "http://127.0.0.1:1234/", "http://127.0.0.1:1234"),
    ],
)
def test_base_url_follows_the_sandbox_flag_unless_overridden(flag: str, base_url: str, expected: str) -> None:
    adapter = build(settings(SATISPAY_IS_SANDBOX=flag, SATISPAY_BASE_URL=base_url))
    assert isinstance(adapter, SatispayAdapter)
    assert str(adapter._client.base_url) == f"{expected}/g_business/v1/"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SATISPAY_IS_SANDBOX", "yes"),
        ("SATISPAY_PRIVATE_KEY", "-----BEGIN PRIVATE KEY----- c2VjcmV0 -----END PRIVATE KEY-----"),
        ("SATISPAY_WAITING_SECONDS", "61"),
        ("SATISPAY_WAITING_SECONDS", "-1"),
        ("SATISPAY_CALLBACK_URL", "https://pgm.example/v3/satispay/callback?payment_id={uuid}"),
        ("SATISPAY_BASE_URL", "ftp://satispay"),
        ("SATISPAY_AFTER_BUY_MOBILE_REDIRECT_URL", "not a link"),
    ],
)
def test_bad_configuration_is_refused_naming_the_variable_without_its_value(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        build(settings(**{variable: value}))
    assert variable in str(refused.value)
    assert "c2VjcmV0" not in str(refused.value)


@pytest.fixture(scope="module")
def fake() -> Iterator[SatispayFake]:
    """A Satispay fake for adapter-level checks."""
    with running_satispay_fake() as running:
        yield running


def fake_adapter(fake: SatispayFake, **overrides: Any) -> SatispayAdapter:
    """An adapter pointed at the fake with its key."""
    values: dict[str, Any] = {
        "base_url": fake.base_url,
        "key_id": fake.key_id,
        "private_key": load_private_key(fake.env()["SATISPAY_PRIVATE_KEY"]),
    }
    values.update(overrides)
    return SatispayAdapter(config(**values))


def run(adapter: SatispayAdapter, coroutine: Any) -> Any:
    """Run one adapter call and close the adapter's client."""

    async def go() -> Any:
        try:
            return await coroutine
        finally:
            await adapter.aclose()

    return asyncio.run(go())


def test_fake_accepts_the_adapters_signature(fake: SatispayFake) -> None:
    adapter = fake_adapter(fake)
    result = run(adapter, adapter.pay(pay_request(shop_transaction_id="unit-sig", idempotency_key="pgm-unit-sig")))
    assert result.result.value == "REDIRECT_TO_URL"
    call = fake.requests[-1]
    assert call.headers["idempotency-key"] == "pgm-unit-sig"
    assert call.headers["authorization"].startswith(f'Signature keyId="{fake.key_id}", algorithm="rsa-sha256"')


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"private_key": load_private_key(TEST_KEY_PEM)}, id="another-key"),
        pytest.param({"key_id": "someone-else"}, id="another-key-id"),
    ],
)
def test_fake_refuses_a_request_signed_with_the_wrong_credentials(
    fake: SatispayFake, overrides: dict[str, Any]
) -> None:
    adapter = fake_adapter(fake, **overrides)
    with pytest.raises(ProviderRejected, match="401"):
        run(adapter, adapter.pay(pay_request(idempotency_key="pgm-unit-wrong")))


def test_fake_refuses_a_stale_signature(fake: SatispayFake) -> None:
    key = load_private_key(fake.env()["SATISPAY_PRIVATE_KEY"])
    adapter = SatispayAdapter(
        config(base_url=fake.base_url, key_id=fake.key_id, private_key=key), clock=lambda: 1_000_000_000.0
    )
    with pytest.raises(ProviderRejected, match="401"):
        run(adapter, adapter.payment_status("3e795a46-a4ea-42ba-8267-d9427aaf516d"))


def test_fake_refuses_a_body_that_does_not_match_its_signed_digest(fake: SatispayFake) -> None:
    key = load_private_key(fake.env()["SATISPAY_PRIVATE_KEY"])
    signed = Request(
        "POST",
        URL(f"{fake.base_url}/g_business/v1/payments"),
        CIMultiDict({"Content-Type": "application/json"}),
        b'{"flow":"MATCH_CODE","amount_unit":100,"currency":"EUR"}',
    )
    SatispaySignature(fake.key_id, key)(signed)
    headers = dict(signed.headers)
    tampered = httpx.post(
        str(signed.url), content=b'{"flow":"MATCH_CODE","amount_unit":1,"currency":"EUR"}', headers=headers
    )
    assert tampered.status_code == 401
    assert tampered.json()["code"] == 34


def test_over_refund_is_refused_by_the_fake(fake: SatispayFake) -> None:
    adapter = fake_adapter(fake)
    payment = run(adapter, adapter.pay(pay_request(shop_transaction_id="unit-over", idempotency_key="pgm-over")))
    fake.approve(payment.payment_id)
    adapter = fake_adapter(fake)
    first = run(adapter, adapter.refund(RefundRequest(payment.payment_id, 600, "EUR", "pgm-over-r1")))
    assert first.status is Status.ACCEPTED
    adapter = fake_adapter(fake)
    with pytest.raises(ProviderRejected, match="exceeds"):
        run(adapter, adapter.refund(RefundRequest(payment.payment_id, 401, "EUR", "pgm-over-r2")))
    assert [r["amount_unit"] for r in fake.payments("unit-over")[0]["refunds"]] == [600]


def test_same_idempotency_key_returns_the_same_payment(fake: SatispayFake) -> None:
    first = fake_adapter(fake)
    one = run(first, first.pay(pay_request(shop_transaction_id="unit-idem", idempotency_key="pgm-idem")))
    second = fake_adapter(fake)
    two = run(second, second.pay(pay_request(shop_transaction_id="unit-idem", idempotency_key="pgm-idem")))
    assert one.payment_id == two.payment_id
    assert len(fake.payments("unit-idem")) == 1


def test_find_payment_pages_through_the_list_and_says_none_only_after_reading_it_all(
    fake: SatispayFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(satispay, "LIST_PAGE_SIZE", 2)
    adapter = fake_adapter(fake)
    target = run(adapter, adapter.pay(pay_request(shop_transaction_id="unit-find", idempotency_key="pgm-find")))
    for index in range(5):
        adapter = fake_adapter(fake)
        run(
            adapter, adapter.pay(pay_request(shop_transaction_id=f"unit-find-{index}", idempotency_key=f"pgm-f{index}"))
        )
    adapter = fake_adapter(fake)
    found = run(adapter, adapter.find_payment("pgm-find", "unit-find"))
    assert found is not None
    assert (found.payment_id, found.shop_transaction_id) == (target.payment_id, "unit-find")
    adapter = fake_adapter(fake)
    assert run(adapter, adapter.find_payment("pgm-never-sent", "unit-none")) is None
    monkeypatch.setattr(satispay, "LIST_MAX_PAGES", 1)
    adapter = fake_adapter(fake)
    with pytest.raises(OutcomeUnknown):
        run(adapter, adapter.find_payment("pgm-never-sent", "unit-none"))


def test_mobile_url_is_the_same_page_returning_to_the_app(fake: SatispayFake) -> None:
    adapter = fake_adapter(fake)
    result = run(adapter, adapter.pay(pay_request(shop_transaction_id="unit-mobile", idempotency_key="pgm-mob")))
    web, mobile = httpx.URL(result.redirect_url), httpx.URL(result.redirect_url_mobile)
    assert web.path == mobile.path == f"/pay/{result.payment_id}"
    assert web.params["redirect_url"] == "https://shop.example/done"
    assert mobile.params["redirect_url"] == "shopapp://done"

"""The sandbox's hosted pages (docs/sandbox.md): a payment's checkout, an authorization, a refund. Each
page shows its subject, takes the payer's decision once, and answers an unknown subject or decision
clearly instead of failing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support.pgm_process import PgmProcess

SANDBOX_KEY = "Bearer sk_sandbox_local"  # the key of the sandbox on loopback (docs/sandbox.md)


def _create(pgm: PgmProcess, path: str, **body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{pgm.url}/sandbox/api/v1/{path}", json=body, headers={"Authorization": SANDBOX_KEY})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _page_url(pgm: PgmProcess, kind: str) -> tuple[str, str]:
    """The page of a new pending subject of `kind`, and a text that page must show."""
    reference = f"order-{uuid.uuid4().hex[:10]}"
    if kind == "checkout":
        payment = _create(pgm, "payments", amount=1200, currency="EUR", reference=reference, outcome="REDIRECT_TO_URL")
        return payment["checkoutUrl"], reference
    if kind == "authorization":
        token = _create(
            pgm, "authorizations", amount=900, currency="EUR", reference=reference, outcome="REDIRECT_TO_URL"
        )
        return token["approvalUrl"], reference
    paid = _create(pgm, "payments", amount=1500, currency="EUR", reference=reference, outcome="OK")
    refund = _create(pgm, f"payments/{paid['id']}/refunds", amount=500, outcome="PENDING")
    return refund["approvalUrl"], refund["id"]


KINDS = ["checkout", "authorization", "refund"]
APPROVED = {"checkout": "Payment approved", "authorization": "Authorization granted", "refund": "Refund approved"}
DECLINED = {"checkout": "Payment declined", "authorization": "Authorization refused", "refund": "Refund declined"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_page_shows_its_subject_and_takes_one_decision(pgm: PgmProcess, kind: str) -> None:
    url, shown = _page_url(pgm, kind)
    page = httpx.get(url)
    assert page.status_code == 200
    assert shown in page.text
    approved = httpx.post(url, data={"decision": "approve"})
    assert approved.status_code == 200
    assert APPROVED[kind] in approved.text
    # Decided once: a second decision changes nothing and says so.
    again = httpx.post(url, data={"decision": "decline"})
    assert again.status_code >= 400
    assert "Nothing to do" in again.text


@pytest.mark.parametrize("kind", KINDS)
def test_a_declined_subject_says_so(pgm: PgmProcess, kind: str) -> None:
    url, _ = _page_url(pgm, kind)
    declined = httpx.post(url, data={"decision": "decline"})
    assert declined.status_code == 200
    assert DECLINED[kind] in declined.text


@pytest.mark.parametrize(
    ("path", "what"), [("checkout", "payment"), ("authorizations", "authorization"), ("refunds", "refund")]
)
def test_an_unknown_subject_is_a_404_page_naming_it(pgm: PgmProcess, path: str, what: str) -> None:
    url = f"{pgm.url}/sandbox/{path}/never-made"
    for answer in (httpx.get(url), httpx.post(url, data={"decision": "approve"})):
        assert answer.status_code == 404
        assert f"Unknown {what}" in answer.text
        assert "never-made" in answer.text


@pytest.mark.parametrize("kind", KINDS)
def test_a_decision_other_than_approve_or_decline_is_a_400_and_changes_nothing(pgm: PgmProcess, kind: str) -> None:
    url, _ = _page_url(pgm, kind)
    answer = httpx.post(url, data={"decision": "maybe"})
    assert answer.status_code == 400
    assert httpx.post(url, data={"decision": "approve"}).status_code == 200

"""Every path of the machine of docs/flow-manager.md to its end state, driven by the Flow Manager stand-in running
the repository's own configuration against a real PGM on the sandbox provider."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.saga_stack import SagaStack, paid_saga
from tests.support.sandbox_requests import metadata
from tests.support.servers import wait_for


def test_direct_payment_accepted_at_once(stack: SagaStack) -> None:
    _, saga = paid_saga(stack)
    assert saga["metadata"]["paymentId"].startswith("sbx_pay_")
    assert saga["businessStateId"] == 1
    assert saga["commands"][0]["url"].endswith("/saga/pay")
    # The repository's configuration labels the pay command with an event name: the path decides.
    assert saga["commands"][0]["label"] == "paymentScheduled"


def test_direct_payment_refused(stack: SagaStack) -> None:
    saga_id = stack.create_saga(metadata("KO"))
    stack.send_event(saga_id, "scheduleRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert "declined" in saga["metadata"]["error"].lower()
    assert saga["metadata"]["paymentId"].startswith("sbx_pay_")
    assert saga["businessStateId"] == 1000


@pytest.mark.parametrize(("decision", "final"), [("approve", "PAYMENT_EXECUTED"), ("decline", "PAYMENT_FAILED")])
def test_redirect_then_decision_on_the_hosted_page(stack: SagaStack, decision: str, final: str) -> None:
    data = metadata("REDIRECT_TO_URL")
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    pay_request = pending["metadata"]["payRequestData"]
    # Both merges must leave the whole payRequestData in place, with the redirect added.
    assert pay_request["successRedirect"] == "https://shop.example/ok"
    assert pay_request["providerData"] == {"sandboxOutcome": "REDIRECT_TO_URL"}
    assert pay_request["redirectToUrl"].startswith(stack.pgm.url + "/sandbox/checkout/")
    assert pay_request["redirectToUrlMobile"].startswith(pay_request["redirectToUrl"])
    assert stack.pgm.decide(pay_request["redirectToUrl"], decision).status_code == 200
    saga = stack.wait_state(saga_id, final)
    assert saga["metadata"]["paymentId"] == pending["metadata"]["paymentId"]


def test_subscription_schedule_gives_the_subscription_token(stack: SagaStack) -> None:
    data = metadata("OK", type="SUBSCRIPTION")
    data["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH", "intervalCount": 1}
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "subscriptionScheduledRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    info = saga["metadata"]["payRequestData"]["subscriptionInfo"]
    assert info["token"].startswith("sbx_sub_")
    assert info["interval"] == "MONTH"
    assert saga["metadata"]["payRequestData"]["successRedirect"] == "https://shop.example/ok"
    assert saga["commands"][0]["url"].endswith("/saga/subscription/schedule")


def test_expires_after_that_is_not_a_number_of_payments_fails_the_saga_naming_it(stack: SagaStack) -> None:
    data = metadata("OK", type="SUBSCRIPTION")
    data["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH", "expiresAfter": "2027-01-01"}
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "subscriptionScheduledRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert "expiresAfter must be an integer" in saga["metadata"]["error"]


def test_subscription_start_then_pay_with_the_stored_token(stack: SagaStack) -> None:
    data = metadata("OK", type="SUBSCRIPTION")
    data["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH", "intervalCount": 1}
    first = stack.create_saga(data)
    stack.send_event(first, "subscriptionStart")
    token = stack.wait_state(first, "PAYMENT_EXECUTED")["metadata"]["payRequestData"]["subscriptionInfo"]["token"]
    assert token.startswith("sbx_mdt_")

    renewal = metadata("OK", type="SUBSCRIPTION")
    renewal["payRequestData"]["subscriptionInfo"] = {"token": token}
    second = stack.create_saga(renewal)
    stack.send_event(second, "subscriptionPaymentRequested")
    saga = stack.wait_state(second, "PAYMENT_EXECUTED")
    assert saga["metadata"]["payRequestData"]["subscriptionInfo"]["token"] == token
    assert saga["commands"][0]["url"].endswith("/saga/subscription/pay")


def test_subscription_start_pending_then_approved(stack: SagaStack) -> None:
    data = metadata("REDIRECT_TO_URL", type="SUBSCRIPTION")
    data["payRequestData"]["subscriptionInfo"] = {"interval": "YEAR", "intervalCount": 1}
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "subscriptionStart")
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    stack.pgm.decide(pending["metadata"]["payRequestData"]["redirectToUrl"], "approve")
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert saga["metadata"]["payRequestData"]["subscriptionInfo"]["token"].startswith("sbx_mdt_")


def test_authorization_then_subscription_payment_with_the_token(stack: SagaStack) -> None:
    saga_id = stack.create_saga(metadata("REDIRECT_TO_URL", type="SUBSCRIPTION"))
    stack.send_event(saga_id, "authorizationRequested")
    saga = stack.wait_state(saga_id, "AUTHORIZATION_PENDING")
    pay_request = saga["metadata"]["payRequestData"]
    token = pay_request["subscriptionInfo"]["token"]
    assert token.startswith("sbx_auth_")
    assert stack.pgm.decide(pay_request["redirectToUrl"], "approve").status_code == 200

    # The merchant charges the authorized token: the payer is not involved any more.
    pay_request["providerData"] = {"sandboxOutcome": "OK"}
    stack.send_event(saga_id, "subscriptionPaymentRequested", {"payRequestData": pay_request})
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert saga["metadata"]["payRequestData"]["subscriptionInfo"]["token"] == token


def test_authorization_refused_fails_the_saga_instead_of_stalling(stack: SagaStack) -> None:
    saga_id = stack.create_saga(metadata("KO", type="SUBSCRIPTION"))
    stack.send_event(saga_id, "authorizationRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert saga["metadata"]["error"]


def test_pay_by_link_then_paid_through_the_link(stack: SagaStack) -> None:
    data = metadata("REDIRECT_TO_URL", type="PAY_BY_LINK")
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "linkRequested")
    saga = stack.wait_state(saga_id, "LINK_CREATED")
    link = saga["metadata"]["link"]
    assert link.startswith(stack.pgm.url + "/sandbox/checkout/")
    stack.send_event(saga_id, "notificationSent")
    stack.wait_state(saga_id, "PAYMENT_PENDING")
    assert stack.pgm.decide(link, "approve").status_code == 200
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert saga["metadata"]["paymentId"] in link
    assert saga["commands"][0]["url"].endswith("/saga/pay-by-link")


def test_partial_refund_then_total_refund(stack: SagaStack) -> None:
    saga_id, _ = paid_saga(stack)
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 300}})
    saga = stack.wait_state(saga_id, "PARTIALLY_REFUNDED")
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 300, "refundedAmounts": [300]}
    assert saga["businessStateId"] == 2
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 700}})
    saga = stack.wait_state(saga_id, "TOTALLY_REFUNDED")
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [300, 700]}
    assert saga["businessStateId"] == 3
    books = stack.pgm.sandbox_payments(saga["metadata"]["shopTransactionId"])
    assert [r["amount"] for r in books[0]["refunds"]] == [300, 700]


def test_two_partial_refunds_of_the_same_amount_are_two_refunds(stack: SagaStack) -> None:
    saga_id, saga = paid_saga(stack)
    for expected in ([250], [250, 250]):
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 250}})
        wait_for(
            lambda expected=expected: (
                stack.saga(saga_id)["metadata"].get("refundDetails", {}).get("refundedAmounts") == expected
            ),
            what=f"refundedAmounts {expected}",
        )
        assert stack.wait_state(saga_id, "PARTIALLY_REFUNDED")["metadata"]["refundDetails"][
            "totalRefundedAmount"
        ] == sum(expected)
    books = stack.pgm.sandbox_payments(saga["metadata"]["shopTransactionId"])
    assert [r["amount"] for r in books[0]["refunds"]] == [250, 250]


def test_refund_over_the_paid_amount_fails_without_a_provider_call(stack: SagaStack) -> None:
    saga_id, saga = paid_saga(stack)
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 1001}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "exceeds the refundable amount 1000" in saga["metadata"]["error"]
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 0, "refundedAmounts": []}
    assert stack.pgm.sandbox_payments(saga["metadata"]["shopTransactionId"])[0]["refunds"] == []


def test_refund_retried_after_a_failure(stack: SagaStack) -> None:
    saga_id, _ = paid_saga(stack)
    refused = {"refundRequestData": {"amount": 400, "providerData": {"sandboxOutcome": "KO"}}}
    stack.send_event(saga_id, "refundRequested", refused)
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert saga["metadata"]["error"]
    accepted = {"refundRequestData": {"amount": 400, "providerData": {"sandboxOutcome": "OK"}}}
    stack.send_event(saga_id, "refundRequested", accepted)
    saga = stack.wait_state(saga_id, "PARTIALLY_REFUNDED")
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 400, "refundedAmounts": [400]}
    refunds = stack.pgm.sandbox_payments(saga["metadata"]["shopTransactionId"])[0]["refunds"]
    assert [(r["amount"], r["status"]) for r in refunds] == [(400, "FAILED"), (400, "ACCEPTED")]


def test_pending_refund_waits_in_refund_requested_until_its_outcome(stack: SagaStack) -> None:
    saga_id, _ = paid_saga(stack)
    pending = {"refundRequestData": {"amount": 1000, "providerData": {"sandboxOutcome": "PENDING"}}}
    stack.send_event(saga_id, "refundRequested", pending)
    books: list[dict[str, Any]] = []

    def refund_created() -> bool:
        books[:] = stack.pgm.sandbox_payments(stack.saga(saga_id)["metadata"]["shopTransactionId"])
        return bool(books and books[0]["refunds"])

    wait_for(refund_created, what="the pending refund")
    assert stack.saga(saga_id)["currentState"] == "REFUND_REQUESTED"
    refund_id = books[0]["refunds"][0]["refundId"]
    stack.pgm.decide(f"{stack.pgm.url}/sandbox/refunds/{refund_id}", "approve")
    saga = stack.wait_state(saga_id, "TOTALLY_REFUNDED")
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [1000]}


def test_the_pgm_shows_what_it_did_for_a_saga(stack: SagaStack) -> None:
    saga_id = stack.create_saga(metadata("REDIRECT_TO_URL"))
    stack.send_event(saga_id, "scheduleRequested")
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    stack.pgm.decide(pending["metadata"]["payRequestData"]["redirectToUrl"], "approve")
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    seen = stack.pgm.get(f"/-/sagas/{saga_id}").json()
    assert [(c["route"], c["status"]) for c in seen["commands"]] == [("pay", "DONE")]
    assert [e["label"] for e in seen["events"]] == ["paymentScheduled", "paymentExecuted"]
    assert all(e["delivery"]["status"] == "DELIVERED" for e in seen["events"])
    assert seen["payments"][0]["status"] == "ACCEPTED"
    assert seen["payments"][0]["paymentId"] == pending["metadata"]["paymentId"]

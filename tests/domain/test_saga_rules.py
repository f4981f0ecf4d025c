"""The saga contract's pure rules: reading saga data, and payloads right under both merges."""

from __future__ import annotations

from typing import Any

import pytest

from pgm.domain.saga import (
    Event,
    Route,
    SagaDataError,
    envelope,
    merge,
    missing_fields,
    read_saga_data,
    refund_details,
    taken_by_the_machine,
    with_redirect,
    with_token,
)

METADATA: dict[str, Any] = {
    "amount": 1299,
    "currency": "EUR",
    "provider": "sandbox",
    "paymentMethod": "credit-cards",
    "shopTransactionId": "order-1",
    "payRequestData": {"successRedirect": "https://ok", "providerData": {"sandboxOutcome": "OK"}},
}


def shallow(metadata: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The Flow Manager's default merge: top-level keys replaced."""
    return {**metadata, **payload}


def deep(metadata: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The Flow Manager's deepMergeMetadata: objects merged recursively."""
    result = dict(metadata)
    for key, value in payload.items():
        result[key] = (
            deep(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
        )
    return result


def test_payload_wins_over_the_stored_document_and_legacy_spellings_are_read() -> None:
    stored = {**METADATA, "shopTransactionID": "legacy", "paymentID": "pay_old"}
    del stored["shopTransactionId"]
    data = merge(stored, {"amount": 500})
    assert data["amount"] == 500
    assert data["shopTransactionId"] == "legacy"
    assert data["paymentId"] == "pay_old"
    assert "paymentID" not in data


def test_missing_fields_decide_whether_the_crud_is_read() -> None:
    assert missing_fields(Route.PAY, METADATA) == []
    assert missing_fields(Route.PAY, {"payRequestData": {}}) == ["amount", "currency", "provider", "paymentMethod"]
    assert missing_fields(Route.REFUND, {"refundRequestData": {"amount": 1}}) == [
        "provider",
        "paymentId",
        "refundDetails",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provider": None}, "no provider"),
        ({"currency": "usd"}, "upper case"),
        ({"amount": None}, "no amount"),
        ({"amount": 0}, "greater than zero"),
        ({"paymentMethod": None}, "no paymentMethod"),
    ],
)
def test_saga_data_that_cannot_succeed_says_why(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SagaDataError, match=message):
        read_saga_data("s1", Route.PAY, {**METADATA, **change})


def test_refund_data_takes_the_amount_to_refund() -> None:
    data = read_saga_data(
        "s1",
        Route.REFUND,
        {**METADATA, "paymentId": "p1", "refundRequestData": {"amount": 300}, "refundDetails": refund_details([100])},
    )
    assert data.amount == 300
    assert data.refunds_so_far == 1
    with pytest.raises(SagaDataError, match=r"refundRequestData\.amount is missing"):
        read_saga_data("s1", Route.REFUND, {**METADATA, "paymentId": "p1"})


def test_a_saga_without_merchant_reference_uses_its_id() -> None:
    data = read_saga_data("saga-7", Route.PAY, {k: v for k, v in METADATA.items() if k != "shopTransactionId"})
    assert data.shop_transaction_id == "saga-7"


@pytest.mark.parametrize("merge_metadata", [shallow, deep])
def test_nested_updates_keep_the_whole_object_under_both_merges(merge_metadata: Any) -> None:
    redirected = with_redirect(METADATA["payRequestData"], "https://pay", "https://pay?m")
    metadata = merge_metadata(METADATA, {"payRequestData": redirected})
    assert metadata["payRequestData"] == {
        "successRedirect": "https://ok",
        "providerData": {"sandboxOutcome": "OK"},
        "redirectToUrl": "https://pay",
        "redirectToUrlMobile": "https://pay?m",
    }
    tokened = merge_metadata(metadata, {"payRequestData": with_token(metadata["payRequestData"], "tok_1")})
    assert tokened["payRequestData"]["subscriptionInfo"] == {"token": "tok_1"}
    assert tokened["payRequestData"]["redirectToUrl"] == "https://pay"
    assert METADATA["payRequestData"] == {"successRedirect": "https://ok", "providerData": {"sandboxOutcome": "OK"}}


def test_event_envelope_has_exactly_two_levels_and_four_keys() -> None:
    event = envelope("s1", Event.PAYMENT_EXECUTED, {"paymentId": "p"})
    assert event == {"key": "s1", "value": {"messageLabel": "paymentExecuted", "messagePayload": {"paymentId": "p"}}}
    assert refund_details([300, 700]) == {"totalRefundedAmount": 1000, "refundedAmounts": [300, 700]}


def test_events_the_flow_manager_took_are_found_in_its_history_by_label_and_payload() -> None:
    history = [
        {"event": "__created__", "payload": {}},
        {"event": "linkCreated", "payload": {"paymentId": "p1", "link": "https://l"}},
        {"event": "refundRequested", "payload": {"refundRequestData": {"amount": 5}}},
    ]
    sent = [
        ("linkCreated", {"paymentId": "p1", "link": "https://l"}),
        ("paymentExecuted", {"paymentId": "p1"}),
        # Same label as the merchant's event in the history, another payload: not the one it took.
        ("refundRequested", {"refundRequestData": {"amount": 5, "refundId": "ref_1"}}),
    ]
    assert taken_by_the_machine(sent, history) == [True, False, False]


def test_each_history_entry_answers_for_one_event_and_entries_without_payload_match_on_the_label() -> None:
    sent = [("paymentExecuted", {"paymentId": "p1"}), ("paymentExecuted", {"paymentId": "p1"})]
    assert taken_by_the_machine(sent, [{"event": "paymentExecuted", "payload": {"paymentId": "p1"}}]) == [True, False]
    assert taken_by_the_machine(sent, [{"event": "paymentExecuted"}, {"event": "paymentExecuted"}]) == [True, True]
    assert taken_by_the_machine(sent, None) == [False, False]

"""The payment machine that payment projects already run, state for state as the Flow Manager contract's
table has it (docs/flow-manager.md), as a Flow Manager configuration whose channels go to a PGM. The
shipped configuration may improve on it; the PGM must work with this one too."""

from __future__ import annotations

from typing import Any

from pgm.devstack.flow_manager import point_channels_at

PAID_TRANSITIONS = [
    ("paymentScheduled", "PAYMENT_PENDING"),
    ("paymentExecuted", "PAYMENT_EXECUTED"),
    ("paymentExecutedBySystem", "PAYMENT_EXECUTED"),
    ("paymentFailed", "PAYMENT_FAILED"),
    ("paymentFailedBySystem", "PAYMENT_FAILED"),
]
# state id -> (business state, (channel id, route path, command label) or None, [(event, next state)])
STATES: dict[str, tuple[int, tuple[str, str, str] | None, list[tuple[str, str]]]] = {
    "PAYMENT_CREATED": (
        0,
        None,
        [
            ("scheduleRequested", "PAYMENT_SCHEDULE_REQUESTED"),
            ("subscriptionScheduledRequested", "SUBSCRIPTION_SCHEDULED_REQUESTED"),
            ("subscriptionStart", "SUBSCRIPTION_STARTED"),
            ("subscriptionPaymentRequested", "SUBSCRIPTION_PAYMENT_REQUESTED"),
            ("authorizationRequested", "AUTHORIZATION_REQUESTED"),
            ("linkRequested", "LINK_REQUESTED"),
            ("paymentExecuted", "PAYMENT_EXECUTED"),
            ("paymentFailed", "PAYMENT_FAILED"),
        ],
    ),
    "PAYMENT_SCHEDULE_REQUESTED": (0, ("pay", "/saga/pay", "paymentScheduled"), PAID_TRANSITIONS),
    "SUBSCRIPTION_SCHEDULED_REQUESTED": (
        0,
        ("subscription-schedule", "/saga/subscription/schedule", "subscriptionScheduledRequested"),
        PAID_TRANSITIONS,
    ),
    "SUBSCRIPTION_STARTED": (
        0,
        ("subscription-start", "/saga/subscription/start", "subscriptionStart"),
        PAID_TRANSITIONS,
    ),
    "SUBSCRIPTION_PAYMENT_REQUESTED": (
        0,
        ("subscription-pay", "/saga/subscription/pay", "subscriptionPaymentRequested"),
        PAID_TRANSITIONS,
    ),
    "AUTHORIZATION_REQUESTED": (
        0,
        ("authorization", "/saga/subscription/authorization", "authorizationRequested"),
        [("authorizationScheduled", "AUTHORIZATION_PENDING")],
    ),
    "AUTHORIZATION_PENDING": (
        0,
        None,
        [
            ("subscriptionStart", "SUBSCRIPTION_STARTED"),
            ("subscriptionPaymentRequested", "SUBSCRIPTION_PAYMENT_REQUESTED"),
            ("paymentFailed", "PAYMENT_FAILED"),
        ],
    ),
    "LINK_REQUESTED": (
        0,
        ("pay-by-link", "/saga/pay-by-link", "linkRequested"),
        [("linkCreated", "LINK_CREATED"), ("paymentFailed", "PAYMENT_FAILED")],
    ),
    "LINK_CREATED": (0, None, [("notificationSent", "PAYMENT_PENDING"), ("paymentFailed", "PAYMENT_FAILED")]),
    "PAYMENT_PENDING": (0, None, [("update", "PAYMENT_PENDING"), *PAID_TRANSITIONS[1:]]),
    "PAYMENT_EXECUTED": (
        1,
        None,
        [("refundRequested", "REFUND_REQUESTED"), ("sendNotification", "PAYMENT_EXECUTED")],
    ),
    "REFUND_REQUESTED": (
        1,
        ("refund", "/saga/refund", "refundRequested"),
        [
            ("refundFailed", "REFUND_FAILED"),
            ("partialRefundExecuted", "PARTIALLY_REFUNDED"),
            ("totalRefundExecuted", "TOTALLY_REFUNDED"),
        ],
    ),
    "REFUND_FAILED": (1, None, [("refundRequested", "REFUND_REQUESTED")]),
    "PARTIALLY_REFUNDED": (
        2,
        None,
        [("refundRequested", "SUBSEQUENT_REFUND_REQUESTED"), ("sendNotification", "PARTIALLY_REFUNDED")],
    ),
    "SUBSEQUENT_REFUND_REQUESTED": (
        2,
        ("refund", "/saga/refund", "refundRequested"),
        [
            ("partialRefundExecuted", "PARTIALLY_REFUNDED"),
            ("refundFailed", "SUBSEQUENT_REFUND_FAILED"),
            ("totalRefundExecuted", "TOTALLY_REFUNDED"),
        ],
    ),
    "SUBSEQUENT_REFUND_FAILED": (2, None, [("refundRequested", "SUBSEQUENT_REFUND_REQUESTED")]),
    "TOTALLY_REFUNDED": (3, None, [("sendNotification", "TOTALLY_REFUNDED")]),
    "PAYMENT_FAILED": (1000, None, [("sendNotification", "PAYMENT_FAILED")]),
}
BUSINESS_STATES = {0: "created", 1: "paid", 2: "partially refunded", 3: "totally refunded", 1000: "failed"}


def contract_saga_config(pgm_url: str) -> dict[str, Any]:
    """The contract's machine as a `saga.json`, its REST channels pointed at the PGM at `pgm_url`."""
    channels: dict[str, dict[str, Any]] = {}
    states = []
    for state_id, (business, command, transitions) in STATES.items():
        state: dict[str, Any] = {
            "id": state_id,
            "isFinal": False,
            "businessStateId": business,
            "outgoingTransitions": [{"inputEvent": event, "targetState": target} for event, target in transitions],
        }
        if command is not None:
            channel_id, path, label = command
            channels[channel_id] = {
                "id": channel_id,
                "type": "rest",
                "configurations": {"protocol": "http", "endpoint": "pgm", "method": "POST", "path": path},
            }
            state["outputCommand"] = {"channel": channel_id, "label": label}
        states.append(state)
    config = {
        "communicationProtocols": list(channels.values()),
        "persistencyManagement": {"type": "crud", "configurations": {"collectionName": "fm-transactions"}},
        "machineDefinition": {
            "initialState": "PAYMENT_CREATED",
            "creationEvent": "__created__",
            "states": states,
            "businessStates": [{"id": key, "description": text} for key, text in BUSINESS_STATES.items()],
            "businessEvents": [],
        },
        "settings": {},
    }
    return point_channels_at(config, pgm_url)

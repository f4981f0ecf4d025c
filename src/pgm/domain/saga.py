"""The saga contract's pure rules (docs/flow-manager.md): reading saga data, and the outcome -> event table.

Event payloads give the right saga metadata under both of the Flow Manager's merges: an event that
writes inside a nested object (payRequestData) sends the whole object, updated; refundDetails is
always sent whole.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgm.domain.money import amount_problem, currency_problem


class Route(enum.StrEnum):
    """The saga command routes (the path decides, never the label)."""

    PAY = "pay"
    REFUND = "refund"
    SUBSCRIPTION_SCHEDULE = "subscription/schedule"
    SUBSCRIPTION_START = "subscription/start"
    SUBSCRIPTION_PAY = "subscription/pay"
    SUBSCRIPTION_AUTHORIZATION = "subscription/authorization"
    PAY_BY_LINK = "pay-by-link"


class Event(enum.StrEnum):
    """Events the PGM sends to the Flow Manager."""

    PAYMENT_SCHEDULED = "paymentScheduled"
    PAYMENT_EXECUTED = "paymentExecuted"
    PAYMENT_FAILED = "paymentFailed"
    LINK_CREATED = "linkCreated"
    AUTHORIZATION_SCHEDULED = "authorizationScheduled"
    REFUND_REQUESTED = "refundRequested"
    REFUND_PENDING = "refundPending"
    PARTIAL_REFUND_EXECUTED = "partialRefundExecuted"
    TOTAL_REFUND_EXECUTED = "totalRefundExecuted"
    REFUND_FAILED = "refundFailed"


# Older sagas spell these differently: read both, write the new spelling.
LEGACY_SPELLINGS = {"paymentID": "paymentId", "shopTransactionID": "shopTransactionId"}
# The key of refundRequestData that correlates a refund command with a refund already started.
REFUND_CORRELATION = "refundId"
PAY_FIELDS = ("amount", "currency", "provider", "paymentMethod")
REFUND_FIELDS = ("provider", "paymentId", "refundRequestData")


def normalise(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata with legacy spellings folded into the current ones (current wins)."""
    result = dict(metadata)
    for old, new in LEGACY_SPELLINGS.items():
        if old in result:
            value = result.pop(old)
            result.setdefault(new, value)
    return result


def merge(stored: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """The saga data: the stored document's metadata, overridden by the command's payload."""
    return {**normalise(stored), **normalise(payload)}


def missing_fields(route: Route, payload: Mapping[str, Any]) -> list[str]:
    """Fields a command needs that its payload lacks (then the saga document is read)."""
    data = normalise(payload)
    needed = REFUND_FIELDS if route is Route.REFUND else PAY_FIELDS
    missing = [name for name in needed if data.get(name) in (None, "")]
    if route is not Route.REFUND and not isinstance(data.get("payRequestData"), dict):
        missing.append("payRequestData")
    if route is Route.REFUND and not isinstance(data.get("refundDetails"), dict):
        missing.append("refundDetails")
    return missing


class SagaDataError(Exception):
    """The saga data cannot make this command succeed; the message says why."""


@dataclass(frozen=True)
class SagaData:
    """What a command needs, read from payload and saga document."""

    saga_id: str
    provider: str
    payment_method: str
    amount: int
    currency: str
    shop_transaction_id: str
    payment_id: str | None
    pay_request_data: dict[str, Any] = field(default_factory=dict)
    refund_request_data: dict[str, Any] = field(default_factory=dict)
    refund_details: dict[str, Any] = field(default_factory=dict)

    @property
    def provider_data(self) -> dict[str, Any]:
        """payRequestData.providerData, or an empty object."""
        value = self.pay_request_data.get("providerData")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def subscription_info(self) -> dict[str, Any]:
        """payRequestData.subscriptionInfo, or an empty object."""
        value = self.pay_request_data.get("subscriptionInfo")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def started_refund_id(self) -> str | None:
        """refundRequestData.refundId: the PGM's id of a refund that started outside a saga command and
        that this refund command stands for (docs/flow-manager.md, "Refunds that start outside the saga")."""
        value = self.refund_request_data.get(REFUND_CORRELATION)
        return value if isinstance(value, str) and value else None

    @property
    def refunds_so_far(self) -> int:
        """How many successful refunds the saga knows of (numbers the next refund)."""
        amounts = self.refund_details.get("refundedAmounts")
        return len(amounts) if isinstance(amounts, list) else 0


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _object(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return copy.deepcopy(value) if isinstance(value, dict) else {}


def read_saga_data(saga_id: str, route: Route, data: Mapping[str, Any]) -> SagaData:
    """Validate merged saga data for a route; raise SagaDataError saying what is wrong."""
    provider = _text(data, "provider")
    if provider is None:
        raise SagaDataError("the saga has no provider")
    currency = _text(data, "currency")
    if currency is None:
        raise SagaDataError("the saga has no currency")
    problem = currency_problem(currency)
    if problem:
        raise SagaDataError(problem)
    amount = data.get("amount")
    refund_request = _object(data, "refundRequestData")
    if route is Route.REFUND:
        amount = refund_request.get("amount")
        if amount is None:
            raise SagaDataError("refundRequestData.amount is missing")
        problem = amount_problem(amount)
        if problem:
            raise SagaDataError(f"refundRequestData.{problem}")
        if _text(data, "paymentId") is None:
            raise SagaDataError("the saga has no paymentId to refund")
    else:
        if amount is None:
            raise SagaDataError("the saga has no amount")
        problem = amount_problem(amount)
        if problem:
            raise SagaDataError(problem)
    method = _text(data, "paymentMethod") or ("pay-by-link" if route is Route.PAY_BY_LINK else None)
    if method is None:
        raise SagaDataError("the saga has no paymentMethod")
    assert isinstance(amount, int)
    return SagaData(
        saga_id=saga_id,
        provider=provider,
        payment_method=method,
        amount=amount,
        currency=currency,
        # A saga without a merchant reference is referenced by its own id.
        shop_transaction_id=_text(data, "shopTransactionId") or saga_id,
        payment_id=_text(data, "paymentId"),
        pay_request_data=_object(data, "payRequestData"),
        refund_request_data=refund_request,
        refund_details=_object(data, "refundDetails"),
    )


def envelope(saga_id: str, event: Event, payload: dict[str, Any]) -> dict[str, Any]:
    """The event as the Flow Manager accepts it: exactly two levels and four keys."""
    return {"key": saga_id, "value": {"messageLabel": event.value, "messagePayload": payload}}


def with_redirect(pay_request_data: Mapping[str, Any], url: str | None, mobile: str | None) -> dict[str, Any]:
    """payRequestData updated with the redirect URLs (the whole object, for both merges)."""
    updated = copy.deepcopy(dict(pay_request_data))
    if url:
        updated["redirectToUrl"] = url
    if mobile:
        updated["redirectToUrlMobile"] = mobile
    return updated


def with_token(pay_request_data: Mapping[str, Any], token: str | None) -> dict[str, Any]:
    """payRequestData updated with subscriptionInfo.token (the whole object, for both merges)."""
    updated = copy.deepcopy(dict(pay_request_data))
    info = dict(updated.get("subscriptionInfo") or {})
    if token:
        info["token"] = token
    updated["subscriptionInfo"] = info
    return updated


def refund_details(succeeded: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """refundDetails: every successful refund of the saga in order, and their sum."""
    return {"totalRefundedAmount": sum(succeeded), "refundedAmounts": list(succeeded)}


def refund_requested(amount: int, refund_id: str) -> dict[str, Any]:
    """refundRequested's payload for a refund that started outside a saga command: the amount, and the
    refund's id, which the refund command the Flow Manager sends back carries to say it is that refund."""
    return {"refundRequestData": {"amount": amount, REFUND_CORRELATION: refund_id}}


def refund_settled_request(amount: int) -> dict[str, Any]:
    """refundRequestData once that refund has an outcome: the id is cleared (null), because under the deep
    merge it would otherwise stay in the metadata and make the next, new refund look like this one."""
    return {"amount": amount, REFUND_CORRELATION: None}


def taken_by_the_machine(sent: list[tuple[str, Any]], history_events: Any) -> list[bool]:
    """For each delivered event (label, payload), in order: whether the saga document's `history.events`
    shows the Flow Manager took it. The Flow Manager records only the events a state accepted, so an event
    delivered but absent from the history was ignored by the machine. Each history entry answers for one
    event; an entry without a payload is matched on its label alone."""
    remaining = (
        [entry for entry in history_events if isinstance(entry, dict)] if isinstance(history_events, list) else []
    )
    taken: list[bool] = []
    for label, payload in sent:
        match = next(
            (
                index
                for index, entry in enumerate(remaining)
                if entry.get("event") == label and ("payload" not in entry or entry["payload"] == payload)
            ),
            None,
        )
        if match is not None:
            del remaining[match]
        taken.append(match is not None)
    return taken

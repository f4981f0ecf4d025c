"""The saga command routes (docs/flow-manager.md): one per command, routed on the path, never on the label."""

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from pgm.domain.saga import Route
from pgm.http.dependencies import require_token
from pgm.http.errors import ErrorBody
from pgm.http.hot import HotRoute, find_route
from pgm.saga.inbox import Inbox

SUMMARIES = {
    Route.PAY: "Pay the saga's amount",
    Route.REFUND: "Refund (part of) the saga's payment",
    Route.SUBSCRIPTION_SCHEDULE: "Provider-managed recurring payment",
    Route.SUBSCRIPTION_START: "Merchant-managed subscription: create it and pay the first time",
    Route.SUBSCRIPTION_PAY: "Merchant-managed subscription: one more payment with the stored token",
    Route.SUBSCRIPTION_AUTHORIZATION: "Obtain the payer's authorization token needed before a subscription",
    Route.PAY_BY_LINK: "Create a payment link",
}


class CommandValue(BaseModel):
    """The command: its label (informational) and payload (the saga metadata, or part of it)."""

    model_config = ConfigDict(extra="ignore")

    messageLabel: StrictStr = Field(max_length=255)  # noqa: N815 - the Flow Manager's wire names
    messagePayload: dict[str, Any]  # noqa: N815


class CommandEnvelope(BaseModel):
    """A Flow Manager command: `key` is the saga id."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "key": "saga-0001",
                    "value": {
                        "messageLabel": "paymentScheduled",
                        "messagePayload": {
                            "amount": 1299,
                            "currency": "EUR",
                            "provider": "sandbox",
                            "paymentMethod": "credit-cards",
                            "shopTransactionId": "order-1001",
                            "payRequestData": {
                                "successRedirect": "https://shop.example/ok",
                                "failureRedirect": "https://shop.example/ko",
                                "providerData": {"sandboxOutcome": "REDIRECT_TO_URL"},
                            },
                        },
                    },
                }
            ]
        },
    )

    key: StrictStr = Field(min_length=1, max_length=255)
    value: CommandValue


class Accepted(BaseModel):
    """The command is stored and will be executed; its outcome arrives as an event."""

    accepted: bool = True
    sagaId: str  # noqa: N815
    deliveryId: str  # noqa: N815


def build_router() -> APIRouter:
    """POST /saga/... for every command."""
    router = APIRouter(prefix="/saga", tags=["saga"], dependencies=[Depends(require_token)])
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "Malformed envelope: the message names the field"},
        401: {"model": ErrorBody, "description": "Missing or wrong bearer token (when PGM_API_TOKEN is set)"},
    }
    for route in Route:
        router.add_api_route(
            f"/{route.value}",
            _handler(route),
            methods=["POST"],
            status_code=202,
            summary=SUMMARIES[route],
            responses=errors,
        )
    return router


def _handler(route: Route) -> Any:
    async def accept(command: CommandEnvelope, request: Request) -> Accepted:
        inbox: Inbox = request.app.state.service.saga_inbox
        delivery = await inbox.accept(route, command.key, command.value.messageLabel, command.value.messagePayload)
        return Accepted(sagaId=command.key, deliveryId=delivery)

    accept.__name__ = "saga_" + route.value.replace("/", "_").replace("-", "_")
    accept.__doc__ = (
        f"{SUMMARIES[route]}. The command is stored before the 202 and executed right after; "
        "its outcome reaches the Flow Manager as an event."
    )
    return accept


async def _token_checked(request: Request) -> dict[str, Any]:
    await require_token(request, request.app.state.service)
    return {}


def hot_routes(router: APIRouter) -> list[HotRoute]:
    """Every command route on the hot path (http/hot.py): the same endpoint, behind the same token check."""
    return [
        HotRoute(
            "POST",
            f"/saga/{route.value}",
            find_route(router, "POST", f"/saga/{route.value}"),
            lambda request, values: {"command": values["body"], "request": request},
            frozenset({"command", "request"}),
            prepare=_token_checked,
        )
        for route in Route
    ]

"""The provider-agnostic /v3 API (docs/api.md), dispatched to adapters through one interface. The policy
is the services' (services/policy.py, the same for saga commands); what they refuse, and what a provider
answers with an error, is answered by http/errors.py: REFUSALS."""

import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from pgm.domain.idempotency import storable_key
from pgm.domain.statuses import Status
from pgm.http.dependencies import Parts, ProviderName, provider_for, require_token
from pgm.http.errors import ApiError, ErrorBody
from pgm.http.hot import HotRoute, find_route
from pgm.http.schemas import (
    AuthorizationTokenResponse,
    ExpireResponse,
    Identifier,
    PayBody,
    PayByLinkBody,
    PayByLinkResponse,
    PaymentStatusBody,
    PayResponse,
    RefundBody,
    RefundResponse,
    SubscriptionBody,
    SubscriptionStatusResponse,
    SubscriptionUpdateResponse,
)
from pgm.providers.base import (
    CallbackRequest,
    Operation,
    PayRequest,
    PayResultCode,
    ProviderAdapter,
    RefundRequest,
    SubscriptionInfo,
)
from pgm.services.notifications import payment_status
from pgm.services.payments import PayOutcome
from pgm.services.policy import check_terms

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in {
        400: "Invalid request: the message names the field",
        401: "Missing or wrong bearer token (when PGM_API_TOKEN is set)",
        404: "Unknown or disabled provider, or unknown payment",
        409: "Idempotency-Key reused with a different request",
        413: "Request body too large",
        501: "The provider does not support this operation or payment method",
        502: "The provider could not be reached or answered nonsense",
    }.items()
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Repeat a request safely: the same key returns the first outcome and never pays twice.",
    ),
]


async def _payment_method(paymentMethod: str) -> str:  # noqa: N803 - the path parameter's name
    # async def, not a lambda: a plain def dependency would run in FastAPI's thread pool on every call.
    return paymentMethod


PaymentMethod = Annotated[str, Depends(_payment_method)]
SubscriptionToken = Annotated[Identifier, Path(description="The provider's id of the subscription")]


def _default_method(adapter: ProviderAdapter, path: str) -> str:
    """The method a path without a payment-method segment means (external providers, Mia's contract)."""
    method = adapter.capabilities.default_payment_method
    if method is None:
        raise ApiError(
            404,
            "not_found",
            f"provider {adapter.name} needs a payment method in the path: /v3/{adapter.name}/{{paymentMethod}}/{path}",
        )
    return method


def _operation_key(provider: str, operation: Operation, key: str | None) -> str:
    return storable_key(f"api:{provider}:{operation.value}:{key}") if key else f"api:{uuid.uuid4().hex}"


def _pay_request(body: PayBody, method: str, key: str, subscription: SubscriptionInfo | None = None) -> PayRequest:
    return PayRequest(
        amount=body.amount,
        currency=body.currency,
        shop_transaction_id=body.shopTransactionId,
        payment_method=method,
        idempotency_key=key,
        success_redirect_url=body.successRedirectUrl,
        failure_redirect_url=body.failureRedirectUrl,
        provider_data=body.providerData,
        subscription=subscription,
    )


async def run_pay(parts: Parts, adapter: ProviderAdapter, operation: Operation, request: PayRequest) -> PayOutcome:
    """Run a pay-like operation (its refusals are answered by http/errors.py: REFUSALS)."""
    outcome = await parts.payments.start(adapter, operation, request)
    parts.dispatcher.wake()
    return outcome


def _pay_response(outcome: PayOutcome) -> PayResponse:
    payment = outcome.payment
    refused = outcome.result is PayResultCode.KO
    extras: dict[str, Any] = {
        "redirectToUrl": None if refused else payment.redirect_url,
        "redirectToUrlMobile": None if refused else payment.redirect_url_mobile,
        "subscriptionToken": payment.subscription_token,
        "metadata": payment.provider_metadata or None,
    }
    # paymentId is always present (null while the provider's id is unknown); the extras only when set.
    return PayResponse(
        result=outcome.result.value,
        resultDescription=outcome.description,
        paymentId=payment.provider_payment_id,
        **{key: value for key, value in extras.items() if value is not None},
    )


def build_router() -> APIRouter:
    """All /v3 routes."""
    router = APIRouter(prefix="/v3", tags=["v3"], responses=ERRORS)
    secured = [Depends(require_token)]

    @router.post("/{provider}/refund", dependencies=secured, summary="Refund (part of) a payment")
    async def refund(
        body: RefundBody,
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.REFUND))],
        idempotency_key: IdempotencyKey = None,
    ) -> RefundResponse:
        """Refunds are checked against what is left (paid - refunded - pending) before the provider is called."""
        request = RefundRequest(
            payment_id=body.paymentId,
            amount=body.amount,
            currency=body.currency,
            idempotency_key=_operation_key(adapter.name, Operation.REFUND, idempotency_key),
            provider_data=body.providerData,
        )
        outcome = await parts.payments.refund(adapter, request)
        parts.dispatcher.wake()
        result: Literal["OK", "KO", "PENDING"] = (
            "OK" if outcome.status is Status.ACCEPTED else "KO" if outcome.status is Status.FAILED else "PENDING"
        )
        return RefundResponse(
            result=result,
            resultDescription=outcome.description,
            refundId=outcome.refund.provider_refund_id if outcome.refund else None,
        )

    @router.post("/{provider}/pay-by-link", dependencies=secured, summary="Create a payment link")
    async def pay_by_link(
        body: PayByLinkBody,
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.PAY_BY_LINK))],
        idempotency_key: IdempotencyKey = None,
    ) -> PayByLinkResponse:
        """The link is the provider's hosted page; the payment settles when the payer pays."""
        key = _operation_key(adapter.name, Operation.PAY_BY_LINK, idempotency_key)
        outcome = await run_pay(
            parts, adapter, Operation.PAY_BY_LINK, _pay_request(body, body.paymentMethod or "pay-by-link", key)
        )
        refused = outcome.result is PayResultCode.KO
        return PayByLinkResponse(
            resultCode="KO" if refused else "OK",
            resultDescription=outcome.description,
            paymentId=outcome.payment.provider_payment_id,
            link=None if refused else outcome.payment.link,
        )

    @router.get("/{provider}/status", dependencies=secured, summary="Look a payment up at the provider")
    async def status(
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.STATUS))],
        payment_id: Annotated[Identifier, Query(alias="paymentId")],
    ) -> PaymentStatusBody:
        """Asks the provider and records the answer when the payment is ours."""
        return await _status(parts, adapter, payment_id, notify=False)

    @router.get("/{provider}/check", dependencies=secured, summary="Look a payment up and notify")
    async def check(
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.STATUS))],
        payment_id: Annotated[Identifier, Query(alias="paymentId")],
    ) -> PaymentStatusBody:
        """Like /status, and the result is also pushed to PAYMENT_CALLBACK_URL."""
        return await _status(parts, adapter, payment_id, notify=True)

    # One route per method: a route with several methods publishes one operation id for all of them,
    # and the OpenAPI document must have unique ones (client generators key on them).
    for path, name in (
        ("/{provider}/callback", "callback"),
        ("/{provider}/callback/authorization", "authorization_callback"),
    ):
        for method in ("GET", "POST"):
            router.add_api_route(
                path,
                _callback,
                methods=[method],
                name=f"{name}_{method.lower()}",
                summary="Provider notifications (called by the provider, never needs the API token)",
                response_class=Response,
                responses={200: {"description": "What the provider expects as acknowledgement"}},
            )

    @router.post(
        "/{provider}/pay",
        dependencies=secured,
        summary="Pay (external providers: Mia's path, without a payment method)",
        response_model_exclude_unset=True,
    )
    async def pay_without_method(
        body: PayBody,
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.PAY))],
        idempotency_key: IdempotencyKey = None,
    ) -> PayResponse:
        """Forwarded to the external service's `/pay`; other providers need `/{paymentMethod}/pay`."""
        method = _default_method(adapter, "pay")
        key = _operation_key(adapter.name, Operation.PAY, idempotency_key)
        return _pay_response(await run_pay(parts, adapter, Operation.PAY, _pay_request(body, method, key)))

    subscription_operations = (
        ("schedule", Operation.SUBSCRIPTION_SCHEDULE, "Provider-managed subscription"),
        ("start", Operation.SUBSCRIPTION_START, "Merchant-managed subscription: create it and pay the first time"),
        ("pay", Operation.SUBSCRIPTION_PAY, "Merchant-managed subscription: pay again with the stored token"),
    )
    # Registered before the routes with a payment-method segment: `/v3/acme/subscription/pay` would
    # otherwise be read as paying with a method called "subscription".
    for action, operation, summary in subscription_operations:
        router.add_api_route(
            f"/{{provider}}/subscription/{action}",
            _subscription_endpoint(operation, with_method=False),
            methods=["POST"],
            dependencies=secured,
            summary=f"{summary} (external providers: Mia's path, without a payment method)",
            response_model=PayResponse,
            response_model_exclude_unset=True,
        )

    @router.post(
        "/{provider}/{paymentMethod}/pay", dependencies=secured, summary="Pay", response_model_exclude_unset=True
    )
    async def pay(
        body: PayBody,
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.PAY))],
        method: PaymentMethod,
        idempotency_key: IdempotencyKey = None,
    ) -> PayResponse:
        """Pay once: OK, KO, PENDING (outcome later) or REDIRECT_TO_URL (the payer acts on the hosted page)."""
        key = _operation_key(adapter.name, Operation.PAY, idempotency_key)
        return _pay_response(await run_pay(parts, adapter, Operation.PAY, _pay_request(body, method, key)))

    for action, operation, summary in subscription_operations:
        router.add_api_route(
            f"/{{provider}}/{{paymentMethod}}/subscription/{action}",
            _subscription_endpoint(operation, with_method=True),
            methods=["POST"],
            dependencies=secured,
            summary=summary,
            response_model=PayResponse,
            response_model_exclude_unset=True,
        )

    @router.post(
        "/{provider}/utility/{paymentMethod}/subscription/token",
        dependencies=secured,
        summary="Ask the payer for an authorization token",
    )
    async def authorization_token(
        body: PayBody,
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.AUTHORIZATION_TOKEN))],
        method: PaymentMethod,
        idempotency_key: IdempotencyKey = None,
    ) -> AuthorizationTokenResponse:
        """The token is usable for subscription payments once the payer approves it."""
        key = _operation_key(adapter.name, Operation.AUTHORIZATION_TOKEN, idempotency_key)
        outcome = await run_pay(parts, adapter, Operation.AUTHORIZATION_TOKEN, _pay_request(body, method, key))
        payment = outcome.payment
        return AuthorizationTokenResponse(
            result=outcome.result.value,
            resultDescription=outcome.description,
            token=payment.subscription_token or payment.provider_payment_id,
            redirectToUrl=payment.redirect_url,
            redirectToUrlMobile=payment.redirect_url_mobile,
        )

    @router.post(
        "/{provider}/subscription/update/{subscriptionToken}", dependencies=secured, summary="Change a subscription"
    )
    async def update_subscription(
        subscriptionToken: SubscriptionToken,  # noqa: N803
        body: SubscriptionBody,
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.SUBSCRIPTION_UPDATE))],
    ) -> SubscriptionUpdateResponse:
        """New amount or interval for the next charges."""
        request = _pay_request(body, "subscription", "update", body.subscriptionInfo.to_domain())
        check_terms(adapter, request.currency, request.subscription)
        found = await adapter.update_subscription(subscriptionToken, request)
        return SubscriptionUpdateResponse(
            result="OK", resultDescription=f"subscription is {found.status.value}", subscriptionToken=found.token
        )

    @router.get(
        "/{provider}/subscription/status/{subscriptionToken}", dependencies=secured, summary="A subscription's status"
    )
    async def subscription_status(
        subscriptionToken: SubscriptionToken,  # noqa: N803
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.SUBSCRIPTION_STATUS))],
    ) -> SubscriptionStatusResponse:
        """As the provider reports it."""
        found = await adapter.subscription_status(subscriptionToken)
        return SubscriptionStatusResponse(
            status=found.status.value,
            subscriptionToken=found.token,
            providerName=adapter.name,
            metadata=dict(found.metadata) or None,
        )

    async def expire_subscription(
        subscriptionToken: SubscriptionToken,  # noqa: N803
        adapter: Annotated[ProviderAdapter, Depends(provider_for(Operation.SUBSCRIPTION_EXPIRE))],
        shop_transaction_id: Annotated[str | None, Query(alias="shopTransactionId", max_length=255)] = None,
        reference: Annotated[
            str | None, Query(max_length=255, description="Older clients' name for shopTransactionId (Adyen)")
        ] = None,
    ) -> ExpireResponse:
        """No further charges (DELETE; POST is kept for older clients)."""
        found = await adapter.expire_subscription(subscriptionToken, shop_transaction_id or reference)
        return ExpireResponse(result="OK", resultDescription=f"subscription is {found.status.value}")

    for method in ("DELETE", "POST"):
        router.add_api_route(
            "/{provider}/subscription/expire/{subscriptionToken}",
            expire_subscription,
            methods=[method],
            name=f"expire_subscription_{method.lower()}",
            dependencies=secured,
            summary="Stop a subscription" + (" (for older clients: prefer DELETE)" if method == "POST" else ""),
        )
    return router


def _subscription_endpoint(operation: Operation, with_method: bool) -> Any:
    async def run(body: SubscriptionBody, parts: Parts, adapter: ProviderAdapter, method: str, key: str | None) -> Any:
        info = body.subscriptionInfo.to_domain()
        request = _pay_request(body, method, _operation_key(adapter.name, operation, key), info)
        return _pay_response(await run_pay(parts, adapter, operation, request))

    async def endpoint(
        body: SubscriptionBody,
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(operation))],
        method: PaymentMethod,
        idempotency_key: IdempotencyKey = None,
    ) -> PayResponse:
        result: PayResponse = await run(body, parts, adapter, method, idempotency_key)
        return result

    async def endpoint_without_method(
        body: SubscriptionBody,
        parts: Parts,
        adapter: Annotated[ProviderAdapter, Depends(provider_for(operation))],
        idempotency_key: IdempotencyKey = None,
    ) -> PayResponse:
        method = _default_method(adapter, operation.value)
        result: PayResponse = await run(body, parts, adapter, method, idempotency_key)
        return result

    chosen = endpoint if with_method else endpoint_without_method
    chosen.__name__ = operation.value.replace("/", "_") + ("" if with_method else "_without_method")
    chosen.__doc__ = f"{operation.value}: pay fields plus subscriptionInfo."
    return chosen


async def _status(parts: Parts, adapter: ProviderAdapter, payment_id: str, notify: bool) -> PaymentStatusBody:
    lookup, payment = await parts.payments.status(adapter, payment_id, check=notify)
    if payment is not None:
        if notify:
            async with parts.database.transaction() as tx:
                await parts.notifier.push(tx, payment)
            parts.dispatcher.wake()
        return PaymentStatusBody.model_validate(payment_status(payment))
    return PaymentStatusBody(
        status=lookup.status.public,
        paymentId=lookup.payment_id,
        shopTransactionId=lookup.shop_transaction_id,
        providerName=adapter.name,
        metadata=dict(lookup.metadata) or None,
    )


async def _callback(request: Request, parts: Parts, provider: ProviderName) -> Response:
    adapter = parts.registry.get(provider)
    if adapter is None:
        raise ApiError(404, "provider_not_found", f"provider {provider!r} is unknown or not enabled")
    if Operation.CALLBACK not in adapter.capabilities.operations:
        raise ApiError(501, "not_supported", f"provider {adapter.name} does not support callbacks")
    callback = CallbackRequest(
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers={key.lower(): value for key, value in request.headers.items()},
        body=await request.body(),
        received_at=parts.clock.now(),
    )
    answer = await parts.callbacks.receive(adapter, callback)
    parts.dispatcher.wake()
    return Response(answer.body, status_code=answer.status_code, media_type=answer.media_type)


def hot_callback_routes(router: APIRouter, providers: Iterable[str]) -> list[HotRoute]:
    """The callback routes of the enabled providers on the hot path (http/hot.py): one exact path per
    provider and method, served by the same endpoint (`{provider}` given as FastAPI gives it)."""
    hot = []
    for template in ("/v3/{provider}/callback", "/v3/{provider}/callback/authorization"):
        for method in ("GET", "POST"):
            route = find_route(router, method, template)
            for provider in providers:
                hot.append(
                    HotRoute(
                        method,
                        template.replace("{provider}", provider),
                        route,
                        lambda request, _values: {
                            "request": request,
                            "parts": request.app.state.service,
                            "provider": request.path_params["provider"],
                        },
                        frozenset({"request", "parts", "provider"}),
                        path_params={"provider": provider},
                    )
                )
    return hot


def hot_pay_route(router: APIRouter) -> HotRoute:
    """`POST /v3/{provider}/{paymentMethod}/pay` on the hot path (http/hot.py), on every path FastAPI's
    routing gives to it: the same endpoint, behind the same dependencies in FastAPI's order (the token,
    the provider's adapter for the operation and method, the method)."""
    route = find_route(router, "POST", "/v3/{provider}/{paymentMethod}/pay")
    # FastAPI's routing takes the first route that matches: the POST routes of the same shape (/v3, two
    # segments, /pay) this router declares before this one, /v3/{provider}/subscription/pay, own their
    # paths. No other router declares a route of that shape (the providers' own are under /v3/<name>/utility).
    earlier: list[APIRoute] = []
    for candidate in router.routes:
        if candidate is route:
            break
        if isinstance(candidate, APIRoute) and "POST" in (candidate.methods or ()):
            segments = candidate.path.split("/")
            if len(segments) == 5 and segments[1] == "v3" and segments[4] == "pay":
                earlier.append(candidate)
    resolve = provider_for(Operation.PAY)

    async def dependencies(request: Request) -> dict[str, Any]:
        parts = request.app.state.service
        await require_token(request, parts)
        adapter = await resolve(request, parts, request.path_params["provider"])
        method = await _payment_method(request.path_params["paymentMethod"])
        return {"parts": parts, "adapter": adapter, "method": method}

    def paths(path: str) -> dict[str, str] | None:
        # Only what FastAPI routes here: two non-empty segments between /v3/ and /pay, and no earlier route's.
        segments = path.split("/")
        if len(segments) != 5 or segments[1] != "v3" or segments[4] != "pay":
            return None
        provider, method = segments[2], segments[3]
        if not provider or not method or any(other.path_regex.match(path) for other in earlier):
            return None
        return {"provider": provider, "paymentMethod": method}

    return HotRoute(
        "POST",
        route.path,
        route,
        lambda _request, values: values,
        frozenset({"body", "parts", "adapter", "method", "idempotency_key"}),
        prepare=dependencies,
        match=paths,
    )

"""The sandbox's HTTP surface: its provider API (Bearer key), the pinned introspection endpoint, and
the hosted pages a payer clicks (docs/sandbox.md)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pgm.http.errors import ApiError
from pgm.http.hot import HotRoute, find_route
from pgm.http.responses import JSONResponse
from pgm.sandbox.books import (
    Books,
    Outcome,
    PaymentKind,
    PaymentOrder,
    SandboxRefusal,
    payment_json,
    refund_json,
    token_json,
)
from pgm.sandbox.context import TEMPLATES_FOLDER, SandboxContext
from pgm.services.policy import redirect_url_problem
from pgm.store.records import SandboxPayment, SandboxRefund, SandboxToken
from pgm.store.transaction import Transaction

INDEX_LIMIT = 50
TEMPLATES = Environment(loader=FileSystemLoader(TEMPLATES_FOLDER), autoescape=select_autoescape(["html"]))
MAX_DELAY_MS = 120_000


async def _context(request: Request) -> SandboxContext:
    # async def: a plain def dependency would run in FastAPI's thread pool on every sandbox call.
    context: SandboxContext = request.app.state.sandbox
    return context


Context = Annotated[SandboxContext, Depends(_context)]


def _error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status_code)


def _authorised(context: SandboxContext, authorization: str | None) -> bool:
    expected = f"Bearer {context.api_key}"
    return authorization is not None and hmac.compare_digest(authorization.encode(), expected.encode())


def _return_url(value: str) -> str:
    # The hosted page links the payer here from the PGM's origin: never a javascript: or data: URL, even
    # from a client of the sandbox's own API (the rule of services/policy.py, as any provider has).
    problem = redirect_url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


ReturnUrl = Annotated[str, AfterValidator(_return_url)]


class PaymentBody(BaseModel):
    """Create a payment at the sandbox."""

    model_config = ConfigDict(extra="ignore")

    kind: PaymentKind = PaymentKind.PAYMENT
    amount: int = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    reference: str = Field(min_length=1, max_length=255)
    outcome: Outcome = Outcome.REDIRECT_TO_URL
    delayMs: int = Field(default=0, ge=0, le=MAX_DELAY_MS)  # noqa: N815 - the sandbox API's own spelling
    successUrl: ReturnUrl | None = None  # noqa: N815
    failureUrl: ReturnUrl | None = None  # noqa: N815
    interval: str | None = None
    intervalCount: int | None = None  # noqa: N815
    token: str | None = None


class RefundBody(BaseModel):
    """Refund part of a sandbox payment."""

    model_config = ConfigDict(extra="ignore")

    amount: int = Field(gt=0)
    outcome: Outcome = Outcome.OK
    delayMs: int = Field(default=0, ge=0, le=MAX_DELAY_MS)  # noqa: N815


class TokenUpdateBody(BaseModel):
    """Change a subscription's terms."""

    model_config = ConfigDict(extra="ignore")

    amount: int | None = Field(default=None, gt=0)
    interval: str | None = None
    intervalCount: int | None = Field(default=None, gt=0)  # noqa: N815


def build_router() -> APIRouter:
    """All sandbox routes, mounted under /sandbox."""
    router = APIRouter(prefix="/sandbox", include_in_schema=False)
    api = "/api/v1"

    async def answer_later(context: SandboxContext, outcome: Outcome, delay_ms: int) -> None:
        delay = delay_ms / 1000
        if outcome is Outcome.TIMEOUT:
            # Answer only after the PGM has given up waiting: the answer is lost in transit.
            delay += context.provider_timeout_seconds + 1.0
        if delay > 0:
            await asyncio.sleep(delay)

    @router.post(api + "/payments")
    async def create_payment(
        body: PaymentBody,
        context: Context,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        if body.outcome is Outcome.ERROR:
            await answer_later(context, body.outcome, body.delayMs)
            return _error(500, "sandbox internal error (sandboxOutcome ERROR)")
        order = PaymentOrder(
            kind=body.kind,
            amount=body.amount,
            currency=body.currency,
            reference=body.reference,
            outcome=body.outcome,
            idempotency_key=idempotency_key,
            success_url=body.successUrl,
            failure_url=body.failureUrl,
            interval=body.interval,
            interval_count=body.intervalCount,
            token=body.token,
        )
        async with context.database.transaction() as tx:
            payment = await context.books.create_payment(tx, order, context.clock.now())
            result = payment_json(payment, context.books.public_url)
        await answer_later(context, body.outcome, body.delayMs)
        result["nextAction"] = "redirect" if body.outcome is Outcome.REDIRECT_TO_URL else None
        return JSONResponse(result, status_code=201)

    @router.get(api + "/payments/{payment_id}")
    async def get_payment(
        payment_id: str, context: Context, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        async with context.database.snapshot() as tx:
            payment = await tx.sandbox.payment(payment_id)
            if payment is None:
                return _error(404, f"no payment {payment_id}")
            refunds = await tx.sandbox.refunds_of([payment_id])
            # Its refunds, as real providers list them: a payment made before the PGM knew it is adopted
            # with them (docs/reliability.md#adopting-payments-made-before-the-switch).
            listed = [{"id": r.id, "amount": r.amount, "status": r.status} for r in refunds]
            return JSONResponse({**payment_json(payment, context.books.public_url), "refunds": listed})

    @router.get(api + "/payments")
    async def find_payments(
        context: Context,
        idempotency_key: Annotated[str, Query(alias="idempotencyKey")],
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        async with context.database.snapshot() as tx:
            payments = await tx.sandbox.payments_by_key(idempotency_key)
            return JSONResponse({"data": [payment_json(p, context.books.public_url) for p in payments]})

    @router.post(api + "/payments/{payment_id}/refunds")
    async def create_refund(
        payment_id: str,
        body: RefundBody,
        context: Context,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        if body.outcome not in (Outcome.OK, Outcome.KO, Outcome.PENDING):
            return _error(400, "refund outcome must be OK, KO or PENDING")
        try:
            async with context.database.transaction() as tx:
                payment = await tx.sandbox.payment(payment_id)
                if payment is None:
                    return _error(404, f"no payment {payment_id}")
                refund = await context.books.refund(
                    tx, payment, body.amount, body.outcome, idempotency_key, context.clock.now()
                )
                result = refund_json(refund, context.books.public_url)
        except SandboxRefusal as refusal:
            return _error(refusal.status_code, str(refusal))
        await answer_later(context, body.outcome, body.delayMs)
        return JSONResponse(result, status_code=201)

    @router.get(api + "/refunds/{refund_id}")
    async def get_refund(
        refund_id: str, context: Context, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        async with context.database.snapshot() as tx:
            refund = await tx.sandbox.refund(refund_id)
            if refund is None:
                return _error(404, f"no refund {refund_id}")
            return JSONResponse(refund_json(refund, context.books.public_url))

    @router.get(api + "/refunds")
    async def find_refunds(
        context: Context,
        idempotency_key: Annotated[str, Query(alias="idempotencyKey")],
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        async with context.database.snapshot() as tx:
            refunds = await tx.sandbox.refunds_by_key(idempotency_key)
            return JSONResponse({"data": [refund_json(r, context.books.public_url) for r in refunds]})

    @router.post(api + "/authorizations")
    async def create_authorization(
        body: PaymentBody,
        context: Context,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        if body.outcome is Outcome.ERROR:
            await answer_later(context, body.outcome, body.delayMs)
            return _error(500, "sandbox internal error (sandboxOutcome ERROR)")
        order = PaymentOrder(
            kind=body.kind,
            amount=body.amount,
            currency=body.currency,
            reference=body.reference,
            outcome=body.outcome,
            idempotency_key=idempotency_key,
            success_url=body.successUrl,
            failure_url=body.failureUrl,
        )
        async with context.database.transaction() as tx:
            token = await context.books.create_authorization(tx, order, context.clock.now())
            result = token_json(token, context.books.public_url)
        await answer_later(context, body.outcome, body.delayMs)
        result["nextAction"] = "redirect" if body.outcome is Outcome.REDIRECT_TO_URL else None
        return JSONResponse(result, status_code=201)

    @router.get(api + "/tokens")
    async def find_tokens(
        context: Context,
        idempotency_key: Annotated[str, Query(alias="idempotencyKey")],
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        async with context.database.snapshot() as tx:
            tokens = await tx.sandbox.tokens_by_key(idempotency_key)
            return JSONResponse({"data": [token_json(t, context.books.public_url) for t in tokens]})

    @router.get(api + "/tokens/{token}")
    async def get_token(
        token: str, context: Context, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        async with context.database.snapshot() as tx:
            found = await tx.sandbox.token(token)
            if found is None:
                return _error(404, f"no token {token}")
            return JSONResponse(token_json(found, context.books.public_url))

    @router.post(api + "/tokens/{token}")
    async def update_token(
        token: str, body: TokenUpdateBody, context: Context, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        async with context.database.transaction() as tx:
            found = await tx.sandbox.token(token)
            if found is None:
                return _error(404, f"no token {token}")
            if found.status in ("CANCELED", "EXPIRED"):
                return _error(409, f"token {token} is {found.status}")
            found.amount = body.amount or found.amount
            found.interval = body.interval or found.interval
            found.interval_count = body.intervalCount or found.interval_count
            found.updated_at = context.clock.now()
            return JSONResponse(token_json(found, context.books.public_url))

    @router.post(api + "/tokens/{token}/cancel")
    async def cancel_token(
        token: str, context: Context, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        if not _authorised(context, authorization):
            return _error(401, "invalid API key")
        async with context.database.transaction() as tx:
            found = await tx.sandbox.token(token)
            if found is None:
                return _error(404, f"no token {token}")
            if found.status not in ("CANCELED", "EXPIRED"):
                found.status = "EXPIRED" if found.status == "ACTIVE" else "CANCELED"
                found.updated_at = context.clock.now()
            return JSONResponse(token_json(found, context.books.public_url))

    @router.get("/payments")
    async def list_payments(
        context: Context,
        shop_transaction_id: Annotated[str, Query(alias="shopTransactionId", min_length=1)],
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Introspection: the sandbox's payments for a merchant reference, with their refunds."""
        if context.listing_needs_key and not _authorised(context, authorization):
            raise ApiError(401, "unauthorized", "in production the sandbox's listing needs its key (SANDBOX_API_KEY)")
        async with context.database.snapshot() as tx:
            payments = await tx.sandbox.payments_by_reference(shop_transaction_id)
            refunds = await tx.sandbox.refunds_of([p.id for p in payments])
        return JSONResponse([_introspection(p, [r for r in refunds if r.payment_id == p.id]) for p in payments])

    @router.get("/", response_class=HTMLResponse)
    async def index_page(context: Context) -> Response:
        """The newest sandbox payments, each pending one linking to its hosted page (the dev stack links here)."""
        if context.listing_needs_key:
            # A browser page cannot send the key; in production the hosted pages are reached by their URL only.
            return _page("index.html", 200, payments=None)
        async with context.database.snapshot() as tx:
            payments = await tx.sandbox.latest_payments(INDEX_LIMIT)
        return _page("index.html", 200, payments=payments)

    for page in HOSTED_PAGES:
        _add_hosted_page(router, page)

    return router


def hot_routes(router: APIRouter) -> list[HotRoute]:
    """The provider API's payment creation, called by the PGM's sandbox adapter in every saga, on the hot
    path (http/hot.py): the same endpoint, given its body and headers as FastAPI gives them."""
    path = "/sandbox/api/v1/payments"

    def arguments(request: Request, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "context": request.app.state.sandbox}

    return [
        HotRoute(
            "POST",
            path,
            find_route(router, "POST", path),
            arguments,
            frozenset({"body", "context", "authorization", "idempotency_key"}),
        )
    ]


@dataclass(frozen=True)
class HostedPage:
    """One kind of hosted page a payer decides on (a payment's checkout, an authorization, a refund): where it
    is, how its subject is found and decided, and what the result page says."""

    path: str
    what: str
    template: str
    variable: str  # the template's name for the subject
    find: Callable[[Transaction, str], Awaitable[Any | None]]
    decide: Callable[[Books, Transaction, Any, bool, float], Awaitable[None]]
    result: Callable[[Any], tuple[str, str, str | None]]


def _payment_result(payment: SandboxPayment) -> tuple[str, str, str | None]:
    approved = payment.status == "ACCEPTED"
    return (
        "Payment approved" if approved else "Payment declined",
        f"{payment.amount / 100:.2f} {payment.currency} for {payment.shop_transaction_id}",
        payment.success_url if approved else payment.failure_url,
    )


def _authorization_result(token: SandboxToken) -> tuple[str, str, str | None]:
    approved = token.status == "ACTIVE"
    return (
        "Authorization granted" if approved else "Authorization refused",
        f"Token {token.token} for {token.shop_transaction_id}",
        token.success_url if approved else token.failure_url,
    )


def _refund_result(refund: SandboxRefund) -> tuple[str, str, str | None]:
    if refund.status == "ACCEPTED":
        return "Refund approved", f"{refund.amount / 100:.2f} refunded on {refund.payment_id}", None
    return "Refund declined", f"Refund {refund.id} declined", None


HOSTED_PAGES = (
    HostedPage(
        "/checkout/{ident}",
        "payment",
        "checkout.html",
        "payment",
        lambda tx, ident: tx.sandbox.payment(ident),
        lambda books, tx, payment, approve, now: books.decide_payment(tx, payment, approve, now),
        _payment_result,
    ),
    HostedPage(
        "/authorizations/{ident}",
        "authorization",
        "authorization.html",
        "token",
        lambda tx, ident: tx.sandbox.token(ident),
        lambda books, tx, token, approve, now: books.decide_authorization(tx, token, approve, now),
        _authorization_result,
    ),
    HostedPage(
        "/refunds/{ident}",
        "refund",
        "refund.html",
        "refund",
        lambda tx, ident: tx.sandbox.refund(ident),
        lambda books, tx, refund, approve, now: books.decide_refund(tx, refund, approve, now),
        _refund_result,
    ),
)


def _add_hosted_page(router: APIRouter, page: HostedPage) -> None:
    """The page (GET) and the payer's decision on it (POST, a form with `decision`: approve or decline)."""

    async def show(ident: str, context: Context) -> Response:
        async with context.database.snapshot() as tx:
            subject = await page.find(tx, ident)
        if subject is None:
            return _page("missing.html", 404, what=page.what, ident=ident)
        return _page(page.template, 200, **{page.variable: subject})

    async def decide(ident: str, decision: Annotated[str, Form()], context: Context) -> Response:
        if decision not in ("approve", "decline"):
            return _page("missing.html", 400, what="decision", ident=decision)
        try:
            async with context.database.transaction() as tx:
                subject = await page.find(tx, ident)
                if subject is None:
                    return _page("missing.html", 404, what=page.what, ident=ident)
                await page.decide(context.books, tx, subject, decision == "approve", context.clock.now())
        except SandboxRefusal as refusal:
            return _page("result.html", refusal.status_code, title="Nothing to do", message=str(refusal), link=None)
        title, message, link = page.result(subject)
        return _page("result.html", 200, title=title, message=message, link=link)

    router.add_api_route(page.path, show, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route(page.path, decide, methods=["POST"], response_class=HTMLResponse)


def _introspection(payment: SandboxPayment, refunds: list[SandboxRefund]) -> dict[str, Any]:
    return {
        "paymentId": payment.id,
        "kind": payment.kind,
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "shopTransactionId": payment.shop_transaction_id,
        "refunds": [{"refundId": r.id, "amount": r.amount, "status": r.status} for r in refunds],
    }


def _page(template: str, status_code: int, **values: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(template).render(**values), status_code=status_code)

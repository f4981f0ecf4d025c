"""The existing PGM's Braintree utilities (docs/providers/braintree.md): a client token for Braintree's
client SDK, vaulting a customer, submitting a sale for settlement. Mounted when Braintree is enabled."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from pgm.http.dependencies import Parts, require_token
from pgm.http.errors import UTILITY_REJECTED, ApiError
from pgm.providers.base import ProviderRejected
from pgm.providers.braintree import ID_MAX, NONCE_MAX, BraintreeAdapter

# Braintree ids: letters, digits, - and _ (customer ids at most 36 characters).
BRAINTREE_ID = r"^[A-Za-z0-9_-]+$"


class ClientTokenResponse(BaseModel):
    """A client token for Braintree's client SDK, and whether the customer has a vaulted payment method."""

    client_token: str
    vaulted: bool


class CustomerCreateBody(BaseModel):
    """A customer to vault with the payment method of a nonce (the existing PGM's snake_case fields)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[str, Field(min_length=1, max_length=ID_MAX, pattern=BRAINTREE_ID)]
    nonce: Annotated[str, Field(min_length=1, max_length=NONCE_MAX)]


class CustomerCreateResponse(BaseModel):
    """The vaulted customer and the token of its payment method."""

    result: Literal["OK"]
    resultDescription: str  # noqa: N815
    customerId: str  # noqa: N815
    paymentToken: str | None = None  # noqa: N815


class SubmitResponse(BaseModel):
    """A sale submitted for settlement."""

    result: Literal["OK"]
    resultDescription: str  # noqa: N815
    paymentId: str  # noqa: N815
    status: str
    metadata: dict[str, Any] | None = None


async def braintree_adapter(parts: Parts) -> BraintreeAdapter:
    """The enabled Braintree adapter (404 when Braintree is not enabled)."""
    adapter = parts.registry.specific("braintree", BraintreeAdapter)
    if adapter is None:
        raise ApiError(404, "provider_not_found", "provider 'braintree' is unknown or not enabled")
    return adapter


Adapter = Annotated[BraintreeAdapter, Depends(braintree_adapter)]


async def _call(call: Any) -> Any:
    # The provider's other errors are answered as anywhere (http/errors.py: REFUSALS).
    try:
        return await call
    except ProviderRejected as exc:
        raise UTILITY_REJECTED.error(exc) from exc


def build_router() -> APIRouter:
    """The /v3/braintree/utility routes."""
    router = APIRouter(prefix="/v3/braintree/utility", tags=["braintree"], dependencies=[Depends(require_token)])

    @router.get("/customer/token", summary="Braintree: a client token (for the customer, when vaulted)")
    async def client_token(
        adapter: Adapter,
        customer_id: Annotated[str | None, Query(min_length=1, max_length=ID_MAX, pattern=BRAINTREE_ID)] = None,
    ) -> ClientTokenResponse:
        """An unknown customer gets a token without a customer, and `vaulted: false`."""
        token, vaulted = await _call(adapter.client_token(customer_id))
        return ClientTokenResponse(client_token=token, vaulted=vaulted)

    @router.post("/customer/create", summary="Braintree: vault a customer with a payment method nonce")
    async def create_customer(body: CustomerCreateBody, adapter: Adapter) -> CustomerCreateResponse:
        """Later payments and subscriptions use providerData.customerId (vaulted) or paymentToken."""
        created = await _call(adapter.create_customer(body.customer_id, body.nonce))
        return CustomerCreateResponse(
            result="OK",
            resultDescription="The customer was vaulted",
            customerId=created["customerId"],
            paymentToken=created["paymentToken"],
        )

    @router.post("/payment/submit", summary="Braintree: submit an authorized sale for settlement")
    async def submit(
        adapter: Adapter,
        transaction_id: Annotated[str, Query(min_length=1, max_length=ID_MAX, pattern=BRAINTREE_ID)],
    ) -> SubmitResponse:
        """Sales made by the PGM are submitted already; this settles one authorized elsewhere."""
        found = await _call(adapter.submit_for_settlement(transaction_id))
        return SubmitResponse(
            result="OK",
            resultDescription="The payment was submitted for settlement",
            paymentId=found.payment_id,
            status=found.status.public,
            metadata=dict(found.metadata) or None,
        )

    return router

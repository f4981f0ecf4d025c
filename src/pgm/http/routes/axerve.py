"""The existing PGM's Axerve utility (docs/providers/axerve.md): a payment opened at Axerve whose
paymentToken a client-side Axerve SDK uses to pay it. Mounted when Axerve is enabled."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from pgm.domain.money import MAX_AMOUNT
from pgm.http.dependencies import Parts, require_token
from pgm.http.errors import UTILITY_REJECTED, ApiError
from pgm.providers.axerve import AxerveAdapter
from pgm.providers.base import ProviderRejected

# Axerve's shopTransactionID: at most 50 characters, without the characters its back office refuses.
SHOP_TRANSACTION_ID = r"^[A-Za-z0-9._:/-]+$"


class PaymentTokenBody(BaseModel):
    """The existing PGM's body: the shop login (must be this PGM's), amount in minor units, reference."""

    model_config = ConfigDict(extra="forbid")

    shopLogin: Annotated[str, Field(min_length=1, max_length=30)]  # noqa: N815
    amount: Annotated[int, Field(gt=0, le=MAX_AMOUNT, strict=True)]
    shopTransactionId: Annotated[str, Field(min_length=1, max_length=50, pattern=SHOP_TRANSACTION_ID)]  # noqa: N815
    currency: Literal["EUR"]


class PaymentTokenResponse(BaseModel):
    """The paymentToken (and Axerve's paymentID) of the payment opened."""

    result: Literal["OK"]
    resultDescription: str  # noqa: N815
    paymentToken: str  # noqa: N815
    paymentId: str  # noqa: N815


async def axerve_adapter(parts: Parts) -> AxerveAdapter:
    """The enabled Axerve adapter (404 when Axerve is not enabled)."""
    adapter = parts.registry.specific("axerve", AxerveAdapter)
    if adapter is None:
        raise ApiError(404, "provider_not_found", "provider 'axerve' is unknown or not enabled")
    return adapter


Adapter = Annotated[AxerveAdapter, Depends(axerve_adapter)]


async def _call(call: Any) -> Any:
    # The provider's other errors are answered as anywhere (http/errors.py: REFUSALS).
    try:
        return await call
    except ProviderRejected as exc:
        raise UTILITY_REJECTED.error(exc) from exc


def build_router() -> APIRouter:
    """The /v3/axerve/utility routes."""
    router = APIRouter(prefix="/v3/axerve/utility", tags=["axerve"], dependencies=[Depends(require_token)])

    @router.post("/payment/token", summary="Axerve: open a payment and answer its paymentToken")
    async def payment_token(body: PaymentTokenBody, adapter: Adapter) -> PaymentTokenResponse:
        """For Axerve's client-side SDKs; the payment it makes is reported by Axerve's notification."""
        if body.shopLogin != adapter.shop_login:
            raise ApiError(400, "invalid_request", "shopLogin is not the Axerve shop of this PGM", "shopLogin")
        created = await _call(adapter.create_payment_token(body.amount, body.currency, body.shopTransactionId))
        return PaymentTokenResponse(
            result="OK",
            resultDescription="The payment was opened at Axerve",
            paymentToken=created["paymentToken"],
            paymentId=created["paymentId"],
        )

    return router

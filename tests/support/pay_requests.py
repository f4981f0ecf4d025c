"""The body of a /v3 pay request as a shop sends it, whatever the provider: each provider's tests add
the providerData and the amount their provider wants."""

from __future__ import annotations

from typing import Any


def pay_request(shop_id: str, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    """A pay request in euros with the shop's redirect URLs; `extra` adds or replaces fields."""
    return {
        "amount": amount,
        "currency": "EUR",
        "shopTransactionId": shop_id,
        "successRedirectUrl": "https://shop.example/ok",
        "failureRedirectUrl": "https://shop.example/ko",
        **extra,
    }

"""Money validation and idempotency keys."""

from __future__ import annotations

import hashlib

import pytest

from pgm.domain.idempotency import provider_idempotency_key, saga_operation_key
from pgm.domain.money import MAX_AMOUNT, amount_problem, currency_problem


@pytest.mark.parametrize("amount", [1, 1299, MAX_AMOUNT])
def test_valid_amounts(amount: int) -> None:
    assert amount_problem(amount) is None


@pytest.mark.parametrize(("amount", "problem"), [
    (0, "greater than zero"),
    (-1, "greater than zero"),
    (12.5, "integer"),
    ("100", "integer"),
    (True, "integer"),
    (MAX_AMOUNT + 1, "must not exceed"),
])  # fmt: skip
def test_invalid_amounts(amount: object, problem: str) -> None:
    assert problem in (amount_problem(amount) or "")


@pytest.mark.parametrize(
    ("code", "problem"),
    [("EUR", None), ("USD", None), ("eur", "upper case"), ("EURO", "three-letter"), ("ABC", "not an ISO 4217")],
)
def test_currencies(code: str, problem: str | None) -> None:
    found = currency_problem(code)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_provider_keys_are_deterministic_short_and_opaque() -> None:
    key = saga_operation_key("saga-1", "pay", 1)
    assert key == "saga:saga-1:pay:1"
    assert provider_idempotency_key(key) == provider_idempotency_key(key)
    assert provider_idempotency_key(key) != provider_idempotency_key(saga_operation_key("saga-1", "pay", 2))
    assert len(provider_idempotency_key("x" * 1000)) == 44
    assert "saga-1" not in provider_idempotency_key(key)
    # Known answer: the derivation is part of the contract with providers across upgrades.
    expected = "pgm-" + hashlib.sha256(b"saga:saga-1:pay:1").hexdigest()[:40]
    assert provider_idempotency_key("saga:saga-1:pay:1") == expected

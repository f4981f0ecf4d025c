"""The registry meters every adapter it hands out, once: no caller times or counts a provider call."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from pgm.observability.metrics import Metrics
from pgm.providers.base import Capabilities, Operation, OutcomeUnknown, PaymentLookup, ProviderAdapter
from pgm.providers.registry import MeteredAdapter, ProviderRegistry


class Unanswering(ProviderAdapter):
    """A provider whose status lookups time out and that has no payment to find."""

    name = "unanswering"
    capabilities = Capabilities(operations=frozenset({Operation.STATUS}), payment_methods=frozenset({"card"}))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        raise OutcomeUnknown(f"no answer about {payment_id}")

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        return None


def calls(metrics: Metrics, operation: str, outcome: str) -> float | None:
    labels = {"provider": "unanswering", "operation": operation, "outcome": outcome}
    return metrics.registry.get_sample_value("pgm_provider_calls_total", labels)


def test_every_operation_of_the_adapter_interface_is_passed_on_by_the_metered_adapter() -> None:
    # An operation added to ProviderAdapter and not passed on would reach the base class's
    # "not supported" through the registry, whatever the provider's adapter implements.
    public = [name for name, _ in inspect.getmembers(ProviderAdapter, inspect.isfunction) if not name.startswith("_")]
    assert public
    assert [name for name in public if name not in vars(MeteredAdapter)] == []


def test_calls_are_counted_by_provider_operation_and_outcome() -> None:
    metrics = Metrics()
    inner = Unanswering()
    registry = ProviderRegistry({"unanswering": inner}, metrics)
    adapter = registry.get("unanswering")
    assert adapter is not None
    assert (adapter.name, adapter.capabilities) == (inner.name, inner.capabilities)
    with pytest.raises(OutcomeUnknown):
        asyncio.run(adapter.payment_status("pay_1"))
    assert asyncio.run(adapter.find_payment("key", "order-1")) is None
    assert calls(metrics, "status", "unknown") == 1
    assert calls(metrics, "find payment", "ok") == 1
    assert calls(metrics, "status", "ok") is None
    assert registry.specific("unanswering", Unanswering) is inner
    assert registry.specific("unanswering", MeteredAdapter) is None

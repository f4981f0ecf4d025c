"""Which providers this process runs, built from ENABLED_PROVIDERS and EXTERNAL_PROVIDERS_CONFIG.

Each shipped provider is a module of this package exposing `REQUIRED_VARIABLES` (the environment
variables it cannot start without) and `build(settings) -> ProviderAdapter`. Modules are imported
only when their provider is enabled. Every adapter the registry hands out is metered: its calls to the
provider are timed and counted here, once, not by each caller.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from types import ModuleType
from typing import TypeVar

from pgm.config import ConfigurationError, Settings
from pgm.observability.metrics import Metrics
from pgm.outbound import Routes, routed
from pgm.providers.base import (
    CallbackAnswer,
    CallbackRequest,
    ListedRefund,
    Notification,
    Operation,
    OutcomeUnknown,
    PaymentLookup,
    PayRequest,
    PayResult,
    ProviderAdapter,
    ProviderRejected,
    RefundRequest,
    RefundResult,
    SubscriptionLookup,
)
from pgm.providers.sandbox import SandboxAdapter

SHIPPED: dict[str, str] = {
    "stripe": "pgm.providers.stripe",
    "adyen": "pgm.providers.adyen",
    "satispay": "pgm.providers.satispay",
    "nexi": "pgm.providers.nexi",
    "braintree": "pgm.providers.braintree",
    "soisy": "pgm.providers.soisy",
    "axerve": "pgm.providers.axerve",
    "flowpay": "pgm.providers.flowpay",
    "fnmpay": "pgm.providers.fnmpay",
    "scalapay": "pgm.providers.scalapay",
}
T = TypeVar("T")
A = TypeVar("A", bound=ProviderAdapter)


class MeteredAdapter(ProviderAdapter):
    """An adapter whose every call to its provider is timed and counted by provider, operation and outcome
    (pgm_provider_calls_total, pgm_provider_call_seconds), so no caller measures a call itself."""

    def __init__(self, inner: ProviderAdapter, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self._metrics = metrics

    async def _observed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await call
        except OutcomeUnknown:
            outcome = "unknown"
            raise
        except ProviderRejected:
            outcome = "refused"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self._metrics.provider_calls.labels(self.name, operation, outcome).inc()
            self._metrics.provider_latency.labels(self.name, operation).observe(time.perf_counter() - started)

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        self.inner.check(operation, request)

    async def pay(self, request: PayRequest) -> PayResult:
        return await self._observed(Operation.PAY, self.inner.pay(request))

    async def schedule_subscription(self, request: PayRequest) -> PayResult:
        return await self._observed(Operation.SUBSCRIPTION_SCHEDULE, self.inner.schedule_subscription(request))

    async def start_subscription(self, request: PayRequest) -> PayResult:
        return await self._observed(Operation.SUBSCRIPTION_START, self.inner.start_subscription(request))

    async def pay_subscription(self, request: PayRequest) -> PayResult:
        return await self._observed(Operation.SUBSCRIPTION_PAY, self.inner.pay_subscription(request))

    async def update_subscription(self, token: str, request: PayRequest) -> SubscriptionLookup:
        return await self._observed(Operation.SUBSCRIPTION_UPDATE, self.inner.update_subscription(token, request))

    async def subscription_status(self, token: str) -> SubscriptionLookup:
        return await self._observed(Operation.SUBSCRIPTION_STATUS, self.inner.subscription_status(token))

    async def expire_subscription(self, token: str, shop_transaction_id: str | None) -> SubscriptionLookup:
        call = self.inner.expire_subscription(token, shop_transaction_id)
        return await self._observed(Operation.SUBSCRIPTION_EXPIRE, call)

    async def authorization_token(self, request: PayRequest) -> PayResult:
        return await self._observed(Operation.AUTHORIZATION_TOKEN, self.inner.authorization_token(request))

    async def pay_by_link(self, request: PayRequest) -> PayResult:
        return await self._observed(Operation.PAY_BY_LINK, self.inner.pay_by_link(request))

    async def refund(self, request: RefundRequest) -> RefundResult:
        return await self._observed(Operation.REFUND, self.inner.refund(request))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        return await self._observed(Operation.STATUS, self.inner.payment_status(payment_id))

    async def payment_details(self, payment_id: str) -> PaymentLookup:
        return await self._observed("adoption lookup", self.inner.payment_details(payment_id))

    async def check_payment(self, payment_id: str) -> PaymentLookup:
        return await self._observed(Operation.STATUS, self.inner.check_payment(payment_id))

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        return await self._observed("find payment", self.inner.find_payment(idempotency_key, shop_transaction_id))

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        call = self.inner.refund_status(payment_id, refund_id, idempotency_key)
        return await self._observed("refund status", call)

    async def list_refunds(self, payment_id: str) -> list[ListedRefund]:
        return await self._observed("list refunds", self.inner.list_refunds(payment_id))

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        # Not a call to the provider (the callback came from it): verified and read here, not metered.
        return await self.inner.parse_callback(callback)

    def callback_answer(self) -> CallbackAnswer:
        return self.inner.callback_answer()

    async def aclose(self) -> None:
        await self.inner.aclose()


class ProviderRegistry:
    """The enabled adapters by name, metered."""

    def __init__(self, adapters: dict[str, ProviderAdapter], metrics: Metrics) -> None:
        self._adapters = {name: MeteredAdapter(adapter, metrics) for name, adapter in adapters.items()}

    def get(self, name: str) -> ProviderAdapter | None:
        """The adapter for an enabled provider, or None."""
        return self._adapters.get(name)

    def specific(self, name: str, kind: type[A]) -> A | None:
        """The enabled provider's own adapter when it is a `kind`, for the few routes that use what only
        that provider offers (Axerve's and Braintree's payment pages); None otherwise."""
        metered = self._adapters.get(name)
        return metered.inner if metered is not None and isinstance(metered.inner, kind) else None

    def __iter__(self) -> Iterator[ProviderAdapter]:
        return iter(self._adapters.values())

    @property
    def names(self) -> list[str]:
        """Enabled provider names."""
        return sorted(self._adapters)

    async def aclose(self) -> None:
        """Close every adapter's connections."""
        for adapter in self._adapters.values():
            await adapter.aclose()


def _module(name: str) -> ModuleType:
    module_name = SHIPPED.get(name)
    if module_name is None:
        available = ", ".join(sorted(["sandbox", *SHIPPED]))
        raise ConfigurationError(
            f"ENABLED_PROVIDERS names {name!r}, which is neither shipped ({available}) "
            "nor an external provider of EXTERNAL_PROVIDERS_CONFIG"
        )
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"provider {name!r} is not available in this version") from exc


def validate(settings: Settings) -> None:
    """Refuse to start with an enabled provider whose required variables are missing, naming them."""
    external = {service.name for service in settings.external_services}
    problems = []
    for name in settings.enabled_providers:
        if name == "sandbox" or name in external:
            continue
        module = _module(name)
        required: tuple[str, ...] = getattr(module, "REQUIRED_VARIABLES", ())
        # A provider may accept older names for a variable (Axerve's GESTPAY_*): any of them will do.
        aliases: dict[str, tuple[str, ...]] = getattr(module, "ALIASES", {})
        missing = [
            variable
            for variable in required
            if not any(settings.provider_env.get(name) for name in (variable, *aliases.get(variable, ())))
        ]
        if missing:
            problems.append(
                f"provider {name} is enabled but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
            )
    if problems:
        raise ConfigurationError("; ".join(problems))


def check_values(settings: Settings) -> None:
    """Build each enabled shipped provider once, so a variable with a bad value stops start-up too."""
    validate(settings)
    external = {service.name for service in settings.external_services}
    for name in settings.enabled_providers:
        if name != "sandbox" and name not in external:
            adapter = _module(name).build(settings)
            asyncio.run(adapter.aclose())


def build_registry(
    settings: Settings, sandbox_secret: Callable[[], str], metrics: Metrics, routes: Routes | None = None
) -> ProviderRegistry:
    """Instantiate the enabled providers (validated first). `routes` hands chosen origins to in-process
    transports (a test's provider fakes, `pgm.outbound.RoutedTransport`); production passes none."""
    validate(settings)
    adapters: dict[str, ProviderAdapter] = {}
    external = {service.name: service for service in settings.external_services}
    for name in settings.enabled_providers:
        if name == "sandbox":
            adapters[name] = SandboxAdapter(
                settings.sandbox_api_url,
                settings.sandbox_api_key,
                sandbox_secret,
                settings.provider_timeout_seconds,
                transport=routed(routes),
            )
        elif name in external:
            from pgm.providers.external import ExternalAdapter

            adapters[name] = ExternalAdapter(
                external[name], settings.provider_timeout_seconds, transport=routed(routes)
            )
        else:
            build = _module(name).build
            # Braintree's official SDK does its own HTTP (requests): its build takes no transport.
            takes_transport = "transport" in inspect.signature(build).parameters
            adapters[name] = build(settings, transport=routed(routes)) if takes_transport else build(settings)
    for name, service in external.items():
        # A configured external service is usable without listing it in ENABLED_PROVIDERS, as before.
        if name not in adapters:
            from pgm.providers.external import ExternalAdapter

            adapters[name] = ExternalAdapter(service, settings.provider_timeout_seconds, transport=routed(routes))
    return ProviderRegistry(adapters, metrics)

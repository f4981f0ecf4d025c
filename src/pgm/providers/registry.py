"""Which providers this process runs, built from ENABLED_PROVIDERS and EXTERNAL_PROVIDERS_CONFIG.

Each shipped provider is a module of this package exposing `REQUIRED_VARIABLES` (the environment
variables it cannot start without) and `build(settings) -> ProviderAdapter`. Modules are imported
only when their provider is enabled.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Iterator
from types import ModuleType

from pgm.config import ConfigurationError, Settings
from pgm.providers.base import ProviderAdapter
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


class ProviderRegistry:
    """The enabled adapters by name."""

    def __init__(self, adapters: dict[str, ProviderAdapter]) -> None:
        self._adapters = adapters

    def get(self, name: str) -> ProviderAdapter | None:
        """The adapter for an enabled provider, or None."""
        return self._adapters.get(name)

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


def build_registry(settings: Settings, sandbox_secret: Callable[[], str]) -> ProviderRegistry:
    """Instantiate the enabled providers (validated first)."""
    validate(settings)
    adapters: dict[str, ProviderAdapter] = {}
    external = {service.name: service for service in settings.external_services}
    for name in settings.enabled_providers:
        if name == "sandbox":
            adapters[name] = SandboxAdapter(
                settings.sandbox_api_url, settings.sandbox_api_key, sandbox_secret, settings.provider_timeout_seconds
            )
        elif name in external:
            from pgm.providers.external import ExternalAdapter

            adapters[name] = ExternalAdapter(external[name], settings.provider_timeout_seconds)
        else:
            adapters[name] = _module(name).build(settings)
    for name, service in external.items():
        # A configured external service is usable without listing it in ENABLED_PROVIDERS, as before.
        if name not in adapters:
            from pgm.providers.external import ExternalAdapter

            adapters[name] = ExternalAdapter(service, settings.provider_timeout_seconds)
    return ProviderRegistry(adapters)

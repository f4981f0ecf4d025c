"""Which providers this process runs, built from ENABLED_PROVIDERS."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pgm.config import ConfigurationError, Settings
from pgm.providers.base import ProviderAdapter
from pgm.providers.sandbox import SandboxAdapter


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


def build_registry(settings: Settings, sandbox_secret: Callable[[], str]) -> ProviderRegistry:
    """Instantiate the enabled providers; unknown names stop start-up."""
    adapters: dict[str, ProviderAdapter] = {}
    for name in settings.enabled_providers:
        if name == "sandbox":
            adapters[name] = SandboxAdapter(
                settings.sandbox_api_url, settings.sandbox_api_key, sandbox_secret, settings.provider_timeout_seconds
            )
        else:
            raise ConfigurationError(
                f"ENABLED_PROVIDERS names {name!r}, which this version does not ship (available: sandbox)"
            )
    return ProviderRegistry(adapters)

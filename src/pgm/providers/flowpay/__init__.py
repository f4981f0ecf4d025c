"""FlowPay (Italian payment initiation service: account-to-account transfers), in its two API generations
(docs/providers/flowpay.md): `v2.py`, the current public API, and `legacy.py`, the older OAuth one that the
existing PGM's FLOWPAY_CORE_BASE_URL names; `rules.py` holds what both accept. `build` picks the generation
from the variables."""

from __future__ import annotations

from collections.abc import Mapping

from pgm.config import ConfigurationError, Settings
from pgm.outbound import Transport
from pgm.providers.base import ProviderAdapter
from pgm.providers.flowpay.legacy import FlowPayLegacyAdapter, FlowPayLegacyConfig
from pgm.providers.flowpay.v2 import SANDBOX_BASE_URL, FlowPayAdapter, FlowPayConfig, parse_public_key

__all__ = ["REQUIRED_VARIABLES", "SANDBOX_BASE_URL", "FlowPayAdapter", "FlowPayLegacyAdapter", "build"]

REQUIRED_VARIABLES: tuple[str, ...] = ("FLOWPAY_API_BASE_URL", "FLOWPAY_CLIENT_SECRET", "FLOWPAY_PUBLIC_KEY")


def build(settings: Settings, transport: Transport | None = None) -> ProviderAdapter:
    """The FlowPay adapter from FLOWPAY_* variables; raise ConfigurationError naming a bad one."""
    env = settings.provider_env
    base_url = env.get("FLOWPAY_API_BASE_URL", "").strip().rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"FLOWPAY_API_BASE_URL must be an http(s) URL, e.g. {SANDBOX_BASE_URL}")
    callback_url = env.get("FLOWPAY_CALLBACK_URL", "").strip() or f"{settings.public_url}/v3/flowpay/callback"
    if not callback_url.startswith(("http://", "https://")) or "#" in callback_url:
        raise ConfigurationError(
            "FLOWPAY_CALLBACK_URL must be the PGM's callback endpoint, e.g. https://pgm.example.com/v3/flowpay/callback"
        )
    api_key = env.get("FLOWPAY_CLIENT_SECRET", "").strip()
    if not api_key:
        raise ConfigurationError("FLOWPAY_CLIENT_SECRET is empty")
    if env.get("FLOWPAY_CORE_BASE_URL", "").strip():
        return _build_legacy(env, base_url, api_key, callback_url, settings.provider_timeout_seconds, transport)
    try:
        public_key = parse_public_key(env.get("FLOWPAY_PUBLIC_KEY", ""))
    except ValueError as exc:
        raise ConfigurationError(
            f"FLOWPAY_PUBLIC_KEY must be FlowPay's Ed25519 public key (PEM, or the JWK's base64url x): {exc}"
        ) from exc
    return FlowPayAdapter(
        FlowPayConfig(
            api_base_url=base_url,
            api_key=api_key,
            public_key=public_key,
            callback_url=callback_url,
            timeout_seconds=settings.provider_timeout_seconds,
        ),
        transport=transport,
    )


def _build_legacy(
    env: Mapping[str, str],
    api_base_url: str,
    client_secret: str,
    callback_url: str,
    timeout_seconds: float,
    transport: Transport | None,
) -> ProviderAdapter:
    """The older generation, which Mia's FLOWPAY_CORE_BASE_URL names: it also needs the OAuth client id
    and the checkout host (docs/providers/flowpay.md)."""
    missing = [name for name in ("FLOWPAY_CLIENT_ID", "FLOWPAY_CHECKOUT_BASE_URL") if not env.get(name, "").strip()]
    if missing:
        raise ConfigurationError(
            f"FLOWPAY_CORE_BASE_URL selects FlowPay's OAuth API, which also needs {', '.join(missing)}"
        )
    urls = {name: env[name].strip().rstrip("/") for name in ("FLOWPAY_CORE_BASE_URL", "FLOWPAY_CHECKOUT_BASE_URL")}
    for name, url in urls.items():
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{name} must be an http(s) URL")
    return FlowPayLegacyAdapter(
        FlowPayLegacyConfig(
            api_base_url=api_base_url,
            core_base_url=urls["FLOWPAY_CORE_BASE_URL"],
            checkout_base_url=urls["FLOWPAY_CHECKOUT_BASE_URL"],
            client_id=env["FLOWPAY_CLIENT_ID"].strip(),
            client_secret=client_secret,
            callback_url=callback_url,
            timeout_seconds=timeout_seconds,
        ),
        transport=transport,
    )

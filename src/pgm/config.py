"""Configuration from the environment, with the existing PGM's variable names (docs/configuration.md)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_HTTP_PORT = 3000
DEFAULT_DATABASE_URL = "sqlite:///pgm.sqlite3"
# The URL schemes accepted: PostgreSQL (psycopg 3 migrates, asyncpg serves) and SQLite (the standard
# library's sqlite3; `sqlite+aiosqlite` is still accepted and means the same file).
SUPPORTED_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite", "postgresql+psycopg"})
# The sandbox API's documented key: fine on a laptop, never accepted in production (docs/sandbox.md).
DEFAULT_SANDBOX_API_KEY = "sk_sandbox_local"
MIN_SANDBOX_PRODUCTION_KEY_LENGTH = 16
DEVELOPMENT = "development"
PRODUCTION = "production"


class ConfigurationError(Exception):
    """The environment cannot start the service; the message says what to set."""


@dataclass(frozen=True)
class ExternalService:
    """A provider the PGM does not ship, reached by forwarding /v3/<name>/... to its base URL."""

    name: str
    base_url: str


def _variable(name: str, minimum: float = 0, maximum: int | None = None) -> dict[str, Any]:
    """A number setting's environment variable and bounds, kept with its field (see `_number`)."""
    return {"variable": name, "minimum": minimum, "maximum": maximum}


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, validated once at start-up."""

    http_port: int = field(default=DEFAULT_HTTP_PORT, metadata=_variable("HTTP_PORT", minimum=1, maximum=65535))
    log_level: str = "INFO"
    # Mia's HTTP_LOG_LEVEL: `basic` logs each request to a provider, the Flow Manager and the notified services.
    http_log_level: str = "none"
    # What the environment sets that this PGM reads differently or not at all: logged at start-up.
    warnings: tuple[str, ...] = ()
    enabled_providers: tuple[str, ...] = ("sandbox",)
    payment_callback_url: str | None = None
    public_url: str = f"http://localhost:{DEFAULT_HTTP_PORT}"
    database_url: str = DEFAULT_DATABASE_URL
    flow_manager_url: str | None = None
    saga_crud_url: str | None = None
    external_services: tuple[ExternalService, ...] = ()
    api_token: str | None = None
    max_body_bytes: int = field(default=1024 * 1024, metadata=_variable("PGM_MAX_BODY_BYTES", minimum=1024))
    # A provider notification is a few kilobytes; a quarter of a megabyte leaves room for Adyen's batches.
    callback_max_bytes: int = field(default=256 * 1024, metadata=_variable("PGM_MAX_CALLBACK_BYTES", minimum=1024))
    callback_retention_seconds: float = field(
        default=30 * 24 * 3600.0, metadata=_variable("PGM_CALLBACK_RETENTION_SECONDS", minimum=1)
    )
    max_in_flight: int = field(default=128, metadata=_variable("PGM_MAX_IN_FLIGHT", minimum=1))
    provider_timeout_seconds: float = field(default=10.0, metadata=_variable("PGM_PROVIDER_TIMEOUT_SECONDS"))
    sandbox_api_key: str = DEFAULT_SANDBOX_API_KEY
    environment: str = DEVELOPMENT
    sandbox_webhook_secret: str | None = None
    sandbox_base_url: str | None = None
    sandbox_webhook_url: str | None = None
    outbox_poll_seconds: float = field(default=0.5, metadata=_variable("PGM_OUTBOX_POLL_SECONDS"))
    outbox_max_attempts: int = field(default=10, metadata=_variable("PGM_OUTBOX_MAX_ATTEMPTS", minimum=1))
    outbox_backoff_base_seconds: float = field(default=1.0, metadata=_variable("PGM_OUTBOX_BACKOFF_BASE_SECONDS"))
    outbox_backoff_max_seconds: float = field(default=300.0, metadata=_variable("PGM_OUTBOX_BACKOFF_MAX_SECONDS"))
    reconcile_poll_seconds: float = field(default=5.0, metadata=_variable("PGM_RECONCILE_POLL_SECONDS"))
    reconcile_after_seconds: float = field(default=60.0, metadata=_variable("PGM_RECONCILE_AFTER_SECONDS"))
    reconcile_max_interval_seconds: float = field(
        default=3600.0, metadata=_variable("PGM_RECONCILE_MAX_INTERVAL_SECONDS")
    )
    reconcile_max_attempts: int = field(default=30, metadata=_variable("PGM_RECONCILE_MAX_ATTEMPTS", minimum=1))
    # The refund watch (docs/reliability.md#refunds-made-at-the-provider): a week, first look after 10 min.
    refund_watch_seconds: float = field(default=7 * 24 * 3600.0, metadata=_variable("PGM_REFUND_WATCH_SECONDS"))
    refund_watch_after_seconds: float = field(default=600.0, metadata=_variable("PGM_REFUND_WATCH_AFTER_SECONDS"))
    inbox_lease_seconds: float = field(default=5.0, metadata=_variable("PGM_INBOX_LEASE_SECONDS"))
    database_pool_size: int = field(default=10, metadata=_variable("PGM_DATABASE_POOL_SIZE", minimum=1))
    database_max_overflow: int = field(default=20, metadata=_variable("PGM_DATABASE_MAX_OVERFLOW", minimum=0))
    database_pool_timeout_seconds: float = field(default=30.0, metadata=_variable("PGM_DATABASE_POOL_TIMEOUT_SECONDS"))
    database_connect_timeout_seconds: float = field(
        default=10.0, metadata=_variable("PGM_DATABASE_CONNECT_TIMEOUT_SECONDS")
    )
    inbox_max_attempts: int = field(default=30, metadata=_variable("PGM_INBOX_MAX_ATTEMPTS", minimum=1))
    header_timeout_seconds: float = field(default=10.0, metadata=_variable("PGM_HEADER_TIMEOUT_SECONDS"))
    provider_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def internal_url(self) -> str:
        """How this process reaches itself (the sandbox and its callbacks live in it)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sandbox_api_url(self) -> str:
        """Where the sandbox adapter sends its API calls: over HTTP, as to any remote provider."""
        return (self.sandbox_base_url or f"{self.internal_url}/sandbox").rstrip("/")

    @property
    def sandbox_webhook_target(self) -> str:
        """Where the sandbox this process serves sends its signed webhooks: this PGM's own callback route,
        or the PGM that SANDBOX_WEBHOOK_URL names when this process serves the sandbox to another one."""
        return self.sandbox_webhook_url or f"{self.internal_url}/v3/sandbox/callback"

    @property
    def production(self) -> bool:
        """Production: the sandbox is off unless deliberately enabled with a key of its own (docs/sandbox.md)."""
        return self.environment == PRODUCTION

    @property
    def saga_enabled(self) -> bool:
        """The saga API is on when a Flow Manager is configured (docs/flow-manager.md)."""
        return bool(self.flow_manager_url)


def _number(env: Mapping[str, str], setting: Field[Any]) -> int | float:
    """A number setting from its variable (its field's default when unset or empty), within its bounds."""
    name, minimum, maximum = setting.metadata["variable"], setting.metadata["minimum"], setting.metadata["maximum"]
    raw = env.get(name)
    if raw is None or raw == "":
        default: int | float = setting.default  # type: ignore[assignment]
        return default
    if setting.type == "int":
        try:
            value: int | float = int(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc
    else:
        try:
            value = float(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{name} must be a number, got {raw!r}") from exc
        if value < 0:
            raise ConfigurationError(f"{name} must not be negative, got {value}")
    # PGM_CALLBACK_RETENTION_SECONDS has a minimum of 1: the pruning loop runs as often as the retention.
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be at most {maximum}, got {value}")
    return value


NUMBERS = {setting.name: setting for setting in fields(Settings) if "variable" in setting.metadata}


def is_loopback_url(url: str) -> bool:
    """Whether a URL points at this machine only (localhost, 127.0.0.0/8, ::1)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _environment(env: Mapping[str, str], public_url: str) -> str:
    """PGM_ENVIRONMENT when set; otherwise production as soon as the PGM is reachable beyond this machine."""
    raw = (env.get("PGM_ENVIRONMENT") or "").strip().lower()
    if raw in (DEVELOPMENT, PRODUCTION):
        return raw
    if raw:
        raise ConfigurationError(f"PGM_ENVIRONMENT must be {DEVELOPMENT} or {PRODUCTION}, got {raw!r}")
    return DEVELOPMENT if is_loopback_url(public_url) else PRODUCTION


def _check_sandbox_in_production(env: Mapping[str, str], public_url: str) -> None:
    """The sandbox moves fake money, and anyone who knows its key can approve and refund through it: in
    production it runs only when enabled deliberately, with a key of its own, never the documented one."""
    key = env.get("SANDBOX_API_KEY") or ""
    if key == DEFAULT_SANDBOX_API_KEY or len(key) < MIN_SANDBOX_PRODUCTION_KEY_LENGTH:
        why = (
            "PGM_ENVIRONMENT is production"
            if env.get("PGM_ENVIRONMENT")
            else f"PGM_PUBLIC_URL {public_url} is not a loopback address"
        )
        raise ConfigurationError(
            f"the sandbox is a development provider and this is production ({why}): leave sandbox out of "
            f"ENABLED_PROVIDERS, or enable it deliberately with SANDBOX_API_KEY set to a secret of its own "
            f"(at least {MIN_SANDBOX_PRODUCTION_KEY_LENGTH} characters, not the documented default)"
        )


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise ConfigurationError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw


def _external_services(path: str | None) -> tuple[ExternalService, ...]:
    if not path:
        return ()
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"EXTERNAL_PROVIDERS_CONFIG: cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"EXTERNAL_PROVIDERS_CONFIG: {path} is not valid JSON: {exc}") from exc
    entries = document.get("externalServices") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError('EXTERNAL_PROVIDERS_CONFIG: expected {"externalServices": [...]}')
    services = []
    for index, entry in enumerate(entries):
        name = entry.get("externalService") if isinstance(entry, dict) else None
        base_url = entry.get("baseUrl") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or not isinstance(base_url, str):
            raise ConfigurationError(
                f"EXTERNAL_PROVIDERS_CONFIG: externalServices[{index}] needs externalService and baseUrl strings"
            )
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"EXTERNAL_PROVIDERS_CONFIG: baseUrl of {name} must be an http(s) URL")
        services.append(ExternalService(name=name, base_url=base_url.rstrip("/")))
    return tuple(services)


def database_url_from(env: Mapping[str, str]) -> str:
    """PGM_DATABASE_URL, checked and normalised (the embedded SQLite file when unset)."""
    raw = (env.get("PGM_DATABASE_URL") or "").strip() or DEFAULT_DATABASE_URL
    url = normalise_database_url(raw)
    try:
        driver = make_url(url).drivername
    except ArgumentError as exc:
        raise ConfigurationError(
            "PGM_DATABASE_URL is not a database URL (expected postgresql://user@host/db or sqlite:///file)"
        ) from exc
    if driver not in SUPPORTED_DRIVERS:
        # Without this, SQLAlchemy would try to import the scheme's driver and fail with ModuleNotFoundError.
        raise ConfigurationError(
            f"PGM_DATABASE_URL: {driver.split('+')[0]!r} is not supported; use postgresql://... or sqlite:///..."
        )
    return url


# LOG_LEVEL as the old PGM (Quarkus: JBoss and java.util.logging names) and Mia's Node services (pino) spell
# it, case-insensitively, to the level it means here.
LOG_LEVELS = {
    "ALL": "DEBUG",
    "TRACE": "DEBUG",
    "FINEST": "DEBUG",
    "FINER": "DEBUG",
    "FINE": "DEBUG",
    "DEBUG": "DEBUG",
    "CONFIG": "INFO",
    "INFO": "INFO",
    "WARN": "WARNING",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "SEVERE": "ERROR",
    "FATAL": "CRITICAL",
    "CRITICAL": "CRITICAL",
    "OFF": "CRITICAL",
    "SILENT": "CRITICAL",
}
HTTP_LOG_LEVELS = ("none", "basic", "headers", "body")
# Variables of the old PGM that mean nothing here: accepted, and a warning says why.
WITHOUT_MEANING = {
    "SUBSCRIPTION_HANDLER_URL": "this PGM calls no Subscription Handler: further payments of a merchant-managed "
    "subscription are asked for with /saga/subscription/pay or /v3/{provider}/{paymentMethod}/subscription/pay",
    "ADAPTIVE_CHECKOUT_CRUD_URL": "this PGM has no Adaptive Checkout (no /saga/payment-methods): the saga's "
    "metadata names provider and paymentMethod",
    "ADAPTIVE_CHECKOUT_CACHE_EXPIRE_MIN": "this PGM has no Adaptive Checkout, so nothing is cached",
    "DYNAMIC_PAYMENT_METHOD_CONFIG_PATH": "this PGM has no dynamic payment methods (no /payment-methods): the "
    "request names provider and paymentMethod",
    "PAYMENT_METHODS": "this PGM has no /payment-methods API",
}
# Providers the old PGM had and this one does not ship: their variables are read by nobody.
NOT_SHIPPED = (
    "SAFECHARGE",
    "UNICREDIT",
)


def _log_level(env: Mapping[str, str]) -> str:
    raw = (env.get("LOG_LEVEL") or Settings.log_level).strip().upper()
    if raw not in LOG_LEVELS:
        raise ConfigurationError(f"LOG_LEVEL {raw!r} is not a log level (one of {', '.join(LOG_LEVELS)})")
    return LOG_LEVELS[raw]


def _http_log_level(env: Mapping[str, str]) -> tuple[str, list[str]]:
    raw = (env.get("HTTP_LOG_LEVEL") or Settings.http_log_level).strip().lower()
    if raw not in HTTP_LOG_LEVELS:
        return "none", [
            f"HTTP_LOG_LEVEL {raw!r} is not one of {', '.join(HTTP_LOG_LEVELS)}: outgoing requests are not logged"
        ]
    if raw in ("headers", "body"):
        # Provider requests carry API keys and card data: never written to a log, whatever is asked.
        return "basic", [
            f"HTTP_LOG_LEVEL={raw} logs outgoing requests as `basic` does (method, URL, status): headers and "
            "bodies carry secrets and card data and are never logged"
        ]
    return raw, []


def _old_pgm_variables_without_meaning(env: Mapping[str, str]) -> list[str]:
    warnings = [f"{name} is ignored: {why}" for name, why in WITHOUT_MEANING.items() if env.get(name)]
    for provider in NOT_SHIPPED:
        names = sorted(name for name in env if name.startswith(f"{provider}_") and env[name])
        if names:
            warnings.append(
                f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} ignored: provider {provider.lower()} is not "
                "shipped (plug it in as an external provider service, see EXTERNAL_PROVIDERS_CONFIG)"
            )
    return warnings


def normalise_database_url(url: str) -> str:
    """Accept the usual `postgresql://` spelling and pick the driver we ship (psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read and validate the environment; raise ConfigurationError naming what is wrong."""
    port = int(_number(env, NUMBERS["http_port"]))
    public_url = (env.get("PGM_PUBLIC_URL") or f"http://localhost:{port}").rstrip("/")
    environment = _environment(env, public_url)
    # The sandbox is the default only in development: in production nothing is enabled that was not listed.
    default_providers = ",".join(Settings.enabled_providers) if environment == DEVELOPMENT else ""
    providers = tuple(
        name.strip().lower() for name in env.get("ENABLED_PROVIDERS", default_providers).split(",") if name.strip()
    )
    if environment == PRODUCTION and "sandbox" in providers:
        _check_sandbox_in_production(env, public_url)
    flow_manager_url = _url(env, "FLOW_MANAGER_URL")
    saga_crud_url = _url(env, "SAGA_CRUD_URL")
    if flow_manager_url and not saga_crud_url:
        raise ConfigurationError("SAGA_CRUD_URL is required when FLOW_MANAGER_URL is set")
    database_url = database_url_from(env)
    log_level = _log_level(env)
    http_log_level, warnings = _http_log_level(env)
    warnings += _old_pgm_variables_without_meaning(env)
    external = _external_services(env.get("EXTERNAL_PROVIDERS_CONFIG"))
    numbers = {name: _number(env, setting) for name, setting in NUMBERS.items()}
    if numbers["reconcile_after_seconds"] < numbers["provider_timeout_seconds"]:
        # Reconciliation must never look up a payment whose provider call may still be running.
        raise ConfigurationError("PGM_RECONCILE_AFTER_SECONDS must not be shorter than PGM_PROVIDER_TIMEOUT_SECONDS")
    return Settings(
        log_level=log_level,
        http_log_level=http_log_level,
        warnings=tuple(warnings),
        enabled_providers=providers,
        payment_callback_url=_url(env, "PAYMENT_CALLBACK_URL"),
        public_url=public_url,
        environment=environment,
        database_url=database_url,
        flow_manager_url=flow_manager_url.rstrip("/") if flow_manager_url else None,
        saga_crud_url=saga_crud_url,
        external_services=external,
        api_token=env.get("PGM_API_TOKEN") or None,
        sandbox_api_key=env.get("SANDBOX_API_KEY") or DEFAULT_SANDBOX_API_KEY,
        sandbox_webhook_secret=env.get("SANDBOX_WEBHOOK_SECRET") or None,
        sandbox_base_url=_url(env, "SANDBOX_BASE_URL"),
        sandbox_webhook_url=_url(env, "SANDBOX_WEBHOOK_URL"),
        provider_env={key: value for key, value in env.items() if key.split("_", 1)[0] in PROVIDER_PREFIXES},
        **numbers,  # type: ignore[arg-type]
    )


PROVIDER_PREFIXES = frozenset(
    {
        "STRIPE",
        "ADYEN",
        "SATISPAY",
        "BRAINTREE",
        "AXERVE",
        "GESTPAY",
        "SCALAPAY",
        "SOISY",
        "NEXI",
        "FLOWPAY",
        "FNMPAY",
        "SANDBOX",
    }
)

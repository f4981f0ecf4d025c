"""Configuration from the environment: the existing PGM's names, clear errors naming what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pgm.config import NUMBERS, ConfigurationError, load_settings, normalise_database_url
from pgm.providers.registry import validate


def test_defaults_are_the_embedded_stack() -> None:
    settings = load_settings({})
    assert settings.http_port == 3000
    assert settings.enabled_providers == ("sandbox",)
    assert settings.database_url == "sqlite:///pgm.sqlite3"
    assert settings.public_url == "http://localhost:3000"
    assert not settings.saga_enabled


def test_existing_variable_names_are_read() -> None:
    settings = load_settings(
        {
            "HTTP_PORT": "8080",
            "ENABLED_PROVIDERS": "sandbox, Stripe",
            "PAYMENT_CALLBACK_URL": "http://notify.local/status",
            "FLOW_MANAGER_URL": "http://flow-manager-service/",
            "SAGA_CRUD_URL": "http://crud-service/fm-transactions",
            "PGM_DATABASE_URL": "postgresql://pgm@db/pgm",
            "STRIPE_PRIVATE_KEY": "sk_test_x",
        }
    )
    assert settings.http_port == 8080
    assert settings.enabled_providers == ("sandbox", "stripe")
    assert settings.public_url == "http://localhost:8080"
    assert settings.flow_manager_url == "http://flow-manager-service"
    assert settings.saga_enabled
    assert settings.database_url == "postgresql+psycopg://pgm@db/pgm"
    assert settings.provider_env == {"STRIPE_PRIVATE_KEY": "sk_test_x"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLOW_MANAGER_URL": "http://fm"}, "SAGA_CRUD_URL is required when FLOW_MANAGER_URL is set"),
        ({"HTTP_PORT": "eighty"}, "HTTP_PORT must be an integer"),
        ({"PAYMENT_CALLBACK_URL": "ftp://x"}, "PAYMENT_CALLBACK_URL must be an http(s) URL"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL 'CHATTY' is not a log level"),
        ({"PGM_PROVIDER_TIMEOUT_SECONDS": "30", "PGM_RECONCILE_AFTER_SECONDS": "5"}, "must not be shorter"),
        ({"EXTERNAL_PROVIDERS_CONFIG": "/nonexistent.json"}, "cannot read /nonexistent.json"),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(env)
    assert message in str(raised.value)


def test_external_providers_file(tmp_path: Path) -> None:
    path = tmp_path / "external.json"
    path.write_text(json.dumps({"externalServices": [{"externalService": "acme", "baseUrl": "http://acme.local/"}]}))
    settings = load_settings({"EXTERNAL_PROVIDERS_CONFIG": str(path)})
    assert [(s.name, s.base_url) for s in settings.external_services] == [("acme", "http://acme.local")]
    path.write_text(json.dumps({"externalServices": [{"externalService": "acme"}]}))
    with pytest.raises(ConfigurationError, match=r"externalServices\[0\] needs externalService and baseUrl"):
        load_settings({"EXTERNAL_PROVIDERS_CONFIG": str(path)})


def test_enabled_provider_with_missing_variables_is_named() -> None:
    with pytest.raises(ConfigurationError) as raised:
        validate(load_settings({"ENABLED_PROVIDERS": "sandbox,adyen", "ADYEN_PRIVATE_KEY": "k"}))
    assert "provider adyen is enabled but ADYEN_MERCHANT_ACCOUNT, ADYEN_HMAC_KEY are not set" in str(raised.value)
    with pytest.raises(ConfigurationError, match="'paypalish', which is neither shipped"):
        validate(load_settings({"ENABLED_PROVIDERS": "paypalish"}))


def test_database_urls_pick_our_driver() -> None:
    assert normalise_database_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("info", "INFO"),
        ("warn", "WARNING"),
        ("Trace", "DEBUG"),
        ("ALL", "DEBUG"),
        ("FINEST", "DEBUG"),
        ("CONFIG", "INFO"),
        ("SEVERE", "ERROR"),
        ("fatal", "CRITICAL"),
        ("OFF", "CRITICAL"),
        ("silent", "CRITICAL"),
    ],
)
def test_the_old_pgms_log_levels_are_read(value: str, level: str) -> None:
    assert load_settings({"LOG_LEVEL": value}).log_level == level


@pytest.mark.parametrize(
    ("value", "level", "warned"),
    [
        (None, "none", False),
        ("none", "none", False),
        ("BASIC", "basic", False),
        ("headers", "basic", True),
        ("body", "basic", True),
        ("verbose", "none", True),
    ],
)
def test_http_log_level_is_honoured_without_ever_logging_headers_or_bodies(
    value: str | None, level: str, warned: bool
) -> None:
    settings = load_settings({} if value is None else {"HTTP_LOG_LEVEL": value})
    assert settings.http_log_level == level
    assert any(w.startswith("HTTP_LOG_LEVEL") for w in settings.warnings) is warned


def test_variables_that_mean_nothing_here_are_accepted_with_a_warning_naming_them() -> None:
    settings = load_settings(
        {
            "SUBSCRIPTION_HANDLER_URL": "http://subscription-handler",
            "ADAPTIVE_CHECKOUT_CACHE_EXPIRE_MIN": "5",
            "DYNAMIC_PAYMENT_METHOD_CONFIG_PATH": "/config/methods.json",
            "SAFECHARGE_MERCHANT_ID": "m",
            "UNICREDIT_API_KEY": "u",
        }
    )
    assert [w.split(" is ignored", 1)[0].split(" are ignored", 1)[0] for w in settings.warnings] == [
        "SUBSCRIPTION_HANDLER_URL",
        "ADAPTIVE_CHECKOUT_CACHE_EXPIRE_MIN",
        "DYNAMIC_PAYMENT_METHOD_CONFIG_PATH",
        "SAFECHARGE_MERCHANT_ID",
        "UNICREDIT_API_KEY",
    ]
    assert load_settings({}).warnings == ()
    # FlowPay is shipped (docs/providers/flowpay.md): its variables are read, not warned about.
    assert load_settings({"FLOWPAY_CLIENT_ID": "m", "FLOWPAY_CORE_BASE_URL": "https://core.flowpay.it"}).warnings == ()


@pytest.mark.parametrize(
    ("env", "environment"),
    [
        ({}, "development"),
        ({"PGM_PUBLIC_URL": "http://127.0.0.1:3000"}, "development"),
        ({"PGM_PUBLIC_URL": "http://[::1]:3000"}, "development"),
        ({"PGM_PUBLIC_URL": "http://shop.localhost:3000"}, "development"),
        ({"PGM_PUBLIC_URL": "https://pgm.example.com"}, "production"),
        ({"PGM_PUBLIC_URL": "http://192.168.1.20:3000"}, "production"),
        ({"PGM_ENVIRONMENT": "production"}, "production"),
        ({"PGM_PUBLIC_URL": "https://pgm.example.com", "PGM_ENVIRONMENT": "development"}, "development"),
    ],
)
def test_production_is_a_public_url_beyond_this_machine_or_said_explicitly(
    env: dict[str, str], environment: str
) -> None:
    settings = load_settings(env)
    assert settings.environment == environment
    assert settings.enabled_providers == (("sandbox",) if environment == "development" else ())


def test_production_enables_the_sandbox_only_with_a_key_of_its_own() -> None:
    production = {"PGM_ENVIRONMENT": "production", "ENABLED_PROVIDERS": "sandbox"}
    for key in ("", "sk_sandbox_local", "short"):
        with pytest.raises(ConfigurationError, match="SANDBOX_API_KEY"):
            load_settings({**production, "SANDBOX_API_KEY": key})
    settings = load_settings({**production, "SANDBOX_API_KEY": "sk_sandbox_9f2c41d07be84a1c"})
    assert settings.enabled_providers == ("sandbox",)
    assert settings.production


def test_an_unknown_environment_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="PGM_ENVIRONMENT must be development or production"):
        load_settings({"PGM_ENVIRONMENT": "staging"})


def test_every_number_setting_is_documented_with_its_default() -> None:
    documented = dict(
        re.findall(
            r"^\| `([A-Z_]+)` \| `([0-9.]+)`",
            (Path(__file__).parents[1] / "docs" / "configuration.md").read_text(),
            flags=re.MULTILINE,
        )
    )
    for setting in NUMBERS.values():
        variable = setting.metadata["variable"]
        assert variable in documented, f"{variable} is not in docs/configuration.md"
        assert float(documented[variable]) == setting.default, variable

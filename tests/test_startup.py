"""`pgm serve` refuses a wrong setting with one line naming the variable and exit code 2, and says
"PGM started" only once its port is taken (docs/configuration.md)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

from pgm.config import load_settings
from pgm.store.database import Database
from pgm.wiring import pool_settings
from tests.support import preloaded
from tests.support.pgm_process import PgmProcess, free_port


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PGM_", "HTTP_", "ENABLED_", "EXTERNAL_"))}
    return preloaded.run(
        "pgm",
        ["serve"],
        env={**clean, "PGM_DATABASE_URL": f"sqlite:///{tmp_path / 'pgm.sqlite3'}", "LOG_LEVEL": "INFO", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"PGM_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
            "PGM_DATABASE_URL: cannot connect to postgresql://nobody@127.0.0.1:1/x: connection failed",
        ),
        ({"PGM_DATABASE_URL": "mysql://user@db/pgm"}, "PGM_DATABASE_URL: 'mysql' is not supported"),
        ({"PGM_DATABASE_URL": "not a url"}, "PGM_DATABASE_URL is not a database URL"),
        ({"HTTP_PORT": "99999"}, "HTTP_PORT must be at most 65535, got 99999"),
        ({"HTTP_PORT": "0"}, "HTTP_PORT must be at least 1, got 0"),
        ({"HTTP_HOST": "no-such-host.invalid"}, "HTTP_HOST: cannot listen on 'no-such-host.invalid'"),
        ({"EXTERNAL_PROVIDERS_CONFIG": "/no/such/providers.json"}, "EXTERNAL_PROVIDERS_CONFIG: cannot read"),
        (
            {"ENABLED_PROVIDERS": "stripe", "STRIPE_PRIVATE_KEY": "pk_test_123", "STRIPE_WEBHOOK_SECRET": "whsec_x"},
            "STRIPE_PRIVATE_KEY must be a secret or restricted API key",
        ),
        (
            {
                "ENABLED_PROVIDERS": "adyen",
                "ADYEN_PRIVATE_KEY": "key",
                "ADYEN_MERCHANT_ACCOUNT": "Shop",
                "ADYEN_HMAC_KEY": "not-hex",
            },
            "ADYEN_HMAC_KEY must be the hexadecimal key",
        ),
        ({"PGM_DATABASE_POOL_SIZE": "none"}, "PGM_DATABASE_POOL_SIZE must be an integer"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_a_wrong_setting_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = serve(tmp_path, **env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"pgm: configuration error: {expected}"), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "PGM started" not in result.stdout


def test_a_taken_port_stops_start_up_before_anything_says_started(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, HTTP_HOST="127.0.0.1", HTTP_PORT=str(port))
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        result.stderr
        == f"pgm: configuration error: HTTP_PORT: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
    assert "PGM started" not in result.stdout


def test_started_is_logged_once_the_port_answers(tmp_path: Path) -> None:
    process = PgmProcess(f"sqlite:///{tmp_path / 'pgm.sqlite3'}", tmp_path / "pgm.log", LOG_LEVEL="INFO").start()
    try:
        started = [line for line in process.log_tail(200).splitlines() if '"PGM started"' in line]
        assert len(started) == 1
        assert process.get("/-/healthz").status_code == 200
    finally:
        process.stop()


def test_the_pool_settings_reach_the_postgresql_pool() -> None:
    settings = load_settings(
        {
            "PGM_DATABASE_URL": f"postgresql://pgm@127.0.0.1:{free_port()}/pgm",
            "PGM_DATABASE_POOL_SIZE": "4",
            "PGM_DATABASE_MAX_OVERFLOW": "2",
            "PGM_DATABASE_POOL_TIMEOUT_SECONDS": "7.5",
        }
    )
    database = Database(settings.database_url, pool_settings(settings))
    # 4 kept; the 2 of overflow are opened beside them when all 4 are in use.
    assert (database.pool_settings.size, database.pool_settings.max_overflow) == (4, 2)
    assert database.pool_settings.timeout_seconds == 7.5
    asyncio.run(database.dispose())

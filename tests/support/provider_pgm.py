"""A PGM process with one real provider enabled against that provider's fake."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.databases import fresh_database
from tests.support.pgm_process import SHORT_PROVIDER_TIMEOUT, PgmProcess


@contextmanager
def pgm_with_provider(
    provider: str, fake: Any, backend: str, directory: Path, notifications_url: str, **env: str
) -> Iterator[PgmProcess]:
    """Start a PGM on a fresh database with `provider` pointed at `fake`; the fake's callbacks go to it.

    Its provider time-out is short: these modules lose answers on purpose with the fake's `delay_next`.
    `env` adds or replaces variables."""
    with fresh_database(backend, directory) as url:
        process = PgmProcess(
            url,
            directory / "pgm.log",
            ENABLED_PROVIDERS=f"sandbox,{provider}",
            PAYMENT_CALLBACK_URL=f"{notifications_url}/payment-status",
            **{**SHORT_PROVIDER_TIMEOUT, **fake.env(), **env},
        )
        process.start()
        fake.webhook_url = f"{process.url}/v3/{provider}/callback"
        try:
            yield process
        finally:
            process.stop()

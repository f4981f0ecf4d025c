"""Headless Chromium for the browser tests: Debian's package, installed here when missing, driven by Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ARTIFACTS

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_TIMEOUT_SECONDS = 900
# Flags known to work in containers as root: no sandbox, no GPU, nothing that calls home.
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _install_chromium(log: Path) -> str | None:
    """Install Debian's chromium with apt-get; None when it worked, else why not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "/usr/bin/chromium is missing and apt-get cannot install it here (not root, or no apt-get)"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
    try:
        with log.open("wb") as output:
            subprocess.run(
                ["sh", "-c", command],
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_SECONDS,
                check=True,
            )
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as error:
        return f"installing chromium failed ({error}); see {log}"
    return None if CHROMIUM.exists() else f"apt-get ran but {CHROMIUM} is still missing; see {log}"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The Chromium executable, installed with apt-get on first use when missing."""
    if not CHROMIUM.exists():
        problem = _install_chromium(ARTIFACTS / "chromium-install.log")
        if problem is not None:
            pytest.skip(problem)
    return CHROMIUM


# Module scope, not session: Playwright's sync API keeps an asyncio loop marked as running in this thread
# while it is open, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, for the module's tests."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        # A persistent context is how Playwright takes --user-data-dir: a fresh profile per session.
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium),
            args=LAUNCH_FLAGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()

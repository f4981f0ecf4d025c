"""Where the browser tests leave their screenshots and Chromium's install log (ignored by git)."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

"""What the sandbox's routes (http/routes/sandbox.py) need from the process the sandbox runs in, built by the
composition (wiring.py), and where its hosted pages' templates are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgm.clock import Clock
from pgm.sandbox.books import Books
from pgm.store.database import Database

TEMPLATES_FOLDER = Path(__file__).parent / "templates"


@dataclass
class SandboxContext:
    """What the sandbox needs from the process it runs in."""

    database: Database
    books: Books
    clock: Clock
    api_key: str
    provider_timeout_seconds: float
    # In production the introspection listing needs the sandbox's key too: open, it hands out payment ids
    # anyone could then approve on the hosted page (docs/sandbox.md).
    listing_needs_key: bool = False

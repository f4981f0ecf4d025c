"""Identifiers for rows we create: a readable prefix and 128 random bits."""

from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    """A fresh identifier such as `pay_3f2a...`."""
    return f"{prefix}_{uuid.uuid4().hex}"

"""Signature schemes shared by several providers (the shared kernel's crypto)."""

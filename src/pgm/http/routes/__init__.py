"""Routers of the HTTP edge."""

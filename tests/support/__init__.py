"""Test support: real PGM processes, databases on both backends, signed sandbox callbacks."""

"""The PGM's benchmark harness: constant-arrival-rate load against real PGM processes (see README.md)."""

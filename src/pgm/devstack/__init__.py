"""Local stand-ins for the services the PGM talks to in production: Mia's CRUD Service and Flow Manager."""

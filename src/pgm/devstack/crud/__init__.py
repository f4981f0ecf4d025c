"""A SQLite-backed stand-in for Mia-Platform's CRUD Service, for local runs and tests."""

from pgm.devstack.crud.app import create_crud_app
from pgm.devstack.crud.query import QueryError
from pgm.devstack.crud.store import DocumentStore

__all__ = ["DocumentStore", "QueryError", "create_crud_app"]

"""Alembic environment: synchronous connection, our metadata, advisory lock on PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from pgm.store.models import Base

config = context.config


def run_migrations_online() -> None:
    """Run migrations on a connection; replicas starting together take turns on PostgreSQL."""
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(724311)"))
            connection.commit()
        try:
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(724311)"))
                connection.commit()
    engine.dispose()


run_migrations_online()

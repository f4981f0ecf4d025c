"""The PGM's own store: SQLAlchemy 2 models, Alembic migrations, transactions and payment locks."""

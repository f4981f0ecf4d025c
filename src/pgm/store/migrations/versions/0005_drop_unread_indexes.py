"""Drop two indexes no query reads: payments.subscription_token and provider_callbacks.provider

No statement of the store (store/repositories/, the only place SQL is written) looks a payment up by its
subscription token or a raw callback up by its provider, yet every insert wrote both, and on PostgreSQL
every update of a payment that moves an indexed column (its status) wrote a new entry in the first.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_payments_subscription_token", table_name="payments")
    op.drop_index("ix_provider_callbacks_provider", table_name="provider_callbacks")


def downgrade() -> None:
    op.create_index("ix_provider_callbacks_provider", "provider_callbacks", ["provider"])
    op.create_index("ix_payments_subscription_token", "payments", ["subscription_token"])

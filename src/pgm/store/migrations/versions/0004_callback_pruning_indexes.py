"""Indexes for pruning raw callbacks: provider_callbacks.received_at (the age cut-off) and
provider_events.callback_id (their notifications, deleted with them)

Without them every pruning pass reads both tables whole, which grows with the retention period.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_provider_callbacks_received_at", "provider_callbacks", ["received_at"])
    op.create_index("ix_provider_events_callback_id", "provider_events", ["callback_id"])


def downgrade() -> None:
    op.drop_index("ix_provider_events_callback_id", table_name="provider_events")
    op.drop_index("ix_provider_callbacks_received_at", table_name="provider_callbacks")

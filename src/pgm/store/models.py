"""Tables. Times are UNIX seconds (floats): portable across SQLite and PostgreSQL, and clock-injectable."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base with the JSON type mapped for dict columns."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, for the hot path's Core statements."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Payment(Base):
    """One payment (or subscription payment, link, authorization) we asked a provider for."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_payment_id", name="uq_payments_provider_payment_id"),
        Index("ix_payments_reconcile", "status", "next_check_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    payment_method: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    shop_transaction_id: Mapped[str] = mapped_column(String(255), index=True)
    provider_payment_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    # SHA-256 of the request (services/policy.py: request_digest): the same key with a different
    # request is a conflict, whatever field differs.
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # Not indexed: no query looks a payment up by its token (migration 0005).
    subscription_token: Mapped[str | None] = mapped_column(String(255))
    redirect_url: Mapped[str | None] = mapped_column(Text)
    redirect_url_mobile: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    saga_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # The saga's payRequestData when the command ran: events send it back whole, updated.
    saga_context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    provider_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    next_check_at: Mapped[float | None] = mapped_column(Float)
    check_attempts: Mapped[int] = mapped_column(Integer, default=0)


class Refund(Base):
    """One refund of a payment; its status drives the refund arithmetic."""

    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_reconcile", "status", "next_check_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    provider_refund_id: Mapped[str | None] = mapped_column(String(255), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    saga_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    next_check_at: Mapped[float | None] = mapped_column(Float)
    check_attempts: Mapped[int] = mapped_column(Integer, default=0)


class LedgerEntry(Base):
    """Append-only record of every status a payment or refund took, and who said so."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    refund_id: Mapped[str | None] = mapped_column(ForeignKey("refunds.id"))
    operation: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(32))
    reversal: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class ProviderCallback(Base):
    """A provider's HTTP request to a callback endpoint, stored raw before anything else is done."""

    __tablename__ = "provider_callbacks"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    # Not indexed: no query looks raw callbacks up by provider (migration 0005).
    provider: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))
    query: Mapped[str] = mapped_column(Text, default="")
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    # Indexed for pruning (the age cut-off), as is provider_events.callback_id.
    received_at: Mapped[float] = mapped_column(Float, index=True)


class ProviderEvent(Base):
    """One verified notification from a callback, de-duplicated on the provider's event id.

    Kept until it is applied: one about a payment we do not know yet (the callback beat the
    synchronous answer) stays DEFERRED and is applied as soon as the payment is known.
    """

    __tablename__ = "provider_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_provider_events_event"),
        Index("ix_provider_events_deferred", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(255))
    callback_id: Mapped[int] = mapped_column(ForeignKey("provider_callbacks.id"), index=True)
    subject_id: Mapped[str | None] = mapped_column(String(255), index=True)
    notification: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    processed_at: Mapped[float | None] = mapped_column(Float)


class OutboxMessage(Base):
    """A message to deliver over HTTP, written in the transaction of the change it reports."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "status", "ordering_key", "id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(32))
    ordering_key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    # Sent as X-Pgm-Message-Id: the same for every message carrying the same logical event (a saga event
    # re-sent for a repeated command), so a receiver can drop the repeat; NULL means the row's own id.
    message_id: Mapped[str | None] = mapped_column(String(64))


class InboxCommand(Base):
    """One delivery of a saga command, stored before it is acknowledged so that a crash cannot lose it.

    Every delivery is kept; duplicates are recognised when they run, by the deterministic key of the
    operation they ask for (a payment's or refund's idempotency key).
    """

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_runnable", "status", "lease_until"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True)
    saga_id: Mapped[str] = mapped_column(String(255), index=True)
    route: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    operation_key: Mapped[str | None] = mapped_column(String(255))
    result: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class SagaEvent(Base):
    """An event sent (through the outbox) to a saga: kept to replay outcomes and to show a timeline."""

    __tablename__ = "saga_events"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    saga_id: Mapped[str] = mapped_column(String(255), index=True)
    operation_key: Mapped[str | None] = mapped_column(String(255), index=True)
    label: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[dict[str, Any]] = mapped_column()
    outbox_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)


class SandboxPayment(Base):
    """The sandbox provider's own record of a payment (it is a provider: it keeps its own books)."""

    __tablename__ = "sandbox_payments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    shop_transaction_id: Mapped[str] = mapped_column(String(255), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    decline_reason: Mapped[str | None] = mapped_column(Text)
    success_url: Mapped[str | None] = mapped_column(Text)
    failure_url: Mapped[str | None] = mapped_column(Text)
    token: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class SandboxRefund(Base):
    """The sandbox provider's record of a refund."""

    __tablename__ = "sandbox_refunds"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("sandbox_payments.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class SandboxToken(Base):
    """A sandbox subscription or payer authorization (mandate), referenced by its token."""

    __tablename__ = "sandbox_tokens"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    shop_transaction_id: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    interval: Mapped[str | None] = mapped_column(String(8))
    interval_count: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    success_url: Mapped[str | None] = mapped_column(Text)
    failure_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Setting(Base):
    """Small pieces of state that several replicas must agree on (e.g. a generated webhook secret)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

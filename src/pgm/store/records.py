"""The store's rows as plain typed records (slotted dataclasses), one per table of store/models.py.

Services read and change them like any object (`payment.status = ...`); the transaction that loaded a
record writes its changed columns back (store/transaction.py). Column order here is the order every
SELECT of the store lists them in, so a row becomes a record positionally. A table whose key the
database generates has it as the record's last field, 0 until the row is inserted.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pgm.store.sql import dump_json, load_json

R = TypeVar("R", bound="Record")


@dataclass(frozen=True, slots=True)
class Table:
    """How a record maps to its table: columns in record order, the key, and the columns that need
    converting (JSON documents; booleans, which SQLite returns as 0/1)."""

    name: str
    columns: tuple[str, ...]
    key: str
    generated_key: bool
    json: frozenset[str]
    booleans: frozenset[str]
    select: str
    json_positions: tuple[int, ...]
    boolean_positions: tuple[int, ...]
    # The record's column values as one tuple, in column order (operator.attrgetter: one C call, not one
    # getattr per column; a snapshot is taken before every statement of a transaction holding records).
    values: Callable[[Any], tuple[Any, ...]] = field(compare=False, repr=False)


class Record:
    """Base of every record: its table mapping, set by `@table`."""

    __slots__ = ()
    TABLE: ClassVar[Table]


def table(
    name: str, key: str, generated_key: bool = False, json: Sequence[str] = (), booleans: Sequence[str] = ()
) -> Callable[[type[R]], type[R]]:
    """Attach the table mapping to a record class (after @dataclass)."""

    def attach(cls: type[R]) -> type[R]:
        columns = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        cls.TABLE = Table(
            name=name,
            columns=columns,
            key=key,
            generated_key=generated_key,
            json=frozenset(json),
            booleans=frozenset(booleans),
            select=f"SELECT {', '.join(columns)} FROM {name}",
            json_positions=tuple(columns.index(c) for c in json),
            boolean_positions=tuple(columns.index(c) for c in booleans),
            values=_values_of(columns),
        )
        return cls

    return attach


def _values_of(columns: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    getter = operator.attrgetter(*columns)
    if len(columns) == 1:  # attrgetter of one name gives the value itself, not a tuple
        return lambda record: (getter(record),)
    return getter


def from_row(cls: type[R], row: Sequence[Any]) -> R:
    """A record from a row that lists the table's columns in record order (`Table.select`)."""
    mapping = cls.TABLE
    if not mapping.json_positions and not mapping.boolean_positions:
        return cls(*row)
    values = list(row)
    for position in mapping.json_positions:
        values[position] = load_json(values[position])
    for position in mapping.boolean_positions:
        values[position] = bool(values[position])
    return cls(*values)


def snapshot(record: Record) -> tuple[Any, ...]:
    """What a record holds now, to find later which columns changed (JSON compared encoded, so a
    document changed in place is seen too): its columns' values as the drivers bind them."""
    mapping = record.TABLE
    values = mapping.values(record)
    if not mapping.json_positions:
        return values
    encoded = list(values)
    for position in mapping.json_positions:
        if encoded[position] is not None:
            encoded[position] = dump_json(encoded[position])
    return tuple(encoded)


@table("payments", key="id", json=("saga_context", "provider_metadata"))
@dataclass(slots=True, eq=False)
class Payment(Record):
    """One payment (or subscription payment, link, authorization) we asked a provider for."""

    id: str
    provider: str
    payment_method: str
    kind: str
    status: str
    amount: int
    currency: str
    shop_transaction_id: str
    idempotency_key: str
    created_at: float
    updated_at: float
    provider_payment_id: str | None = None
    request_digest: str | None = None
    subscription_token: str | None = None
    redirect_url: str | None = None
    redirect_url_mobile: str | None = None
    link: str | None = None
    description: str | None = None
    saga_id: str | None = None
    saga_context: dict[str, Any] = field(default_factory=dict)
    provider_metadata: dict[str, Any] = field(default_factory=dict)
    next_check_at: float | None = None
    check_attempts: int = 0


@table("refunds", key="id")
@dataclass(slots=True, eq=False)
class Refund(Record):
    """One refund of a payment; its status drives the refund arithmetic."""

    id: str
    payment_id: str
    amount: int
    status: str
    idempotency_key: str
    created_at: float
    updated_at: float
    provider_refund_id: str | None = None
    description: str | None = None
    saga_id: str | None = None
    next_check_at: float | None = None
    check_attempts: int = 0


@table("ledger_entries", key="id", generated_key=True, booleans=("reversal",))
@dataclass(slots=True, eq=False)
class LedgerEntry(Record):
    """Append-only record of every status a payment or refund took, and who said so."""

    payment_id: str
    operation: str
    status: str
    amount: int
    source: str
    created_at: float
    refund_id: str | None = None
    reversal: bool = False
    note: str | None = None
    id: int = 0


@table("provider_callbacks", key="id", generated_key=True, json=("headers",))
@dataclass(slots=True, eq=False)
class ProviderCallback(Record):
    """A provider's HTTP request to a callback endpoint, stored raw before anything else is done."""

    provider: str
    method: str
    path: str
    body: bytes
    status: str
    received_at: float
    query: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    id: int = 0


@table("provider_events", key="id", generated_key=True, json=("notification",))
@dataclass(slots=True, eq=False)
class ProviderEvent(Record):
    """One verified notification from a callback, de-duplicated on the provider's event id."""

    provider: str
    event_id: str
    callback_id: int
    notification: dict[str, Any]
    status: str
    received_at: float
    subject_id: str | None = None
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    processed_at: float | None = None
    id: int = 0


@table("outbox", key="id", generated_key=True, json=("payload",))
@dataclass(slots=True, eq=False)
class OutboxMessage(Record):
    """A message to deliver over HTTP, written in the transaction of the change it reports."""

    destination: str
    ordering_key: str
    payload: dict[str, Any]
    status: str
    next_attempt_at: float
    created_at: float
    attempts: int = 0
    lease_until: float | None = None
    last_error: str | None = None
    last_status_code: int | None = None
    delivered_at: float | None = None
    message_id: str | None = None
    id: int = 0


@table("inbox", key="id", generated_key=True, json=("payload",))
@dataclass(slots=True, eq=False)
class InboxCommand(Record):
    """One delivery of a saga command, stored before it is acknowledged."""

    delivery_id: str
    saga_id: str
    route: str
    label: str
    payload: dict[str, Any]
    status: str
    created_at: float
    updated_at: float
    attempts: int = 0
    operation_key: str | None = None
    result: str | None = None
    lease_until: float | None = None
    id: int = 0


@table("saga_events", key="id", generated_key=True, json=("envelope",))
@dataclass(slots=True, eq=False)
class SagaEvent(Record):
    """An event sent (through the outbox) to a saga: kept to replay outcomes and to show a timeline."""

    saga_id: str
    label: str
    envelope: dict[str, Any]
    created_at: float
    operation_key: str | None = None
    outbox_id: int | None = None
    id: int = 0


@table("sandbox_payments", key="id")
@dataclass(slots=True, eq=False)
class SandboxPayment(Record):
    """The sandbox provider's own record of a payment."""

    id: str
    kind: str
    amount: int
    currency: str
    shop_transaction_id: str
    status: str
    created_at: float
    updated_at: float
    idempotency_key: str | None = None
    decline_reason: str | None = None
    success_url: str | None = None
    failure_url: str | None = None
    token: str | None = None


@table("sandbox_refunds", key="id")
@dataclass(slots=True, eq=False)
class SandboxRefund(Record):
    """The sandbox provider's record of a refund."""

    id: str
    payment_id: str
    amount: int
    status: str
    created_at: float
    updated_at: float
    idempotency_key: str | None = None


@table("sandbox_tokens", key="token")
@dataclass(slots=True, eq=False)
class SandboxToken(Record):
    """A sandbox subscription or payer authorization (mandate), referenced by its token."""

    token: str
    kind: str
    status: str
    shop_transaction_id: str
    amount: int
    currency: str
    created_at: float
    updated_at: float
    interval: str | None = None
    interval_count: int | None = None
    idempotency_key: str | None = None
    success_url: str | None = None
    failure_url: str | None = None


@table("settings", key="key")
@dataclass(slots=True, eq=False)
class Setting(Record):
    """Small pieces of state that several replicas must agree on."""

    key: str
    value: str

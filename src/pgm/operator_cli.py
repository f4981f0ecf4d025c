"""The operator's commands, run against a deployment's database (PGM_DATABASE_URL or --database-url):

    pgm payments list [--status S] [--provider P] [--saga ID] [--limit N]
    pgm payments show REF        REF: a paymentId, shopTransactionId, saga id or the PGM's own id
    pgm outbox list [--status DEAD|PENDING|DELIVERED] [--destination D]
    pgm outbox resend ID... | --all-dead
    pgm reconcile [--wait SECONDS]

Each prints a table, or JSON with --json. They read and write the store directly, so they need no API
token and work while the service is down; what they change (a dead letter put back in line, a check
made due now) is done by the running PGM on its next pass, as if it had scheduled it itself
(docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pgm.config import ConfigurationError, database_url_from
from pgm.domain.statuses import Status
from pgm.store.database import Database, is_sqlite_url, shown_url, sqlite_path
from pgm.store.records import OutboxMessage, Payment, Refund
from pgm.store.transaction import Transaction

UNSETTLED = (Status.PENDING.value, Status.UNKNOWN.value)
OPERATOR_COMMANDS = frozenset({"payments", "outbox", "reconcile"})
OUTBOX_STATUSES = ("DEAD", "PENDING", "DELIVERED")

Row = dict[str, Any]
Action = Callable[[Database, argparse.Namespace], Awaitable[Any]]


class OperatorError(Exception):
    """Something the operator asked for does not exist or cannot be done; the message says what."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `payments`, `outbox` and `reconcile` on the `pgm` command line."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="the deployment's database (default: PGM_DATABASE_URL)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")

    payments = commands.add_parser("payments", help="look at payments in the store").add_subparsers(
        dest="action", required=True
    )
    listing = payments.add_parser("list", parents=[common], help="the newest payments first")
    listing.add_argument("--status", choices=[status.value for status in Status])
    listing.add_argument("--provider")
    listing.add_argument("--saga", help="only this saga's payments")
    listing.add_argument("--limit", type=_positive, default=20)
    listing.set_defaults(func=_command(list_payments))
    show = payments.add_parser("show", parents=[common], help="one payment: status, ledger, refunds, events")
    show.add_argument("reference", help="paymentId, shopTransactionId, saga id or the PGM's own id")
    show.set_defaults(func=_command(show_payments))

    outbox = commands.add_parser("outbox", help="outbox messages and dead letters").add_subparsers(
        dest="action", required=True
    )
    outbox_list = outbox.add_parser("list", parents=[common], help="outbox messages (dead letters by default)")
    outbox_list.add_argument("--status", choices=OUTBOX_STATUSES, default="DEAD")
    outbox_list.add_argument("--destination")
    outbox_list.add_argument("--limit", type=_positive, default=50)
    outbox_list.set_defaults(func=_command(list_outbox))
    resend = outbox.add_parser("resend", parents=[common], help="put dead letters back in line")
    which = resend.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=_positive, default=[], metavar="ID")
    which.add_argument("--all-dead", action="store_true", help="every dead letter")
    resend.set_defaults(func=_command(resend_outbox))

    reconcile = commands.add_parser(
        "reconcile",
        parents=[common],
        help="have every PENDING or UNKNOWN payment and refund, and every paid payment under the refund watch, "
        "checked at its provider now",
    )
    reconcile.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait up to this long for the checks"
    )
    reconcile.set_defaults(func=_command(reconcile_now))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(arguments: argparse.Namespace) -> int:
        try:
            url = _database_url(arguments.database_url)
            result = asyncio.run(_run(action, url, arguments))
        except (ConfigurationError, OperatorError) as exc:
            sys.stderr.write(f"pgm: {exc}\n")
            return 2 if isinstance(exc, ConfigurationError) else 1
        except Exception as exc:
            if not _database_error(exc):
                raise
            sys.stderr.write(f"pgm: the database failed: {_reason(exc)}\n")
            return 1
        print_result(result, as_json=arguments.json)
        return 0

    return run


def _database_url(given: str | None) -> str:
    configured = given or os.environ.get("PGM_DATABASE_URL")
    if not configured:
        # The service's default (a SQLite file in the working directory) would be created empty here.
        raise ConfigurationError("set PGM_DATABASE_URL (or --database-url) to the deployment's database")
    url = database_url_from({"PGM_DATABASE_URL": configured})
    if is_sqlite_url(url) and not Path(sqlite_path(url)).is_file():
        raise ConfigurationError(f"PGM_DATABASE_URL: {shown_url(url)} does not exist")
    return url


async def _run(action: Action, url: str, arguments: argparse.Namespace) -> Any:
    database = Database(url)
    try:
        try:
            async with database.snapshot() as tx:
                has_tables = await tx.operations.has_schema()
        except Exception as exc:
            if not _database_error(exc):
                raise
            raise ConfigurationError(f"PGM_DATABASE_URL: cannot connect to {shown_url(url)}: {_reason(exc)}") from exc
        if not has_tables:
            raise ConfigurationError(
                f"PGM_DATABASE_URL: {shown_url(url)} holds no PGM tables (has the PGM ever run on it?)"
            )
        return await action(database, arguments)
    finally:
        await database.dispose()


def _database_error(error: Exception) -> bool:
    """Whether an error is the database's (or the way to it): the drivers' own, or the network's."""
    return isinstance(error, (OSError, sqlite3.Error)) or type(error).__module__.split(".")[0] == "asyncpg"


def _reason(error: Exception) -> str:
    return " ".join(str(error).split())


# --- payments ---------------------------------------------------------------------------------------


async def list_payments(database: Database, arguments: argparse.Namespace) -> list[Row]:
    """The newest payments, filtered."""
    async with database.snapshot() as tx:
        payments = await tx.operations.payments(
            arguments.status or None, arguments.provider or None, arguments.saga or None, arguments.limit
        )
    return [_payment_summary(payment) for payment in payments]


async def show_payments(database: Database, arguments: argparse.Namespace) -> list[Row]:
    """Every payment the reference names, with its ledger, refunds and events."""
    reference = arguments.reference
    async with database.snapshot() as tx:
        payments = await tx.operations.payments_named(reference)
        if not payments:
            raise OperatorError(f"no payment has the paymentId, shopTransactionId or saga id {reference!r}")
        return [await _payment_detail(tx, payment) for payment in payments]


def _payment_summary(payment: Payment) -> Row:
    return {
        "paymentId": payment.provider_payment_id or payment.id,
        "provider": payment.provider,
        "kind": payment.kind,
        "status": payment.status,
        "amount": payment.amount,
        "currency": payment.currency,
        "shopTransactionId": payment.shop_transaction_id,
        "sagaId": payment.saga_id,
        "createdAt": _time(payment.created_at),
    }


async def _payment_detail(tx: Transaction, payment: Payment) -> Row:
    ledger = await tx.operations.ledger(payment.id)
    refunds = await tx.payments.refunds_of(payment.id)
    subjects = [payment.id, *([payment.provider_payment_id] if payment.provider_payment_id else [])]
    events: list[Row] = [
        {
            "at": _time(event.received_at),
            "kind": "provider callback",
            "what": event.event_id,
            "status": event.status,
            "detail": event.reason,
        }
        for event in await tx.operations.events_about(subjects)
    ]
    messages = {message.id: message for message in await tx.operations.messages_of_key(payment.id)}
    if payment.saga_id:
        saga_events = await tx.saga_events.of_saga(payment.saga_id)
        delivered = [event.outbox_id for event in saga_events if event.outbox_id is not None]
        if delivered:
            messages.update((message.id, message) for message in await tx.outbox.by_ids(delivered))
    for message in messages.values():
        events.append(
            {
                "at": _time(message.created_at),
                "kind": message.destination,
                "what": _message_label(message),
                "status": message.status,
                "detail": _delivery_detail(message),
            }
        )
    events.sort(key=lambda event: str(event["at"]))
    return {
        **_payment_summary(payment),
        "pgmId": payment.id,
        "paymentMethod": payment.payment_method,
        "description": payment.description,
        "nextCheckAt": _time(payment.next_check_at),
        "checkAttempts": payment.check_attempts,
        "ledger": [
            {
                "at": _time(entry.created_at),
                "operation": entry.operation,
                "status": entry.status,
                "amount": entry.amount,
                "source": entry.source,
                "reversal": entry.reversal,
                "refundId": entry.refund_id,
                "note": entry.note,
            }
            for entry in ledger
        ],
        "refunds": [
            {
                "refundId": refund.provider_refund_id or refund.id,
                "amount": refund.amount,
                "status": refund.status,
                "createdAt": _time(refund.created_at),
                "checkAttempts": refund.check_attempts,
            }
            for refund in refunds
        ],
        "events": events,
    }


def _message_label(message: OutboxMessage) -> str:
    payload = message.payload
    value = payload.get("value") if isinstance(payload.get("value"), dict) else None
    if value is not None:
        return str(value.get("messageLabel", ""))
    if "event" in payload:
        return str(payload["event"])
    return f"{payload.get('action', '')} {payload.get('status', '')}".strip()


def _delivery_detail(message: OutboxMessage) -> str:
    if message.status == "DELIVERED":
        return f"delivered {_time(message.delivered_at)}"
    code = f"HTTP {message.last_status_code}: " if message.last_status_code else ""
    error = f"{code}{message.last_error or ''}".strip(": ")
    return f"{message.attempts} attempt(s){'; ' + error if error else ''}"


# --- outbox -----------------------------------------------------------------------------------------


async def list_outbox(database: Database, arguments: argparse.Namespace) -> list[Row]:
    """Outbox messages of one status, oldest first."""
    async with database.snapshot() as tx:
        messages = await tx.operations.messages(arguments.status, arguments.destination or None, arguments.limit)
    return [
        {
            "id": message.id,
            "destination": message.destination,
            "orderingKey": message.ordering_key,
            "what": _message_label(message),
            "status": message.status,
            "attempts": message.attempts,
            "lastStatusCode": message.last_status_code,
            "lastError": message.last_error,
            "createdAt": _time(message.created_at),
        }
        for message in messages
    ]


async def resend_outbox(database: Database, arguments: argparse.Namespace) -> list[Row]:
    """Put dead letters back in line: the running PGM's dispatcher sends them on its next pass."""
    async with database.transaction() as tx:
        ids = await tx.operations.dead_letters(None if arguments.all_dead else list(arguments.ids))
        missing = [message_id for message_id in arguments.ids if message_id not in ids]
        if missing:
            raise OperatorError(f"not dead letters (or no such message): {', '.join(map(str, missing))}")
        now = time.time()
        for message_id in ids:
            # The same change as POST /-/outbox/{id}/resend: pending again, attempts from zero, due now.
            await tx.outbox.resend(message_id, now)
    return [{"id": message_id, "status": "PENDING"} for message_id in ids]


# --- reconciliation ---------------------------------------------------------------------------------


async def reconcile_now(database: Database, arguments: argparse.Namespace) -> list[Row]:
    """Make every unsettled payment and refund, and every paid payment under the refund watch, due for a
    provider check now; optionally wait for it.

    A row a replica is checking at this moment may be checked twice: a lookup only reads at the
    provider, and settlement applies one outcome once (a refund found twice is recorded once)."""
    async with database.transaction() as tx:
        targets = await tx.operations.check_targets()
        await tx.operations.make_checks_due(time.time())
    deadline = time.monotonic() + arguments.wait
    while True:
        async with database.snapshot() as tx:
            rows = [await _check_state(tx, *target) for target in targets]
        if arguments.wait <= 0 or all(row["checked"] for row in rows) or time.monotonic() >= deadline:
            return rows
        await asyncio.sleep(0.2)


async def _check_state(tx: Transaction, refund: bool, row_id: str, attempts_before: int, status_before: str) -> Row:
    row: Payment | Refund | None = await (tx.payments.refund(row_id) if refund else tx.payments.get(row_id))
    assert row is not None
    if status_before in UNSETTLED:
        checked = row.status not in UNSETTLED or row.check_attempts > attempts_before
    else:
        # A paid payment under the refund watch: checked once it was looked at for refunds.
        checked = row.check_attempts > attempts_before or row.status != status_before or row.next_check_at is None
    reference = row.provider_payment_id if isinstance(row, Payment) else row.provider_refund_id
    return {
        "kind": "refund" if refund else "payment",
        "id": reference or row.id,
        "provider": row.provider if isinstance(row, Payment) else None,
        "status": row.status,
        "checkAttempts": row.check_attempts,
        "checked": checked,
    }


# --- output -----------------------------------------------------------------------------------------


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def print_result(result: Sequence[Row], as_json: bool, out: TextIO | None = None) -> None:
    """JSON, or plain tables: one for a list, one block per item with its nested lists as tables."""
    stream = out or sys.stdout
    if as_json:
        json.dump(list(result), stream, indent=2)
        stream.write("\n")
        return
    if not result:
        stream.write("(none)\n")
        return
    nested = [key for key, value in result[0].items() if isinstance(value, list)]
    if not nested:
        stream.write(table(result))
        return
    for index, item in enumerate(result):
        if index:
            stream.write("\n")
        width = max(len(key) for key in item)
        for key, value in item.items():
            if key not in nested:
                stream.write(f"{key:<{width}}  {_cell(value)}\n")
        for key in nested:
            stream.write(f"\n{key}:\n")
            stream.write(table(item[key]) if item[key] else "(none)\n")


def table(rows: Sequence[Row]) -> str:
    """Aligned columns under a header line."""
    columns = list(rows[0])
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(widths[i]) for i, column in enumerate(columns)).rstrip()]
    lines += ["  ".join(value.ljust(widths[i]) for i, value in enumerate(line)).rstrip() for line in cells]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."

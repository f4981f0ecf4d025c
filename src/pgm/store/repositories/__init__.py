"""One repository per aggregate; every SQL statement of the service lives in this package.

A repository is reached through the transaction it works in (`tx.outbox`, `tx.payments`, ...), takes and
returns plain records (store/records.py), and holds its statements as `Sql` objects built at import.
"""

from pgm.store.repositories.callbacks import CallbackRepository
from pgm.store.repositories.inbox import InboxRepository
from pgm.store.repositories.operations import OperationsRepository
from pgm.store.repositories.outbox import OutboxRepository
from pgm.store.repositories.payments import PaymentRepository
from pgm.store.repositories.saga_events import SagaEventRepository
from pgm.store.repositories.sandbox import SandboxRepository
from pgm.store.repositories.settings import SettingRepository

__all__ = [
    "CallbackRepository",
    "InboxRepository",
    "OperationsRepository",
    "OutboxRepository",
    "PaymentRepository",
    "SagaEventRepository",
    "SandboxRepository",
    "SettingRepository",
]

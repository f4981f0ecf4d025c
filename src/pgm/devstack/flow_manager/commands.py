"""Sending commands to participants: in the background, in order per saga, once, with a record of each."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from pgm.devstack.flow_manager.machine import Command, iso_now

logger = logging.getLogger("pgm.devstack.flow_manager.commands")


class CommandSender:
    """Sends each saga's commands one after another, never retrying, and remembers how each went."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._records: dict[str, list[dict[str, Any]]] = {}
        # The last send queued for each saga: the next one waits for it, which keeps a saga's commands in order.
        self._tails: dict[str, asyncio.Task[None]] = {}

    def records(self, saga_id: str) -> list[dict[str, Any]]:
        """What was sent for a saga, oldest first: channel, url, label, times, status or error, outcome."""
        return [dict(record) for record in self._records.get(saga_id, [])]

    def enqueue(self, command: Command) -> None:
        """Queue a command behind the saga's earlier ones; it is sent in the background."""
        record: dict[str, Any] = {
            "state": command.state,
            "channel": command.channel,
            "method": command.method,
            "url": command.url,
            "label": command.label,
            "queuedAt": iso_now(),
            "sentAt": None,
            "status": None,
            "error": None,
            "outcome": "pending",
        }
        self._records.setdefault(command.saga_id, []).append(record)
        previous = self._tails.get(command.saga_id)
        task = asyncio.create_task(self._send_after(previous, command, record))
        self._tails[command.saga_id] = task
        task.add_done_callback(lambda done: self._forget(command.saga_id, done))

    def _forget(self, saga_id: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(saga_id) is task:
            del self._tails[saga_id]

    async def _send_after(self, previous: asyncio.Task[None] | None, command: Command, record: dict[str, Any]) -> None:
        if previous is not None:
            # wait() never raises the earlier send's failure, so one bad command does not block the next.
            await asyncio.wait([previous])
        record["sentAt"] = iso_now()
        try:
            response = await self._client.request(
                command.method, command.url, json=command.body, headers=command.headers
            )
        except httpx.HTTPError as error:
            record.update(error=repr(error), outcome="failed")
            logger.error(
                "command %s for saga %s to %s failed, not retried: %r",
                command.label,
                command.saga_id,
                command.url,
                error,
            )
            return
        record["status"] = response.status_code
        if response.is_success:
            record["outcome"] = "sent"
            return
        record.update(error=f"HTTP {response.status_code}: {response.text[:500]}", outcome="failed")
        logger.error(
            "command %s for saga %s to %s answered %s, not retried",
            command.label,
            command.saga_id,
            command.url,
            response.status_code,
        )

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for queued commands to be sent (on shutdown)."""
        pending = list(self._tails.values())
        if pending:
            await asyncio.wait(pending, timeout=timeout)

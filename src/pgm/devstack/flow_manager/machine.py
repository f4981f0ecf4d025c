"""The saga state machine as pure functions: new sagas, event transitions, metadata merges, commands."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgm.devstack.flow_manager.config import Channel, SagaConfig, State, Transition

SagaDocument = dict[str, Any]
logger = logging.getLogger("pgm.devstack.flow_manager")


def iso_now() -> str:
    """The current UTC time as ISO-8601 with milliseconds and a `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shallow_merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys of `update` replace those of `current` (the Flow Manager's default)."""
    return {**copy.deepcopy(current), **copy.deepcopy(update)}


def deep_merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Objects merge key by key at every depth; anything else (arrays included) is replaced."""
    merged = copy.deepcopy(current)
    for key, value in update.items():
        existing = merged.get(key)
        if isinstance(existing, dict) and isinstance(value, dict):
            merged[key] = deep_merge(existing, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class Command:
    """One HTTP request the Flow Manager owes a participant."""

    saga_id: str
    state: str
    channel: str
    label: str
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


class Machine:
    """Lookups over a validated configuration, and the moves a saga can make."""

    def __init__(self, config: SagaConfig) -> None:
        self.config = config
        definition = config.machineDefinition
        self._states = {state.id: state for state in definition.states}
        # Only REST channels can carry commands here; a Kafka channel is loaded and skipped (see config_warnings).
        self._channels = {
            channel.id: channel for channel in config.communicationProtocols if isinstance(channel, Channel)
        }
        self._business_descriptions = {business.id: business.description for business in definition.businessStates}

    @property
    def deep_merge_metadata(self) -> bool:
        """Whether event payloads merge into metadata recursively."""
        return self.config.settings.deep_merge_enabled

    @property
    def throw_on_unexpected_events(self) -> bool:
        """Whether an event the current state does not accept is answered with an error."""
        return self.config.settings.throwOnUnexpectedEvents

    def state(self, state_id: str) -> State:
        """The state with this id (KeyError when the saga document names a state the machine lacks)."""
        return self._states[state_id]

    def transition(self, state_id: str, event: str) -> Transition | None:
        """The transition `event` triggers from `state_id`, or None when the state does not expect it."""
        state = self._states.get(state_id)
        if state is None:
            return None
        return next((t for t in state.outgoingTransitions if t.inputEvent == event), None)

    def _business_fields(self, state: State) -> dict[str, Any]:
        # Back-offices built on the Payment Integration Hub read the description from each history entry too.
        return {
            "businessStateId": state.businessStateId,
            "businessStateDescription": self._business_descriptions[state.businessStateId],
        }

    def _landing_fields(self, state: State) -> dict[str, Any]:
        return {
            "currentState": state.id,
            **self._business_fields(state),
            "isFinal": state.isFinal,
        }

    def new_saga(self, saga_id: str, associated_entity_id: str, metadata: dict[str, Any]) -> SagaDocument:
        """The document of a saga just created in the initial state."""
        definition = self.config.machineDefinition
        initial = self.state(definition.initialState)
        now = iso_now()
        return {
            "sagaId": saga_id,
            "associatedEntityId": associated_entity_id,
            "latestEvent": definition.creationEvent,
            **self._landing_fields(initial),
            "metadata": copy.deepcopy(metadata),
            "history": {
                "states": [{"state": initial.id, **self._business_fields(initial), "timestamp": now}],
                "events": [{"event": definition.creationEvent, "payload": copy.deepcopy(metadata), "timestamp": now}],
            },
        }

    def apply_event(self, saga: SagaDocument, event: str, payload: dict[str, Any]) -> SagaDocument | None:
        """The saga after `event` (metadata merged, state moved, history appended), or None if not expected."""
        transition = self.transition(str(saga.get("currentState")), event)
        if transition is None:
            return None
        target = self.state(transition.targetState)
        merge = deep_merge if self.deep_merge_metadata else shallow_merge
        metadata = saga.get("metadata")
        previous_history = saga.get("history")
        history: dict[str, Any] = copy.deepcopy(previous_history) if isinstance(previous_history, dict) else {}
        now = iso_now()
        history.setdefault("states", []).append({"state": target.id, **self._business_fields(target), "timestamp": now})
        entry: dict[str, Any] = {"event": event, "payload": copy.deepcopy(payload), "timestamp": now}
        if transition.businessEventId is not None:
            entry["businessEventId"] = transition.businessEventId
        history.setdefault("events", []).append(entry)
        return {
            **copy.deepcopy(saga),
            "latestEvent": event,
            **self._landing_fields(target),
            "metadata": merge(metadata if isinstance(metadata, dict) else {}, payload),
            "history": history,
        }

    def command_for(self, saga: SagaDocument) -> Command | None:
        """The command the saga's current state sends on entry, carrying the whole metadata; None if none."""
        state = self.state(str(saga["currentState"]))
        if state.outputCommand is None:
            return None
        channel = self._channels.get(state.outputCommand.channel)
        if channel is None:
            logger.warning(
                "saga %s: command %s of state %s goes to channel %s, which the stand-in cannot use: not sent",
                saga["sagaId"],
                state.outputCommand.label,
                state.id,
                state.outputCommand.channel,
            )
            return None
        return Command(
            saga_id=str(saga["sagaId"]),
            state=state.id,
            channel=channel.id,
            label=state.outputCommand.label,
            method=channel.configurations.method,
            url=channel_url(channel),
            headers=dict(channel.configurations.headers),
            body={
                "key": saga["sagaId"],
                "value": {"messageLabel": state.outputCommand.label, "messagePayload": saga.get("metadata", {})},
            },
        )


def channel_url(channel: Channel) -> str:
    """`{protocol}://{endpoint}[:{port}]{path}` of a REST channel."""
    settings = channel.configurations
    port = f":{settings.port}" if settings.port is not None else ""
    path = settings.path if settings.path.startswith("/") else f"/{settings.path}"
    return f"{settings.protocol}://{settings.endpoint}{port}{path}"

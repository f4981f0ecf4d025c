"""Loading and checking a Flow Manager `saga.json`, and the configuration packaged for the PGM."""

# The models keep the camelCase field names of saga.json so configurations read the same in both places.
# ruff: noqa: N815

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PACKAGED_CONFIG_PATH = Path(__file__).with_name("pgm-saga.json")

Identifier = int | str


class _Section(BaseModel):
    # Real configurations carry fields the stand-in has no use for (descriptions, kafka extras): keep them.
    model_config = ConfigDict(extra="allow")


class SecretReference(_Section):
    """The Flow Manager's secret resolution: a value read from a mounted file instead of written inline."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["file"]
    path: str = Field(min_length=1)

    def resolve(self) -> str:
        """The file's content without its trailing newline, as the Flow Manager reads it at start-up."""
        try:
            return Path(self.path).read_text(encoding="utf-8").rstrip("\n")
        except OSError as error:
            raise ValueError(f"cannot read the secret file {self.path}: {error.strerror}") from error


class RestChannelConfigurations(_Section):
    """Where and how a REST channel sends commands."""

    protocol: Literal["http", "https"]
    endpoint: str = Field(min_length=1)
    method: Literal["POST", "PUT", "PATCH"]
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str = "/"
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers", mode="before")
    @classmethod
    def _resolve_secret_headers(cls, value: Any) -> Any:
        # A header may name a file holding its value ({"type": "file", "path": ...}); read it now, like the
        # Flow Manager does, so commands carry the secret and the configuration file does not.
        if not isinstance(value, dict):
            return value
        return {
            name: SecretReference.model_validate(item).resolve() if isinstance(item, dict) else item
            for name, item in value.items()
        }


class Channel(_Section):
    """A REST entry of `communicationProtocols`: the only kind the stand-in can send commands through."""

    id: str = Field(min_length=1)
    type: Literal["rest"]
    configurations: RestChannelConfigurations


class KafkaChannel(_Section):
    """A Kafka entry of `communicationProtocols`. Production configurations have them; the stand-in has no
    broker, so it loads them, warns, and sends nothing through them."""

    id: str = Field(min_length=1)
    type: Literal["kafka"]
    configurations: dict[str, Any] = Field(default_factory=dict)


AnyChannel = Annotated[Channel | KafkaChannel, Field(discriminator="type")]


class Hook(_Section):
    """A custom JavaScript function the Flow Manager runs (command payloads, merge customizer)."""

    type: Literal["file"]
    encoding: Literal["plain", "base64"] = "plain"
    content: str


class OutputCommand(_Section):
    """The command a state sends when a saga lands on it."""

    channel: str
    label: str
    hook: Hook | None = None


class Transition(_Section):
    """An event a state accepts and the state it leads to."""

    inputEvent: str = Field(min_length=1)
    targetState: str
    businessEventId: Identifier | None = None


class State(_Section):
    """A state of the machine."""

    id: str = Field(min_length=1)
    description: str | None = None
    isFinal: bool
    businessStateId: Identifier
    outputCommand: OutputCommand | None = None
    sideEffects: list[OutputCommand] = Field(default_factory=list)
    outgoingTransitions: list[Transition] = Field(default_factory=list)


class BusinessState(_Section):
    """A state that matters to the business; several machine states share one."""

    id: Identifier
    # Optional in the Flow Manager's schema; the saga document then carries no description.
    description: str | None = None


class BusinessEvent(_Section):
    """An event that matters to the business, referenced by transitions."""

    id: Identifier
    description: str | None = None


class MachineDefinition(_Section):
    """The finite-state machine the Flow Manager drives sagas through."""

    initialState: str
    creationEvent: str
    states: list[State] = Field(min_length=1)
    businessStates: list[BusinessState] = Field(min_length=1)
    businessEvents: list[BusinessEvent] = Field(default_factory=list)


class PersistencyManagement(_Section):
    """Where sagas are kept: `crud` writes them to a CRUD Service collection."""

    type: str
    configurations: dict[str, Any] = Field(default_factory=dict)


class DeepMergeMetadata(_Section):
    """The Flow Manager's `settings.deepMergeMetadata`: `{"enabled": true}`, optionally with a customizer hook."""

    enabled: bool = False
    hook: Hook | None = None


class Settings(_Section):
    """Behaviour switches of the Flow Manager."""

    # The Flow Manager's own form is the object; a bare boolean (what this stand-in once required) is still
    # read, so configurations written for it keep loading, and a warning says how to write it.
    deepMergeMetadata: DeepMergeMetadata | bool = Field(default_factory=DeepMergeMetadata)
    throwOnUnexpectedEvents: bool = False

    @property
    def deep_merge_enabled(self) -> bool:
        """Whether event payloads merge into metadata recursively, whichever form the setting has."""
        setting = self.deepMergeMetadata
        return setting if isinstance(setting, bool) else setting.enabled


class SagaConfig(_Section):
    """A whole `saga.json`."""

    communicationProtocols: list[AnyChannel]
    persistencyManagement: PersistencyManagement
    machineDefinition: MachineDefinition
    settings: Settings = Field(default_factory=Settings)


class FlowManagerConfigError(ValueError):
    """A configuration the Flow Manager would refuse; `problems` names every bad item."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid Flow Manager configuration ({source}):\n{listing}")


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for index, part in enumerate(loc):
        if index == 2 and loc[0] == "communicationProtocols" and part in ("rest", "kafka"):
            # pydantic names the channel type it tried; the file has no such key, so leave it out.
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def _duplicates(values: list[Any]) -> list[Any]:
    return [value for value, seen in Counter(values).items() if seen > 1]


def _cross_reference_problems(config: SagaConfig) -> list[str]:
    """What a schema cannot see: ids that are repeated or point at nothing."""
    problems: list[str] = []
    machine = config.machineDefinition
    channel_ids = [channel.id for channel in config.communicationProtocols]
    state_ids = [state.id for state in machine.states]
    business_state_ids = [business.id for business in machine.businessStates]
    business_event_ids = {event.id for event in machine.businessEvents}
    for channel_id in _duplicates(channel_ids):
        problems.append(f"communicationProtocols: channel id {channel_id!r} is defined more than once")
    for state_id in _duplicates(state_ids):
        problems.append(f"machineDefinition.states: state id {state_id!r} is defined more than once")
    for business_id in _duplicates(business_state_ids):
        problems.append(
            f"machineDefinition.businessStates: business state id {business_id!r} is defined more than once"
        )
    if machine.initialState not in state_ids:
        problems.append(f"machineDefinition.initialState: unknown state {machine.initialState!r}")
    for state in machine.states:
        where = f"machineDefinition.states[{state.id}]"
        if state.businessStateId not in business_state_ids:
            problems.append(f"{where}.businessStateId: unknown business state {state.businessStateId!r}")
        if state.outputCommand is not None and state.outputCommand.channel not in channel_ids:
            problems.append(f"{where}.outputCommand.channel: unknown channel {state.outputCommand.channel!r}")
        for index, effect in enumerate(state.sideEffects):
            if effect.channel not in channel_ids:
                problems.append(f"{where}.sideEffects[{index}].channel: unknown channel {effect.channel!r}")
        for event in _duplicates([t.inputEvent for t in state.outgoingTransitions]):
            problems.append(f"{where}.outgoingTransitions: event {event!r} has more than one transition")
        for transition in state.outgoingTransitions:
            at = f"{where}.outgoingTransitions[{transition.inputEvent}]"
            if transition.targetState not in state_ids:
                problems.append(f"{at}.targetState: unknown state {transition.targetState!r}")
            if transition.businessEventId is not None and transition.businessEventId not in business_event_ids:
                problems.append(f"{at}.businessEventId: unknown business event {transition.businessEventId!r}")
    persistency = config.persistencyManagement
    if persistency.type == "crud":
        collection = persistency.configurations.get("collectionName")
        if not isinstance(collection, str) or not collection:
            problems.append("persistencyManagement.configurations.collectionName: required for type 'crud'")
    return problems


def config_warnings(config: SagaConfig) -> list[str]:
    """What a real Flow Manager does with this configuration and the stand-in does not: loaded, not refused."""
    warnings: list[str] = []
    kafka = {channel.id for channel in config.communicationProtocols if isinstance(channel, KafkaChannel)}
    for channel_id in sorted(kafka):
        warnings.append(
            f"communicationProtocols: Kafka channel {channel_id!r} is not connected (the stand-in has no broker)"
        )
    for state in config.machineDefinition.states:
        where = f"machineDefinition.states[{state.id}]"
        command = state.outputCommand
        if command is not None and command.channel in kafka:
            warnings.append(f"{where}: command {command.label!r} goes to Kafka channel {command.channel!r}: not sent")
        if command is not None and command.hook is not None:
            warnings.append(f"{where}.outputCommand.hook is not run: the command carries the whole metadata")
        if state.sideEffects:
            warnings.append(f"{where}.sideEffects are not sent")
        for transition in state.outgoingTransitions:
            if (transition.model_extra or {}).get("payloadValidationSchema") is not None:
                warnings.append(
                    f"{where}.outgoingTransitions[{transition.inputEvent}].payloadValidationSchema is not checked"
                )
    setting = config.settings.deepMergeMetadata
    if isinstance(setting, bool):
        warnings.append(
            f'settings.deepMergeMetadata: the Flow Manager expects {{"enabled": {str(setting).lower()}}}, not a boolean'
        )
    elif setting.hook is not None:
        warnings.append("settings.deepMergeMetadata.hook is not run: metadata is deep-merged without a customizer")
    return warnings


def validate_config(raw: Any, source: str = "configuration") -> SagaConfig:
    """Check a decoded `saga.json`; raise FlowManagerConfigError naming each bad item."""
    try:
        config = SagaConfig.model_validate(raw)
    except ValidationError as error:
        problems = [f"{_location(detail['loc'])}: {detail['msg']}" for detail in error.errors()]
        raise FlowManagerConfigError(source, problems) from None
    problems = _cross_reference_problems(config)
    if problems:
        raise FlowManagerConfigError(source, problems)
    return config


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a Flow Manager `saga.json`; return it as decoded JSON."""
    source = str(path)
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise FlowManagerConfigError(source, [f"cannot read the file: {error}"]) from error
    except ValueError as error:
        raise FlowManagerConfigError(source, [f"not valid JSON: {error}"]) from error
    validate_config(raw, source)
    if not isinstance(raw, dict):
        raise FlowManagerConfigError(source, ["the configuration must be a JSON object"])
    return raw


def packaged_config() -> dict[str, Any]:
    """The Flow Manager configuration shipped for the PGM, channels pointing at `localhost:3000`."""
    return load_config(PACKAGED_CONFIG_PATH)


def point_channels_at(config: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A copy of `config` whose REST channels go to `base_url` (scheme, host, port, path prefix), paths kept."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL with a host, got {base_url!r}")
    prefix = parts.path.rstrip("/")
    rewritten = copy.deepcopy(config)
    for channel in rewritten.get("communicationProtocols", []):
        if channel.get("type") != "rest":
            continue
        settings = channel["configurations"]
        settings["protocol"] = parts.scheme
        settings["endpoint"] = parts.hostname
        if parts.port is None:
            settings.pop("port", None)
        else:
            settings["port"] = parts.port
        settings["path"] = prefix + settings.get("path", "/")
    return rewritten


def pgm_saga_config(pgm_url: str) -> dict[str, Any]:
    """The packaged configuration with every channel pointed at the PGM serving at `pgm_url`."""
    return point_channels_at(packaged_config(), pgm_url)

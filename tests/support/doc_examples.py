"""Run the request examples of a Markdown document against live servers.

Examples are written for people: `$ curl ...` lines (with `\\` continuations) in fenced blocks, each
optionally followed by the answer it gives. The runner executes every curl with httpx (curl need not
be installed), mapping `localhost:<port>` to the live servers. Ids in a documented answer are mapped
to the live ones and substituted into later commands, so examples stay literal and readable. The
documented answer is checked: its keys must all be in the live answer, and its outcome fields
(result, resultCode, status, action, code, statusCode) must be equal.

Steps that a person or a provider takes between two commands are HTML comments, invisible when the
document is rendered: `<!-- doc-test: approve <id> -->` (the payer approves at the provider),
`<!-- doc-test: decline <id> -->`, `<!-- doc-test: complete-refund <id> -->`,
`<!-- doc-test: wait-saga <sagaId> <STATE> -->`, `<!-- doc-test: wait-status <provider> <paymentId> <STATUS> -->`,
`<!-- doc-test: settle <id> -->` (Braintree settles a sale).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import wait_for

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->")
CHECKED = ("result", "resultCode", "status", "action", "code", "statusCode", "messageLabel", "currentState")


@dataclass
class Step:
    """One thing the document asks for: a curl command (with its documented answer) or a directive."""

    kind: str
    text: str
    answer: str = ""


@dataclass
class Runner:
    """Executes a document's steps in order."""

    hosts: dict[str, str]
    directives: dict[str, Callable[..., None]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    ran: int = 0

    def run(self, document: Path) -> None:
        """Run every step of the document; raise AssertionError naming the step that failed."""
        for step in parse(document.read_text(encoding="utf-8")):
            text = self._substitute(step.text)
            try:
                if step.kind == "directive":
                    name, *arguments = text.split()
                    self.directives[name](*arguments)
                else:
                    self._curl(text, step.answer)
            except Exception as exc:
                raise AssertionError(f"{document.name}: step failed: {step.text}\n{exc}") from exc
            self.ran += 1

    def _substitute(self, text: str) -> str:
        for documented in sorted(self.aliases, key=len, reverse=True):
            text = text.replace(documented, self.aliases[documented])
        return text

    def _curl(self, command: str, documented: str) -> None:
        response = execute(command, self.hosts)
        if not documented.strip():
            assert response.status_code < 400, f"{response.status_code}: {response.text}"
            return
        expected = json.loads(documented)
        actual = response.json()
        compare(expected, actual, self.aliases)


def compare(expected: Any, actual: Any, aliases: dict[str, str], path: str = "") -> None:
    """Check a documented answer against the live one and learn the id aliases it shows."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path or 'answer'}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}{key} is documented but missing from {actual}"
            if key in CHECKED and not isinstance(value, (dict, list)):
                assert actual[key] == value, f"{path}{key}: documented {value!r}, got {actual[key]!r}"
            compare(value, actual[key], aliases, f"{path}{key}.")
    elif isinstance(expected, list) and isinstance(actual, list):
        for index, (documented, live) in enumerate(zip(expected, actual, strict=False)):
            compare(documented, live, aliases, f"{path}{index}.")
    elif isinstance(expected, str) and isinstance(actual, str) and expected != actual and len(expected) >= 6:
        aliases[expected.rstrip(".")] = actual


def parse(markdown: str) -> list[Step]:
    """The steps of a document, in order: curl commands in fenced blocks, and doc-test directives."""
    steps: list[tuple[int, Step]] = []
    for match in DIRECTIVE.finditer(markdown):
        steps.append((match.start(), Step("directive", match.group(1))))
    for block in FENCE.finditer(markdown):
        offset = block.start()
        lines = block.group(1).splitlines()
        index = 0
        while index < len(lines):
            line = lines[index]
            if not line.startswith("$ curl"):
                index += 1
                continue
            command = line[2:]
            # A command goes on after a trailing backslash, and inside a quote that is still open.
            while command.endswith("\\") or not _complete(command):
                index += 1
                command = (command[:-1] + " " if command.endswith("\\") else command + "\n") + lines[index].strip()
            index += 1
            answer_lines = []
            while index < len(lines) and not lines[index].startswith("$ "):
                answer_lines.append(lines[index])
                index += 1
            steps.append((offset + index, Step("curl", command, "\n".join(answer_lines))))
    return [step for _, step in sorted(steps, key=lambda pair: pair[0])]


def _complete(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


def execute(command: str, hosts: dict[str, str]) -> httpx.Response:
    """Run one curl command line with httpx."""
    words = shlex.split(command)
    assert words[0] == "curl", command
    method: str | None = None
    headers: dict[str, str] = {}
    data: str | None = None
    url: str | None = None
    position = 1
    while position < len(words):
        word = words[position]
        if word in ("-X", "--request"):
            method = words[position + 1]
            position += 2
        elif word in ("-H", "--header"):
            name, _, value = words[position + 1].partition(":")
            headers[name.strip()] = value.strip()
            position += 2
        elif word in ("-d", "--data", "--data-raw"):
            data = words[position + 1]
            position += 2
        elif word in ("-s", "--silent", "-S", "--show-error", "-f", "--fail"):
            position += 1
        elif word.startswith("-"):
            raise AssertionError(f"the doc runner does not know curl option {word}")
        else:
            url = word
            position += 1
    assert url is not None, command
    for documented, live in hosts.items():
        url = url.replace(documented, live)
    if data is not None and "content-type" not in {name.lower() for name in headers}:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return httpx.request(
        method or ("POST" if data is not None else "GET"), url, headers=headers, content=data, timeout=15
    )


def wait_saga(flow_manager_url: str) -> Callable[[str, str], None]:
    """A `wait-saga <sagaId> <STATE>` directive for a Flow Manager."""

    def wait(saga_id: str, state: str) -> None:
        wait_for(
            lambda: httpx.get(f"{flow_manager_url}/sagas/{saga_id}").json().get("currentState") == state,
            timeout=15,
            what=f"saga {saga_id} in {state}",
        )

    return wait

"""Read a Dockerfile into stages of instructions, and run a build stage's steps on this machine.

No container can be built or run where this project is developed, so the image is verified by doing
what the Dockerfile says outside a container: its absolute paths live under a scratch directory, its
RUN lines run in a shell there. What only a container can do (create users) is checked by reading.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# The image's own directories: in the scratch root they sit under the same names.
IMAGE_DIRECTORIES = ("/opt/pgm", "/var/lib/pgm", "/src")


@dataclass
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


def parse(path: Path) -> dict[str, Stage]:
    """The stages of a Dockerfile by name, with ARG defaults substituted into FROM lines."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    arguments: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            arguments[name.strip()] = default.strip()
        elif keyword == "FROM":
            base, _, name = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], rest).partition(" AS ")
            current = Stage(name.strip(), base.strip())
            stages[current.name] = current
        else:
            assert current is not None, f"{line!r} before FROM"
            current.instructions.append(Instruction(keyword, rest.strip()))
    return stages


def exec_form(arguments: str) -> list[str]:
    """A JSON-array instruction (ENTRYPOINT, CMD, HEALTHCHECK's CMD)."""
    words = json.loads(arguments)
    assert isinstance(words, list), arguments
    return [str(word) for word in words]


def env_pairs(arguments: str) -> list[tuple[str, str]]:
    """ENV key=value key=value ..."""
    pairs = []
    for word in shlex.split(arguments):
        key, separator, value = word.partition("=")
        assert separator, f"ENV {arguments!r}: use key=value"
        pairs.append((key, value))
    return pairs


class ScratchImage:
    """The image's file system as a directory on this machine."""

    def __init__(self, root: Path, context: Path) -> None:
        self.root = root
        self.context = context
        self.workdir = root
        self.env: dict[str, str] = {}
        # `python` in a RUN line is the base image's interpreter: here, the one this test runs on.
        self.tools = root / "base-image-bin"
        self.tools.mkdir(parents=True)
        (self.tools / "python").symlink_to(Path(sys._base_executable).resolve())  # type: ignore[attr-defined]

    def path(self, text: str) -> str:
        """Move the image's absolute directories under the scratch root."""
        for directory in IMAGE_DIRECTORIES:
            text = re.sub(rf"(?<![\w.]){re.escape(directory)}(?=/|\b|$)", f"{self.root}{directory}", text)
        return text

    def base_env(self) -> dict[str, str]:
        keep = {"HOME", "LANG", "TMPDIR", "PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_INDEX_URL"}
        env = {k: v for k, v in os.environ.items() if k in keep}
        env["PATH"] = f"{self.tools}:/usr/local/bin:/usr/bin:/bin"
        return env

    def apply(self, instruction: Instruction, skip_run: bool = False) -> None:
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword == "WORKDIR":
            self.workdir = Path(self.path(arguments))
            self.workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            for key, value in env_pairs(arguments):
                value = value.replace("$PATH", self.env.get("PATH", self.base_env()["PATH"]))
                self.env[key] = self.path(value)
        elif keyword == "COPY":
            words = arguments.split()
            if words[0].startswith("--from="):
                # Stages share the scratch root: what the build stage made is already where it is copied to.
                return
            *sources, target = words
            destination = Path(self.path(target)) if target.startswith("/") else self.workdir / target
            for source in sources:
                origin = self.context / source
                if origin.is_dir():
                    shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__"))
                elif target.endswith("/"):
                    destination.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, destination / origin.name)
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, destination)
        elif keyword == "RUN" and not skip_run:
            env = {**self.base_env(), **self.env}
            # The image never reuses pip's cache; here the cache keeps this test cheap.
            env.pop("PIP_NO_CACHE_DIR", None)
            result = subprocess.run(
                ["/bin/sh", "-c", self.path(arguments)],
                cwd=self.workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"RUN {arguments}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

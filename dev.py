#!/usr/bin/env python3
"""The project's two commands, on a machine with nothing but Python 3.11:

    python3 dev.py up     install, then run the service with its local stack on embedded defaults
    python3 dev.py test   install, then run the whole test suite (extra arguments go to pytest)

Also: `python3 dev.py lint` (ruff and mypy) and `python3 dev.py install`.
Everything is installed into ./.venv from requirements/lock.txt, the development lock, which includes
requirements/runtime.txt, the runtime lock (exact versions, transitive included), and re-installed only
when one of them or pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".installed"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements/runtime.txt", "requirements/lock.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def install() -> None:
    """Create .venv and install the pinned dependencies and the project, when anything changed."""
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is required; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    print("installing dependencies into .venv (first run takes a minute)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(ROOT / "requirements/lock.txt")], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(_fingerprint())


def _run(command: list[str]) -> int:
    try:
        return subprocess.run(command, cwd=ROOT).returncode
    except KeyboardInterrupt:
        return 130


def main(arguments: list[str]) -> int:
    """Dispatch the sub-command."""
    command, rest = (arguments[0], arguments[1:]) if arguments else ("help", [])
    if command == "install":
        install()
        return 0
    if command == "up":
        install()
        return _run([str(BIN / "pgm"), "dev", *rest])
    if command == "test":
        install()
        return _run([str(PYTHON), "-m", "pytest", *rest])
    if command == "lint":
        install()
        checks = [
            [str(BIN / "ruff"), "check", "src", "tests", "bench"],
            [str(BIN / "ruff"), "format", "--check", "src", "tests", "bench"],
            [str(BIN / "mypy")],
        ]
        return max(_run(check) for check in checks)
    print(__doc__)
    return 0 if command == "help" else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

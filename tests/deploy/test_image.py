"""The container image (Dockerfile) and the runtime lock it installs (docs/deploying.md#the-image)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.dockerfile import ScratchImage, exec_form, parse
from tests.support.pgm_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    """name → version of a lock file's `name==version` lines."""
    found = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            found[canonicalize_name(name)] = version.strip()
    return found


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """The installed distributions these requirements pull in, transitively (markers and extras applied)."""
    seen: dict[str, str] = {}
    todo = [(requirement, frozenset(requirement.extras)) for requirement in requirements]
    expanded: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, extras) in expanded:
            continue
        expanded.add((name, extras))
        distribution = importlib.metadata.distribution(name)
        seen[name] = distribution.version
        for text in distribution.requires or []:
            dependency = Requirement(text)
            wanted = any(dependency.marker is None or dependency.marker.evaluate({"extra": e}) for e in extras or {""})
            if wanted:
                todo.append((dependency, frozenset(dependency.extras)))
    return seen


def test_the_runtime_lock_is_exactly_what_the_service_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = closure([Requirement(text) for text in project["dependencies"]])
    runtime = pins(ROOT / "requirements/runtime.txt")
    assert runtime == needed, "requirements/runtime.txt differs from the closure of pyproject.toml's dependencies"
    development = pins(ROOT / "requirements/lock.txt")
    assert not set(development) & set(runtime), "a runtime pin is repeated in the development lock"
    assert "-r runtime.txt" in (ROOT / "requirements/lock.txt").read_text()


def test_the_dockerfile_is_a_slim_multi_stage_non_root_image_serving_pgm() -> None:
    stages = parse(ROOT / "Dockerfile")
    assert list(stages) == ["build", "runtime"]
    assert all("-slim" in stage.base for stage in stages.values())
    runtime = stages["runtime"]
    user = runtime.last("USER").split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert any(f"--uid {user}" in command for command in runtime.all("RUN"))
    assert exec_form(runtime.last("ENTRYPOINT")) + exec_form(runtime.last("CMD")) == ["pgm", "serve"]
    assert "/-/healthz" in (ROOT / "src/pgm/healthcheck.py").read_text()
    build_runs = " ".join(stages["build"].all("RUN"))
    assert "-r requirements/runtime.txt" in build_runs
    assert "lock.txt" not in build_runs
    # The runtime stage installs nothing: it only copies the build stage's virtual environment.
    assert not [command for command in runtime.all("RUN") if "pip" in command]


@pytest.mark.image
@pytest.mark.timeout(900)
def test_the_image_steps_install_the_runtime_lock_and_serve(tmp_path: Path) -> None:
    stages = parse(ROOT / "Dockerfile")
    image = ScratchImage(tmp_path / "image", ROOT)
    for instruction in stages["build"].instructions:
        image.apply(instruction)
    # The runtime stage: users cannot be created here (checked by reading above); the rest is done.
    for instruction in stages["runtime"].instructions:
        image.apply(instruction, skip_run=True)

    installed = subprocess.run(
        [image.path("/opt/pgm/bin/python"), "-m", "pip", "list", "--format=freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {canonicalize_name(line.split("==")[0]) for line in installed.splitlines() if "==" in line}
    allowed = set(pins(ROOT / "requirements/runtime.txt")) | {"pgm", "pip", "setuptools"}
    assert names <= allowed, f"not in the runtime lock: {sorted(names - allowed)}"
    assert {"pytest", "mypy", "playwright", "schemathesis"}.isdisjoint(names)

    port = free_port()
    # As `docker run -e HTTP_PORT=... -e HTTP_HOST=...`: the test cannot use the image's port 3000.
    env = {**image.base_env(), **image.env, "HTTP_PORT": str(port), "HTTP_HOST": "127.0.0.1"}
    assert env["PGM_DATABASE_URL"] == f"sqlite:///{image.root}/var/lib/pgm/pgm.sqlite3"
    command = exec_form(stages["runtime"].last("ENTRYPOINT")) + exec_form(stages["runtime"].last("CMD"))
    healthcheck = exec_form(stages["runtime"].last("HEALTHCHECK").split(" CMD ", 1)[1])
    log = (tmp_path / "pgm.log").open("wb")
    process = subprocess.Popen(command, cwd=image.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(healthcheck, env=env, capture_output=True).returncode != 0:
            assert process.poll() is None, (tmp_path / "pgm.log").read_text()
            assert time.monotonic() < deadline, "the image's health check never passed"
            time.sleep(0.2)
        ready = httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert (image.root / "var/lib/pgm/pgm.sqlite3").exists()
    finally:
        process.terminate()
        process.wait(15)
    assert subprocess.run(healthcheck, env=env, capture_output=True).returncode == 1

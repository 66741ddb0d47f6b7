"""Deployment files are tested as written: Procfile, Dockerfile, .dockerignore.

There is no Docker engine here, so the image itself is not built; its CMD and
HEALTHCHECK commands are run as subprocesses from the repository, which is
what the image's working directory holds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.servers import ROOT, VENV_BIN, free_port, wait_for_health

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def exec_form(instruction: str) -> list[str]:
    values = [args for keyword, args in dockerfile_instructions() if keyword == instruction]
    assert len(values) == 1, f"one {instruction} expected"
    args = values[0]
    if instruction == "HEALTHCHECK":
        args = args[args.index("CMD") + len("CMD") :].strip()
    command = json.loads(args)  # exec form: a JSON array, so signals reach gunicorn
    assert isinstance(command, list) and all(isinstance(part, str) for part in command)
    return command


def run_until_healthy(command: list[str], tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    with open(tmp_path / "out.log", "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_health(f"http://127.0.0.1:{port}", process)
            if "HEALTHCHECK" in DOCKERFILE:
                probe = subprocess.run(exec_form("HEALTHCHECK"), env=env, timeout=10)
                assert probe.returncode == 0, "the image's HEALTHCHECK fails against it"
        finally:
            process.terminate()
            assert process.wait(15) == 0, (tmp_path / "out.log").read_text()


def test_procfile_web_command_serves_the_health_check(tmp_path: Path) -> None:
    lines = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    run_until_healthy(shlex.split(lines["web"]), tmp_path)


def test_dockerfile_cmd_serves_the_health_check_on_port(tmp_path: Path) -> None:
    run_until_healthy(exec_form("CMD"), tmp_path)


def test_healthcheck_fails_when_nothing_listens() -> None:
    env = {**os.environ, "PORT": str(free_port())}
    assert (
        subprocess.run(
            exec_form("HEALTHCHECK"), env=env, timeout=15, capture_output=True
        ).returncode
        != 0
    )


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    base = dict(instructions)["FROM"]
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base
    user = [args for k, args in instructions if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    # Dependencies are installed from setup.cfg before the source is copied.
    copies = [(i, args) for i, (k, args) in enumerate(instructions) if k == "COPY"]
    first_source_copy = next(i for i, args in copies if "membersense" in args)
    dependency_install = next(
        i for i, (k, args) in enumerate(instructions) if k == "RUN" and "pip install -r" in args
    )
    assert dependency_install < first_source_copy
    assert "HEALTHCHECK" in keywords and "EXPOSE" in keywords
    assert "ENV" in keywords and "PORT=8080" in dict(instructions)["ENV"]


@pytest.mark.parametrize("path", [".venv", ".git", ".env", "tests", "**/__pycache__"])
def test_dockerignore_keeps_secrets_and_bulk_out(path: str) -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert path in ignored

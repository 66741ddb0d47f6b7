"""The package builds as `make` installs it: quietly, with the dashboard's files inside."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.servers import ROOT


def test_the_wheel_builds_without_setuptools_warnings_and_carries_the_dashboard(
    tmp_path: Path,
) -> None:
    # A copy of what the build reads, so the build leaves nothing in the work tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "membersense", source / "membersense", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    output = built.stdout + built.stderr
    assert "Warning" not in output, output  # setuptools' BuildBackendWarning and kin
    (wheel,) = (tmp_path / "dist").glob("membersense-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    web = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "membersense" / "web").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert web and web <= names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)

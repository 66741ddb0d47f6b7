"""The test harness of deploy/ (tests/hosts.py): a missing server is a skip that says why,
and the nginx file is changed only where it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import hosts


def test_a_missing_server_skips_with_the_reason() -> None:
    with pytest.raises(
        pytest.skip.Exception,
        match="no-such-server is not installed: scripts/install-system-packages",
    ):
        hosts.program("no-such-server", "/nonexistent/no-such-server")


def test_the_nginx_file_must_keep_its_marked_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shipped = (hosts.DEPLOY / "nginx.conf").read_text()
    (tmp_path / "nginx.conf").write_text(shipped.replace("    listen 80;", "    listen 8000;"))
    monkeypatch.setattr(hosts, "DEPLOY", tmp_path)
    with pytest.raises(AssertionError, match="no single line matching"):
        hosts.nginx_site(1, 2, tmp_path / "access.log")

"""Memory mode refuses several processes clearly (the gunicorn refusal: tests/test_server.py)."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Callable

import pytest
from flask import Flask

from membersense import create_app
from membersense.hosting import process_count
from membersense.processes import MULTIPROCESS_REFUSAL, SeveralProcesses
from tests.fakes import FakeDiscord


def test_no_known_host_means_no_count() -> None:
    assert process_count() is None


@pytest.mark.parametrize(
    ("module", "attribute"), [("uwsgi", "numproc"), ("mod_wsgi", "maximum_processes")]
)
def test_a_host_running_several_processes_is_refused_at_import(
    monkeypatch: pytest.MonkeyPatch, module: str, attribute: str
) -> None:
    fake = types.ModuleType(module)
    fake.process_group = ""  # type: ignore[attr-defined]  # as in Apache (daemon mode: its name)
    setattr(fake, attribute, 4)
    monkeypatch.setitem(sys.modules, module, fake)
    assert process_count() == 4
    with pytest.raises(SeveralProcesses) as refused:
        create_app({}, discord=FakeDiscord())
    assert str(refused.value) == f"{MULTIPROCESS_REFUSAL} (this one runs 4)"
    setattr(fake, attribute, 1)
    create_app({}, discord=FakeDiscord())  # one process is fine


def test_mod_wsgi_express_outside_apache_is_not_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # The PyPI package of the same name, imported outside Apache, says nothing.
    monkeypatch.setitem(sys.modules, "mod_wsgi", types.ModuleType("mod_wsgi"))
    assert process_count() is None


def test_a_multiprocess_server_gets_503_with_the_sentence_logged_once(
    make_app: Callable[..., Flask], log_stream: io.StringIO
) -> None:
    client = make_app().test_client()
    for _ in range(3):
        response = client.get("/api/members", environ_overrides={"wsgi.multiprocess": True})
        assert response.status_code == 503
        assert response.get_json()["error"] == MULTIPROCESS_REFUSAL
        assert int(response.headers["Retry-After"]) >= 1
    assert log_stream.getvalue().count("this server runs several processes") == 1

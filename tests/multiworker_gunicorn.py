"""gunicorn settings for tests only: MemberSense's own, but with two workers.

MemberSense refuses a second worker in memory mode (sessions are per
process); the metrics must still add up across workers, which
tests/test_metrics_gunicorn.py checks with this config and
tests/multiworker_app.py.
"""

from typing import Any

from membersense.serving import gunicorn_options

globals().update(gunicorn_options())
workers = 2


def on_starting(server: Any) -> None:
    """Allow the second worker (the only difference from gunicorn.conf.py)."""

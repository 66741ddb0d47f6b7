"""gunicorn configuration: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Everything comes from membersense.serving (and the environment / .env it
reads through membersense.config); see the README's configuration table.
"""

from membersense.config import ConfigError
from membersense.serving import gunicorn_options

try:
    globals().update(gunicorn_options())
except ConfigError as exc:
    # One line naming the variable, not a traceback.
    raise SystemExit(f"membersense: {exc}") from None

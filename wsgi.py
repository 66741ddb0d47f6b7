"""WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app`` (or any WSGI server).

The runtime's ``close()`` is registered with ``atexit`` for servers that offer
no shutdown hook of their own (uWSGI, mod_wsgi); under gunicorn the hooks in
:mod:`membersense.serving` run it first, and the second call does nothing.
"""

import atexit

from membersense import create_app, runtime_of
from membersense.logs import configure_logging

app = create_app()
configure_logging(app.config["SETTINGS"])
atexit.register(runtime_of(app).close)

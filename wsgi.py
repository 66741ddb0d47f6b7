"""WSGI entry point for every server (``deploy/`` and the README's Deployment section):

    gunicorn -c gunicorn.conf.py wsgi:app
    uwsgi --ini deploy/uwsgi.ini
    Apache with mod_wsgi: deploy/mod_wsgi.conf

:func:`membersense.hosting.wsgi_app` configures logging, refuses in one line what
this server cannot do (no Python threads, several processes in memory mode), and
closes the runtime on the server's stop: gunicorn's hooks in
:mod:`membersense.serving` do it first there, and the later calls do nothing.
"""

from membersense import create_app
from membersense.hosting import wsgi_app

app = wsgi_app(create_app)

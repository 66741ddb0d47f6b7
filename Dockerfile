# MemberSense: Flask + gunicorn (gthread) + a discord.py bridge thread.
# docker build -t membersense . && docker run -p 8080:8080 membersense
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080

WORKDIR /app

# Dependencies first, from setup.cfg alone, so this layer is rebuilt only when
# the dependency list changes, not on every source edit.
COPY setup.cfg ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(c['options']['install_requires'])" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY pyproject.toml README.md wsgi.py gunicorn.conf.py ./
COPY membersense ./membersense
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin membersense

USER membersense

EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/_ah/health' % os.environ.get('PORT', '8080'), timeout=4).status == 200 else 1)"]

# Exec form: gunicorn is PID 1 and receives SIGTERM directly (graceful stop).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]

"""Real web servers for the tests of ``deploy/``: nginx, uWSGI, Apache with mod_wsgi.

Each runs the file ``deploy/`` ships. What a test changes, and nothing more:

- **nginx**: ``deploy/nginx.conf`` is a site (http context); a small main
  configuration (pid file, temp and error-log paths in a temp dir) includes a
  copy of it in which only the three lines it marks ``<-`` differ: the port
  nginx listens on, MemberSense's port, the access log's path
  (:func:`nginx_site`, which fails if a marked line is missing).
- **uWSGI**: ``uwsgi --ini deploy/uwsgi.ini`` as is, ``PORT`` in its environment.
- **Apache**: ``deploy/mod_wsgi.conf`` as is, included from a small main
  configuration (modules, pid file, logs), its paths and port given as
  ``-C 'Define ...'``. Apache will not run its children as root, and its user
  (``www-data``) cannot read a Python, a virtualenv or a checkout under
  ``/root``: :func:`readable_python` links or copies what that user cannot
  read into the test's temp dir.

A server this machine lacks skips the tests that need it with the reason, which
pytest prints (``-ra``); ``scripts/install-system-packages`` installs them all.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.servers import ROOT, VENV_BIN, free_port, wait_for_health

__all__ = [
    "ApacheServer",
    "NginxServer",
    "Server",
    "UwsgiServer",
    "apache_user",
    "debian_uwsgi",
    "nginx_site",
    "readable_python",
    "scratch_dir",
    "wait_for_port",
]

DEPLOY = ROOT / "deploy"
INSTALL_HINT = "scripts/install-system-packages installs it (as root or with CI=true)"


def program(name: str, *places: str) -> str:
    """The path of *name* (on PATH or in one of *places*); skip the test when it is missing."""
    found = shutil.which(name) or next((p for p in places if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip(f"{name} is not installed: {INSTALL_HINT}")
    return found


def scratch_dir(purpose: str) -> Path:
    """A fresh directory under the system's temp dir that an unprivileged server user can
    traverse (pytest's own temp dirs are private to root); remove it when done."""
    path = Path(tempfile.mkdtemp(prefix=f"membersense-{purpose}-"))
    os.chmod(path, 0o755)
    return path


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:*port*."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Server:
    """A server in a subprocess, its output in a log file, stopped by a signal.

    *scratch* (see :func:`scratch_dir`) is removed once the server has stopped.
    """

    def __init__(
        self,
        command: list[str],
        *,
        base_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        scratch: Path | None = None,
    ) -> None:
        self.command = command
        self.base_url = base_url
        self.log_path = log_path
        self.env = dict(env if env is not None else os.environ)
        self.cwd = cwd
        self.scratch = scratch
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process (no waiting)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    def start(self, timeout: float = 60.0) -> Server:
        """Start it and wait until ``/_ah/health`` answers 200 through it."""
        process = self.launch()
        try:
            wait_for_health(self.base_url, process, timeout)
        except BaseException as exc:
            self.stop(signal.SIGKILL)
            raise AssertionError(
                f"{self.command[0]} did not become healthy:\n{self.log()}"
            ) from exc
        return self

    def exit_code(self, timeout: float = 60.0) -> int:
        """Wait for the process to end by itself (a refusal at start-up); its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"{self.command[0]} kept running:\n{self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send *sig* to the server's main process and wait; its exit code (None if never run).

        Whatever is left of its process group afterwards is killed, and the scratch
        directory removed.
        """
        try:
            if self.process is None:
                return None
            if self.process.poll() is None:
                self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"{self.command[0]} did not stop on signal {sig}:\n{self.log()}"
                ) from None
        finally:
            if self.process is not None:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)  # its own session: children too
                except ProcessLookupError:
                    pass
                self.process.wait()
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- nginx -----------------------------------------------------------------------------


def nginx_site(port: int, upstream_port: int, access_log: Path) -> str:
    """``deploy/nginx.conf`` with its three lines marked ``<-`` pointed at the test's ports/log."""
    text = (DEPLOY / "nginx.conf").read_text()
    changes = [
        (r"^(\s*)listen 80;(\s*# <-)", rf"\g<1>listen 127.0.0.1:{port};\g<2>"),
        (
            r"^(\s*)server 127\.0\.0\.1:8080;(\s*# <-)",
            rf"\g<1>server 127.0.0.1:{upstream_port};\g<2>",
        ),
        (
            r"^(\s*)access_log /var/log/nginx/membersense\.access\.log membersense;(\s*# <-)",
            rf"\g<1>access_log {access_log} membersense;\g<2>",
        ),
    ]
    for pattern, replacement in changes:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"deploy/nginx.conf: no single line matching {pattern!r}"
    assert text.count("# <-") == 3, "deploy/nginx.conf marks a line the tests do not change"
    return text


class NginxServer(Server):
    """nginx in front of MemberSense on *upstream_port*, with ``deploy/nginx.conf``."""

    def __init__(self, upstream_port: int, logs: Path) -> None:
        binary = program("nginx", "/usr/sbin/nginx")
        self.port = free_port()
        # The master opens the logs (as root); workers write response bodies to temp files.
        self.access_log = logs / "access.log"
        self.error_log = logs / "error.log"
        scratch = scratch_dir("nginx")
        temp = scratch / "temp"
        temp.mkdir()
        user = ""
        if os.geteuid() == 0:
            user = f"user {apache_user()};"
            shutil.chown(temp, user=apache_user())
        (scratch / "site.conf").write_text(nginx_site(self.port, upstream_port, self.access_log))
        (scratch / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
pid {scratch}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {scratch}/site.conf;
}}
""")
        # -e: the error log from the start (before the configuration names it), wherever
        # nginx was built to put it.
        super().__init__(
            [
                binary,
                "-p",
                str(scratch),
                "-c",
                str(scratch / "nginx.conf"),
                "-e",
                str(self.error_log),
                "-g",
                "daemon off;",
            ],
            base_url=f"http://127.0.0.1:{self.port}",
            log_path=logs / "nginx.out",
            scratch=scratch,
        )

    def log(self) -> str:
        text = super().log()
        if self.error_log.exists():
            text += self.error_log.read_text(errors="replace")
        return text


# -- uWSGI -----------------------------------------------------------------------------


class UwsgiServer(Server):
    """``uwsgi --ini deploy/uwsgi.ini`` (or other *args*) with PORT and *env* set.

    *binary* is the virtualenv's uWSGI (from PyPI) unless given, e.g. Debian's
    ``uwsgi-core`` (see :func:`debian_uwsgi`).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        args: tuple[str, ...] = ("--ini", str(DEPLOY / "uwsgi.ini")),
        binary: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        if binary is None:
            path = VENV_BIN / "uwsgi"
            if not path.exists():
                pytest.skip(
                    "uWSGI is not in the virtualenv: pip install -e '.[test]' builds it "
                    f"(it needs a C compiler; {INSTALL_HINT})"
                )
            binary = [str(path)]
        self.port = port or free_port()
        super().__init__(
            [*binary, *args],
            base_url=f"http://127.0.0.1:{self.port}",
            log_path=log_path,
            env={**os.environ, **env, "PORT": str(self.port)},
        )


def debian_uwsgi() -> list[str]:
    """Debian's uWSGI (2.0.21: Python threads off unless enabled) with its plugin for this
    Python, and the virtualenv's packages on its path; skip when that cannot be had."""
    binary = program("uwsgi-core", "/usr/bin/uwsgi-core")
    plugin = f"python{sys.version_info.major}{sys.version_info.minor}"
    plugin_dir = Path("/usr/lib/uwsgi/plugins")
    if not (plugin_dir / f"{plugin}_plugin.so").exists():
        found = sorted(p.name for p in plugin_dir.glob("python*_plugin.so"))
        pytest.skip(
            f"Debian's uWSGI has no plugin for Python {sys.version_info.major}."
            f"{sys.version_info.minor} (it has {found or 'none'}): the refusal without "
            "enable-threads needs a uWSGI older than 2.0.27 that embeds this Python"
        )
    site_packages = next(
        p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)
    )
    return [
        binary,
        "--plugin-dir",
        str(plugin_dir),
        "--plugin",
        plugin,
        "--pythonpath",
        site_packages,
    ]


# -- Apache and mod_wsgi ---------------------------------------------------------------


def apache_user() -> str:
    """The unprivileged user Apache's children (and nginx's workers) run as, when we are root."""
    for name in ("www-data", "apache", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.skip("no unprivileged user (www-data, apache, nobody) to run Apache's children as")


def readable_by(user: str, path: Path) -> bool:
    """Whether *user* can read *path* (every directory above it included)."""
    return subprocess.run(["test", "-r", str(path)], user=user, capture_output=True).returncode == 0


def link_tree(
    source: Path, target: Path, ignore: Callable[[str, list[str]], set[str]] | None = None
) -> None:
    """*source* copied to *target* as hard links (instant, no space) where the file system
    allows and the file is world-readable already, as copies made readable otherwise."""

    def link_or_copy(src: str, dst: str) -> str:
        if os.stat(src).st_mode & 0o004:
            try:
                os.link(src, dst)
                return dst
            except OSError:
                pass
        shutil.copy2(src, dst)
        os.chmod(dst, os.stat(dst).st_mode | 0o444)
        return dst

    shutil.copytree(source, target, symlinks=True, ignore=ignore, copy_function=link_or_copy)
    for directory, _, _ in os.walk(target):
        os.chmod(directory, 0o755)


def readable_python(tmp: Path, user: str) -> tuple[Path, Path]:
    """A (checkout, virtualenv) pair that *user* can read, for mod_wsgi's daemon.

    What *user* can read already is used as it is; the rest (the base Python,
    the virtualenv's packages, the checkout) is linked into *tmp*, and a small
    virtualenv there points at the pieces.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    venv = Path(sys.prefix)
    site_packages = venv / "lib" / version / "site-packages"
    checkout = ROOT
    if not (
        readable_by(user, checkout / "wsgi.py")
        and readable_by(user, checkout / "membersense" / "__init__.py")
    ):
        checkout = tmp / "checkout"
        checkout.mkdir()
        link_tree(
            ROOT / "membersense",
            checkout / "membersense",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        copy_readable(ROOT / "wsgi.py", checkout / "wsgi.py")
    if readable_by(user, base / "lib" / version / "os.py") and readable_by(user, site_packages):
        return checkout, venv
    if not readable_by(user, base / "lib" / version / "os.py"):
        staged = tmp / "python"
        stdlib = base / "lib" / version

        def skip_bulk(directory: str, names: list[str]) -> set[str]:
            if Path(directory) == stdlib:
                return {"site-packages", "test", "idlelib", "tkinter", "turtledemo"} & set(names)
            if Path(directory) == base:
                return {"include", "share"} & set(names)
            return set()

        link_tree(base, staged, ignore=skip_bulk)
        base = staged
    if not readable_by(user, site_packages):
        link_tree(site_packages, tmp / "site-packages")
        site_packages = tmp / "site-packages"
    # A virtualenv of our own on the readable base, reaching the packages through a .pth file.
    own = tmp / "venv"
    own_site = own / "lib" / version / "site-packages"
    own_site.mkdir(parents=True)
    (own / "bin").mkdir()
    (own / "bin" / "python").symlink_to(base / "bin" / version)
    (own / "pyvenv.cfg").write_text(
        f"home = {base / 'bin'}\ninclude-system-site-packages = "
        f"false\nversion = {sys.version.split()[0]}\n"
    )
    (own_site / "membersense-tests.pth").write_text(
        f"import site; site.addsitedir({str(site_packages)!r})\n"
    )
    for directory, _, _ in os.walk(own):
        os.chmod(directory, 0o755)
    return checkout, own


def copy_readable(source: Path, target: Path) -> None:
    shutil.copy2(source, target)
    os.chmod(target, 0o644)


def mod_wsgi_module() -> str:
    """The mod_wsgi Apache module built into the virtualenv (pip install mod_wsgi)."""
    express = VENV_BIN / "mod_wsgi-express"
    if not express.exists():
        pytest.skip(
            "mod_wsgi is not in the virtualenv: pip install -e '.[test]' builds it "
            f"(it needs apache2-dev; {INSTALL_HINT})"
        )
    return subprocess.run(
        [str(express), "module-location"], capture_output=True, text=True, check=True
    ).stdout.strip()


class ApacheServer(Server):
    """Apache httpd serving MemberSense with ``deploy/mod_wsgi.conf``, *env* in its environment.

    ``stop()`` is ``apachectl -k stop`` (SIGTERM), ``stop(signal.SIGWINCH)``
    ``apachectl -k graceful-stop``.
    """

    def __init__(
        self, env: Mapping[str, str], logs: Path, *, variant: Callable[[str], str] | None = None
    ) -> None:
        apxs = program("apxs", "/usr/bin/apxs")
        query = {
            name: subprocess.run(
                [apxs, "-q", name], capture_output=True, text=True, check=True
            ).stdout.strip()
            for name in ("SBINDIR", "TARGET", "LIBEXECDIR")
        }
        binary = program(query["TARGET"], f"{query['SBINDIR']}/{query['TARGET']}")
        modules = Path(query["LIBEXECDIR"])
        module = mod_wsgi_module()
        scratch = scratch_dir("apache")
        run = scratch / "run"
        run.mkdir(mode=0o755)
        user = ""
        checkout, venv = ROOT, Path(sys.prefix)
        if os.geteuid() == 0:
            name = apache_user()
            user = f"User {name}\nGroup #{pwd.getpwnam(name).pw_gid}"
            checkout, venv = readable_python(scratch, name)
        site = DEPLOY / "mod_wsgi.conf"
        if variant is not None:  # a test of how the app meets other settings, not of the file
            site = scratch / "variant.conf"
            site.write_text(variant((DEPLOY / "mod_wsgi.conf").read_text()))
        self.port = free_port()
        self.error_log = logs / "error.log"  # opened by the parent, as root
        (scratch / "httpd.conf").write_text(f"""
ServerRoot "{scratch}"
ServerName 127.0.0.1
PidFile "{run}/httpd.pid"
DefaultRuntimeDir "{run}"
ErrorLog "{self.error_log}"
LogLevel info
{user}
LoadModule mpm_event_module "{modules}/mod_mpm_event.so"
LoadModule authz_core_module "{modules}/mod_authz_core.so"
LoadModule reqtimeout_module "{modules}/mod_reqtimeout.so"
LoadModule wsgi_module "{module}"
WSGISocketPrefix "{run}/wsgi"
Include "{site}"
""")
        defines = {
            "MEMBERSENSE_ROOT": checkout,
            "MEMBERSENSE_VENV": venv,
            "MEMBERSENSE_PORT": self.port,
        }
        command = [binary, "-f", str(scratch / "httpd.conf"), "-DFOREGROUND"]
        for name, value in defines.items():
            command += ["-C", f"Define {name} {value}"]
        super().__init__(
            command,
            base_url=f"http://127.0.0.1:{self.port}",
            log_path=logs / "httpd.out",
            env={**os.environ, **env},
            scratch=scratch,
        )

    def log(self) -> str:
        """Apache's error log, where mod_wsgi writes the app's stderr."""
        text = super().log()
        if self.error_log.exists():
            text += self.error_log.read_text(errors="replace")
        return text

"""The ``membersense`` command: ``serve``, ``sandbox`` and ``demo``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from membersense.config import ConfigError

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    """MemberSense under gunicorn, exactly as gunicorn.conf.py configures it."""
    from gunicorn.app.base import BaseApplication

    from membersense import create_app
    from membersense.logs import configure_logging
    from membersense.serving import gunicorn_options

    options: dict[str, Any] = gunicorn_options()
    if args.fd is not None:
        options["bind"] = [f"fd://{args.fd}"]
    elif args.port is not None:
        options["bind"] = [f"{args.host}:{args.port}"]

    class Server(BaseApplication):
        def load_config(self) -> None:
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            app = create_app()
            configure_logging(app.config["SETTINGS"])
            return app

    Server().run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``membersense`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="membersense",
        description="Self-hosted REST gateway to a Discord bot's guild data.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the API server (gunicorn)")
    serve.add_argument("--host", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: PORT, 8080)")
    serve.add_argument(
        "--fd",
        type=int,
        metavar="FD",
        help="serve this inherited, bound socket instead (membersense demo uses it)",
    )
    commands.add_parser(
        "sandbox", help="run the local Discord emulator (see 'sandbox --help')", add_help=False
    )
    commands.add_parser("demo", help="run the sandbox and the API wired to it", add_help=False)

    # The sandbox and the demo parse their own flags.
    if argv and argv[0] == "sandbox":
        from membersense.sandbox.cli import main as sandbox_main

        return sandbox_main(argv[1:])
    if argv and argv[0] == "demo":
        from membersense.demo import main as demo_main

        return demo_main(argv[1:])

    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help()
        return 2
    try:
        return _serve(args)
    except ConfigError as exc:
        print(f"membersense: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

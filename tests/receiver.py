"""A webhook receiver for tests: a real HTTP server on a thread that records every POST and
answers with scripted statuses (200 once the script runs out)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from membersense.webhooks.signing import verify


@dataclass
class Delivery:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what it answered
    received_at: float = 0.0  # time.perf_counter() when it arrived

    def json(self) -> Any:
        return orjson.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        return verify(
            secret,
            self.headers["X-MemberSense-Timestamp"],
            self.headers["X-MemberSense-Signature"],
            self.body,
        )


class Receiver:
    """Records deliveries; ``answers`` is the script of statuses (``"hang"`` waits, ``302``
    redirects to ``/elsewhere``)."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.answers: list[int | str] = []
        self.changed = threading.Condition()
        self.release = threading.Event()  # ends every "hang"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.changed:
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                    status = 200 if answer == "hang" else int(answer)
                    # Recorded before answering: whoever sees the answer sees the record.
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers), body, status, time.perf_counter())
                    )
                    receiver.changed.notify_all()
                if answer == "hang":
                    receiver.release.wait(30)
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            args=(0.05,),
            daemon=True,
            name="test-webhook-receiver",
        )

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Delivery]:
        """The first *count* deliveries, once they arrived (AssertionError after *timeout*)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.deliveries) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.deliveries)} of {count} deliveries arrived")
                self.changed.wait(remaining)
            return list(self.deliveries[:count])


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()

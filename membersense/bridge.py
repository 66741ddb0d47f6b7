"""The sync → async bridge: one asyncio event loop in one named daemon thread.

Flask handlers run on gunicorn's worker threads and must not block on
asyncio themselves; discord.py needs one running event loop that owns every
client, socket and task. :class:`Bridge` is that loop. Request threads hand it
coroutine functions through :meth:`Bridge.call` and block (bounded) for the
result.

- The thread starts lazily, on the first :meth:`~Bridge.call`, so importing
  MemberSense or creating the app starts nothing (and gunicorn's master never
  owns a loop it would carry into a forked worker).
- The pid that started the loop is remembered: a process forked after that
  does not have the thread, so it is refused rather than silently hanging.
- :meth:`~Bridge.stop` runs the registered shutdown hooks (closing Discord
  clients), cancels every leftover task, stops the loop and joins the thread.
  It is idempotent and final; whoever owns the bridge calls it (the app's
  :class:`~membersense.runtime.Runtime`, the sandbox's server).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["Bridge", "BridgeClosed", "BridgeForked"]

log = logging.getLogger("membersense.bridge")

T = TypeVar("T")

#: How long stop() waits for shutdown hooks and leftover tasks, in seconds.
#: gunicorn's graceful timeout (8 s) must cover it.
STOP_TIMEOUT_S = 5.0


class BridgeClosed(RuntimeError):
    """The bridge has been stopped; it takes no more work."""


class BridgeForked(RuntimeError):
    """The bridge's loop belongs to the parent of this forked process."""


class Bridge:
    """An event loop in a daemon thread, fed from other threads.

    *name* names the thread (it shows up in thread dumps and ``ps -T``).
    """

    def __init__(self, name: str = "membersense-discord") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._pid: int | None = None
        self._closed = False
        self._stop_hooks: list[Callable[[], Awaitable[None]]] = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._thread else "idle"
        return f"<Bridge {self.name!r} {state}>"

    @property
    def running(self) -> bool:
        """True while the loop thread is alive in this process."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The running loop, or None before the first call, after :meth:`stop` or after a fork."""
        if not self.running or self._closed:
            return None
        return self._loop

    def in_loop_thread(self) -> bool:
        """True when called from the bridge's own loop thread."""
        return self._thread_id is not None and threading.get_ident() == self._thread_id

    def add_stop_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``await hook()`` on the loop when the bridge stops, before leftovers are cancelled.

        Hooks run in registration order; an exception in one is logged (by
        type) and does not stop the others.
        """
        with self._lock:
            self._stop_hooks.append(hook)

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, timeout: float) -> T:
        """Run ``await fn(*args)`` on the loop and return its result.

        Blocks the calling thread for at most *timeout* seconds; on timeout
        the coroutine is cancelled and :class:`TimeoutError` raised.
        Exceptions of the coroutine propagate. Raises :class:`RuntimeError`
        from the loop thread itself (it would wait for itself forever),
        :class:`BridgeClosed` after :meth:`stop` and :class:`BridgeForked` in
        a process forked from the one that started the loop.
        """
        if self.in_loop_thread():
            raise RuntimeError("Bridge.call() cannot be used from the bridge's own loop thread")
        future = self.submit(fn, *args)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"bridge call did not finish within {timeout:g}s") from None
        except concurrent.futures.CancelledError:
            # Cancelled on the loop (by stop()), not by us.
            raise BridgeClosed("the Discord bridge has stopped") from None

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> concurrent.futures.Future[T]:
        """Start ``await fn(*args)`` on the loop without waiting; its future.

        Refused as :meth:`call` is (after :meth:`stop`, in a forked child).
        """
        loop = self._ensure_started()
        # The coroutine object is created only now, so a refused call never
        # leaves a "coroutine was never awaited" behind.
        coro = fn(*args)
        try:
            return asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop closed between the check and here
            coro.close()
            raise BridgeClosed("the Discord bridge has stopped") from None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Run the stop hooks, cancel leftover tasks, stop the loop and join the thread.

        Idempotent and final: later calls return at once and :meth:`call`
        raises :class:`BridgeClosed`. Safe at interpreter exit. In a forked
        child it only forgets the parent's loop (there is no thread to stop).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread, pid = self._loop, self._thread, self._pid
        if loop is None or thread is None:
            return
        if pid != os.getpid():
            return
        if self.in_loop_thread():
            raise RuntimeError("Bridge.stop() cannot be used from the bridge's own loop thread")
        if thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), loop)
            try:
                future.result(timeout + 1)
            except Exception as exc:  # stop regardless; say what went wrong
                log.warning("bridge shutdown did not finish cleanly: %s", type(exc).__name__)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                log.warning("bridge thread did not stop within %.1fs", timeout)

    # -- internals -------------------------------------------------------

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise BridgeClosed("the Discord bridge has stopped")
            if self._loop is not None:
                if self._pid != os.getpid():
                    raise BridgeForked(
                        f"the Discord bridge was started in process {self._pid} and cannot be "
                        f"used in forked process {os.getpid()}; start it after forking"
                    )
                return self._loop
            ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = (
                concurrent.futures.Future()
            )
            thread = threading.Thread(target=self._run, args=(ready,), name=self.name, daemon=True)
            thread.start()
            loop = ready.result()
            self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return loop

    def _run(self, ready: concurrent.futures.Future[asyncio.AbstractEventLoop]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._thread_id = threading.get_ident()
        ready.set_result(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _shutdown(self, timeout: float) -> None:
        with self._lock:
            hooks = list(self._stop_hooks)
        for hook in hooks:
            try:
                await asyncio.wait_for(hook(), timeout)
            except Exception as exc:
                log.warning("bridge stop hook failed: %s", type(exc).__name__)
        current = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            done, pending = await asyncio.wait(leftovers, timeout=timeout)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.debug(
                        "leftover task %s ended with %s",
                        task.get_name(),
                        type(task.exception()).__name__,
                    )
            if pending:
                log.warning("%d bridge tasks ignored cancellation", len(pending))
        await asyncio.get_running_loop().shutdown_default_executor()

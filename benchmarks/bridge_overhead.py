"""Benchmark: the cost of one ``Bridge.call()`` of a no-op coroutine (target: p50 <= 100 us).

    .venv/bin/python -m benchmarks.bridge_overhead [--calls N] [--rounds R]

Also prints the same round trip done by hand with ``asyncio.run_coroutine_threadsafe``
(what the bridge wraps), so the bridge's own share is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

from benchmarks.common import median, percentile
from membersense.bridge import Bridge

TARGET_US = 100.0


async def noop() -> None:
    return None


def measure(call, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    bridge = Bridge(name="bench-bridge")
    bridge.call(noop, timeout=5)  # start the loop thread outside the measurement
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        bridge_p50, bridge_p99, raw_p50 = [], [], []
        for _ in range(args.rounds):
            samples = measure(lambda: bridge.call(noop, timeout=5), args.calls)
            bridge_p50.append(median(samples))
            bridge_p99.append(percentile(samples, 99))
            raw = measure(
                lambda: asyncio.run_coroutine_threadsafe(noop(), loop).result(5), args.calls
            )
            raw_p50.append(median(raw))
    finally:
        bridge.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    p50 = median(bridge_p50)
    print(
        f"Bridge.call(noop): p50 {p50:.1f} us, p99 {median(bridge_p99):.1f} us "
        f"(median of {args.rounds} rounds x {args.calls} calls); target p50 <= {TARGET_US:.0f} us"
        f" -> {'PASS' if p50 <= TARGET_US else 'FAIL'}"
    )
    print(
        f"run_coroutine_threadsafe by hand: p50 {median(raw_p50):.1f} us "
        f"(bridge overhead {p50 - median(raw_p50):+.1f} us)"
    )


if __name__ == "__main__":
    main()

"""``python -m benchmarks`` (``make bench``): every benchmark, one after the other.

Each prints its own medians and verdicts; see BENCHMARKS.md for the targets
and the figures last recorded.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = (
    "benchmarks.bridge_overhead",
    "benchmarks.login_ready",
    "benchmarks.memory_per_session",
    "benchmarks.sandbox_chunking",
    "benchmarks.members_throughput",
    "benchmarks.large_guild",
    "benchmarks.modes",
    "benchmarks.failover",
    "benchmarks.events_latency",
    "benchmarks.slow_clients",
    "benchmarks.slow_discord",
    "benchmarks.worker_cost",
)


def main() -> int:
    """Run each benchmark in its own process; return non-zero if one crashed."""
    failed = []
    for module in SCRIPTS:
        print(f"== {module}", flush=True)
        if subprocess.run([sys.executable, "-m", module], check=False).returncode != 0:
            failed.append(module)
    if failed:
        print(f"crashed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The measuring loop every client of the benchmark shares: one call in flight, keys drawn by
the same xorshift64 sequence as benches/client.rs, 0.5 s of warm-up, then the counted calls."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

WARM_UP_SECONDS = 0.5
MASK = (1 << 64) - 1


class Keys:
    """xorshift64, seeded as the Rust client's bench: the same keys in the same order."""

    def __init__(self) -> None:
        self.state = 0x9E3779B97F4A7C15

    def draw(self, users: int, count: int) -> list[int]:
        keys = []
        for _ in range(count):
            self.state ^= (self.state << 13) & MASK
            self.state ^= self.state >> 7
            self.state ^= (self.state << 17) & MASK
            keys.append(self.state % users)
        return keys


def measure(
    client: str, call: Callable[[list[int]], object], batch: int, users: int, seconds: float
) -> dict[str, object]:
    """Calls `call` with `batch` keys at a time for `seconds` after the warm-up; the result as
    benches/client.rs prints it."""
    keys = Keys()
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < WARM_UP_SECONDS + seconds:
        drawn = keys.draw(users, batch)
        before = time.perf_counter()
        call(drawn)
        after = time.perf_counter()
        if after - started > WARM_UP_SECONDS:
            latencies.append(after - before)
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(int(len(latencies) * q), len(latencies) - 1)] * 1e6

    return {
        "client": client,
        "batch": batch,
        "calls": len(latencies),
        "calls_per_second": len(latencies) / sum(latencies),
        "p50_us": quantile(0.50),
        "p99_us": quantile(0.99),
    }


def report(result: dict[str, object]) -> None:
    print(json.dumps(result))

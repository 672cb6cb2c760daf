"""The open-loop load generator and percentiles every benchmark scenario shares."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx


def percentile_ms(samples: list[float], q: float) -> float:
    """The `q` quantile of `samples` (seconds), in milliseconds; NaN when there are none."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def open_loop(
    rate: float, seconds: float, call: Callable[[], Awaitable[bool]]
) -> tuple[list[float], int, float]:
    """Start `call()` at a fixed rate regardless of how long earlier calls take: the latencies of
    the calls that returned True, how many failed, and the elapsed time."""
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            ok = await call()
        except httpx.HTTPError:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1

    tasks = []
    began = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, errors, time.perf_counter() - began

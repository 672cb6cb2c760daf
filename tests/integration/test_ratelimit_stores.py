"""Both rate-limiter stores against the same cases: the memory one and the PostgreSQL one must
decide alike (a deployment switches between them with VEIL_RATE_LIMIT_STORE)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.core.security.ratelimit import MemoryRateLimiter, PostgresRateLimiter, Rate, RateLimiter

BUDGET = Rate.per_window(10, 60)  # 10 at once, then one every 6 s


@pytest.fixture(params=["memory", "postgres"])
async def limiter(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    db = Database(database_url, max_size=2, timeout=5, metrics=Metrics())
    await db.open()
    try:
        yield PostgresRateLimiter(db, sweep_probability=0.0)
    finally:
        await db.close()


async def test_a_first_hit_heavier_than_the_burst_is_refused(limiter: RateLimiter) -> None:
    refused = await limiter.hit("k", BUDGET, 0.0, cost=11)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6.0)
    # It cost nothing: the whole burst is still there.
    assert (await limiter.hit("k", BUDGET, 0.0, cost=10)).allowed
    assert not (await limiter.hit("k", BUDGET, 0.0)).allowed


async def test_a_first_hit_of_exactly_the_burst_is_allowed(limiter: RateLimiter) -> None:
    assert (await limiter.hit("k", BUDGET, 0.0, cost=10)).allowed
    assert not (await limiter.hit("k", BUDGET, 0.0)).allowed


async def test_forget_empties_the_keys_it_names_only(limiter: RateLimiter) -> None:
    for key in ("a", "b", "c"):
        assert (await limiter.hit(key, BUDGET, 0.0, cost=10)).allowed
    await limiter.forget(["a", "b", "never-hit"])
    assert (await limiter.hit("a", BUDGET, 0.0, cost=10)).allowed
    assert (await limiter.hit("b", BUDGET, 0.0)).allowed
    assert not (await limiter.hit("c", BUDGET, 0.0)).allowed


async def test_a_weighted_refund_gives_back_its_weight(limiter: RateLimiter) -> None:
    assert (await limiter.hit("k", BUDGET, 0.0, cost=10)).allowed
    await limiter.refund("k", BUDGET, 0.0, cost=4)
    assert (await limiter.hit("k", BUDGET, 0.0, cost=4)).allowed
    assert not (await limiter.hit("k", BUDGET, 0.0)).allowed

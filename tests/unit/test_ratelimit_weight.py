"""Weighted limiter hits: a request of N envelopes spends N units of a budget, all or nothing."""

from __future__ import annotations

import pytest

from veil.core.security.ratelimit import MemoryRateLimiter, Rate

BUDGET = Rate.per_window(10, 60)  # 10 at once, then one every 6 s


async def test_a_weighted_hit_spends_its_weight_all_or_nothing() -> None:
    limiter = MemoryRateLimiter()
    assert (await limiter.hit("k", BUDGET, 0.0, cost=6)).allowed
    refused = await limiter.hit("k", BUDGET, 0.0, cost=5)  # 11 > 10: refused whole, costs nothing
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6.0)  # one unit frees up every 6 s
    assert (await limiter.hit("k", BUDGET, 0.0, cost=4)).allowed
    assert not (await limiter.hit("k", BUDGET, 0.0)).allowed
    assert (await limiter.hit("k", BUDGET, 12.0, cost=2)).allowed  # two units back after 12 s
    assert not (await limiter.hit("k", BUDGET, 12.0)).allowed


async def test_weight_one_is_the_plain_hit() -> None:
    limiter = MemoryRateLimiter()
    results = [(await limiter.hit("k", BUDGET, 0.0)).allowed for _ in range(11)]
    assert results == [True] * 10 + [False]

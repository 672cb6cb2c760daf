"""Rate limiting with the generic cell rate algorithm (GCRA).

A limit is a sustained `per_second` rate with a `burst`. Each key keeps one number, its
theoretical arrival time (TAT): the moment its bucket would be empty again. A request at `now` is
allowed when `max(tat, now) + interval - now <= interval * burst`, and then moves the TAT on by
one interval. So `burst` requests may arrive at once, then one per interval; a denied request
learns exactly how long to wait, and a denied request costs nothing. A hit may weigh `cost` units
(device messages count envelopes, not requests): it moves the TAT on by `cost` intervals, all or
nothing.

Two stores implement the same interface: `MemoryRateLimiter` for a single process, and
`PostgresRateLimiter`, whose check-and-update is one atomic statement, for any number of
processes sharing the database (the default; see docs/adr/0008). `peek` answers "would a hit be
allowed?" without consuming. `refund` gives hits back: the failed-login budget takes its slot
before the password is checked, so concurrent guesses cannot overshoot it, and returns the slot when
the password was right (docs/adr/0015). `forget` drops keys altogether (a confirmed password reset
clears the failed-login budgets of its account). A hit weighing more than the burst is refused, on
a key's first hit too, by both stores.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from veil.core.db import Database


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int

    @classmethod
    def per_window(cls, count: int, seconds: float) -> Rate:
        """`count` requests per `seconds`, all of which may come at once."""
        return cls(per_second=count / seconds, burst=count)

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second

    @property
    def tolerance(self) -> float:
        return self.interval * self.burst


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


class RateLimiter(Protocol):
    async def hit(self, key: str, rate: Rate, now: float, cost: int = 1) -> Decision: ...

    async def peek(self, key: str, rate: Rate, now: float) -> Decision: ...

    async def refund(self, key: str, rate: Rate, now: float, cost: int = 1) -> None: ...

    async def forget(self, keys: list[str]) -> None: ...


def limiter_key(purpose: str, subject: str) -> str:
    """A bounded, non-identifying key: purpose plus a hash of the subject (an IP or an email)."""
    return purpose + ":" + hashlib.sha256(subject.encode()).hexdigest()[:32]


def messaging_budget_key(user_id: object) -> str:
    """The one budget a user's message sends and device messages share (HTTP, WebSocket, devices)."""
    return limiter_key("messages", str(user_id))


def _decide(tat: float | None, rate: Rate, now: float, cost: int = 1) -> tuple[Decision, float]:
    new_tat = max(tat if tat is not None else now, now) + rate.interval * cost
    wait = new_tat - now - rate.tolerance
    if wait > 1e-9:
        return Decision(False, wait), tat if tat is not None else now
    return Decision(True), new_tat


def _refunded(tat: float, rate: Rate, now: float, cost: int = 1) -> float:
    # Never below now: a refund returns slots, it does not bank credit for later.
    return max(tat - rate.interval * cost, now)


_PURPOSE = re.compile(r"[a-z][a-z-]{0,31}")


def _purpose(key: str) -> str:
    """The budget's name, from a `limiter_key`; "other" for a key of another shape, so that a
    label never carries a hash or an id (the metric's series stay a fixed set)."""
    purpose, separator, _ = key.partition(":")
    return purpose if separator and _PURPOSE.fullmatch(purpose) else "other"


class CountedRateLimiter:
    """Any store, telling `on_refused` the budget's name (its key's purpose) for every refused
    hit: what the rate-limit metric counts. A refused `peek` is a question, not a refusal."""

    def __init__(self, inner: RateLimiter, on_refused: Callable[[str], None]) -> None:
        self._inner = inner
        self._on_refused = on_refused

    async def hit(self, key: str, rate: Rate, now: float, cost: int = 1) -> Decision:
        decision = await self._inner.hit(key, rate, now, cost)
        if not decision.allowed:
            self._on_refused(_purpose(key))
        return decision

    async def peek(self, key: str, rate: Rate, now: float) -> Decision:
        return await self._inner.peek(key, rate, now)

    async def refund(self, key: str, rate: Rate, now: float, cost: int = 1) -> None:
        await self._inner.refund(key, rate, now, cost)

    async def forget(self, keys: list[str]) -> None:
        await self._inner.forget(keys)


class Unlimited:
    """Every request is allowed (VEIL_RATE_LIMITS=off, never in production)."""

    async def hit(self, key: str, rate: Rate, now: float, cost: int = 1) -> Decision:
        return Decision(True)

    async def peek(self, key: str, rate: Rate, now: float) -> Decision:
        return Decision(True)

    async def refund(self, key: str, rate: Rate, now: float, cost: int = 1) -> None:
        return None

    async def forget(self, keys: list[str]) -> None:
        return None


class MemoryRateLimiter:
    """One process only. Expired keys are dropped as the table grows, so memory stays bounded by
    the number of keys active within their tolerance window."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tat: dict[str, float] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, rate: Rate, now: float, cost: int = 1) -> Decision:
        decision, new_tat = _decide(self._tat.get(key), rate, now, cost)
        if decision.allowed:
            if len(self._tat) >= self._max_keys:
                self._tat = {k: t for k, t in self._tat.items() if t > now}
            self._tat[key] = new_tat
        return decision

    async def peek(self, key: str, rate: Rate, now: float) -> Decision:
        return _decide(self._tat.get(key), rate, now)[0]

    async def refund(self, key: str, rate: Rate, now: float, cost: int = 1) -> None:
        if key in self._tat:
            self._tat[key] = _refunded(self._tat[key], rate, now, cost)

    async def forget(self, keys: list[str]) -> None:
        for key in keys:
            self._tat.pop(key, None)


class PostgresRateLimiter:
    """Shared by every process on the database. The update only happens when allowed, in the
    same statement that decides, so concurrent requests across processes cannot overshoot."""

    # A new key is only inserted when the hit fits its tolerance (a cost above the burst does
    # not), exactly as an existing key is only updated then.
    _HIT = """
        INSERT INTO rate_limits AS r (key, tat)
        SELECT $1, $2::float8 + $3::float8 WHERE $3::float8 <= $4::float8 + 1e-9
        ON CONFLICT (key) DO UPDATE SET tat = GREATEST(r.tat, $2::float8) + $3::float8
            WHERE GREATEST(r.tat, $2::float8) + $3::float8 - $2::float8 <= $4::float8 + 1e-9
        RETURNING tat
    """

    def __init__(self, db: Database, sweep_probability: float = 0.001) -> None:
        self._db = db
        self._sweep_probability = sweep_probability

    async def hit(self, key: str, rate: Rate, now: float, cost: int = 1) -> Decision:
        step = rate.interval * cost
        async with self._db.transaction("ratelimit_hit") as conn:
            if await conn.fetchval(self._HIT, key, now, step, rate.tolerance) is not None:
                if random.random() < self._sweep_probability:  # noqa: S311 - not security relevant
                    await conn.execute("DELETE FROM rate_limits WHERE tat < $1", now)
                return Decision(True)
            tat = await conn.fetchval("SELECT tat FROM rate_limits WHERE key = $1", key)
        return _decide(tat, rate, now, cost)[0]

    async def peek(self, key: str, rate: Rate, now: float) -> Decision:
        async with self._db.connection() as conn:
            tat = await conn.fetchval("SELECT tat FROM rate_limits WHERE key = $1", key)
        return _decide(tat, rate, now)[0]

    async def refund(self, key: str, rate: Rate, now: float, cost: int = 1) -> None:
        async with self._db.transaction("ratelimit_refund") as conn:
            await conn.execute(
                "UPDATE rate_limits SET tat = GREATEST(tat - $2::float8, $3::float8) WHERE key = $1",
                key,
                rate.interval * cost,
                now,
            )

    async def forget(self, keys: list[str]) -> None:
        async with self._db.transaction("ratelimit_forget") as conn:
            await conn.execute("DELETE FROM rate_limits WHERE key = ANY($1::text[])", keys)

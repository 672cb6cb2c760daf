"""Password hashing with Argon2id, off the event loop and with bounded concurrency.

Each hash needs 64 MiB and most of a core for ~40 ms, so at most `max_concurrent` run at once (the
memory bound is `max_concurrent` x 64 MiB) and at most `max_waiting` more may queue; beyond that
the caller gets `Overloaded` at once instead of piling up memory and latency. A login flood
therefore cannot starve other requests: the event loop never runs a hash itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

T = TypeVar("T")


@dataclass(frozen=True)
class Argon2Parameters:
    """Argon2id cost. Chosen by measurement on the 2-core machine: see docs/adr/0006."""

    time_cost: int = 1
    memory_kib: int = 64 * 1024
    parallelism: int = 2


class Overloaded(Exception):
    """Too many password operations are already waiting; the caller should answer 503."""


class Passwords:
    def __init__(self, params: Argon2Parameters, *, max_concurrent: int = 2, max_waiting: int = 64) -> None:
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(max_concurrent + max_waiting)
        # A hash of a random secret, verified against when the account does not exist so that an
        # unknown email costs exactly what a wrong password costs.
        self._dummy_hash = self._hasher.hash("veil dummy password for unknown accounts")

    async def hash(self, password: str) -> str:
        return await self._offload(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches. With no stored hash, spends the same time and says False."""
        target = stored_hash or self._dummy_hash
        try:
            await self._offload(self._hasher.verify, target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    async def _offload(self, fn: Callable[..., T], *args: str) -> T:
        if self._slots.locked():
            raise Overloaded
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""Block use cases: block, unblock, list. What a block prevents is enforced where the blocked user
acts (messaging, device messages), through `veil.blocks.is_blocked`."""

from __future__ import annotations

import uuid

import asyncpg

from veil.blocks import store
from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.problems import FieldError, not_found, validation_failed
from veil.core.security.authn import Principal


class BlocksService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def block(self, principal: Principal, user_id: uuid.UUID) -> None:
        """Idempotent. Any existing account may be blocked, whatever its status (a suspended one may
        come back); an id without an account is a 404 and stores nothing. That answer tells the
        caller no more than any user lookup does, and nothing to the user being blocked."""
        if user_id == principal.user_id:
            raise validation_failed([FieldError(("path", "user_id"), "You cannot block yourself.")])
        try:
            async with self._db.transaction("blocks_block") as conn:
                exists = await store.block(conn, principal.user_id, user_id, self._clock.now())
        except asyncpg.ForeignKeyViolationError:
            exists = False  # the account was purged between the check and the insert
        if not exists:
            raise not_found("No such user.")

    async def unblock(self, principal: Principal, user_id: uuid.UUID) -> None:
        """Idempotent: unblocking someone not blocked (or unknown) changes nothing."""
        async with self._db.transaction("blocks_unblock") as conn:
            await store.unblock(conn, principal.user_id, user_id)

    async def blocked(
        self, principal: Principal, after: uuid.UUID | None, limit: int
    ) -> list[store.BlockRecord]:
        async with self._db.connection() as conn:
            return await store.blocks_of(conn, principal.user_id, after, limit)

"""Removing stored objects together with the rows that point at them, in batches.

One order everywhere: objects first, then rows, in a transaction that holds the rows (claimed with
SKIP LOCKED, so processes sweeping at once share the work). If the store fails, the transaction
rolls back and every row still leads to its object for the next sweep; no object is left without
a row that points at it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from veil.core.blobstore import BlobStore
from veil.core.db import Connection, Database

# claim(conn, limit) locks up to `limit` rows due for removal and returns their object keys;
# forget(conn, keys) deletes those rows.
Claim = Callable[[Connection, int], Awaitable[list[str]]]
Forget = Callable[[Connection, list[str]], Awaitable[None]]


async def sweep_objects(
    db: Database, blobs: BlobStore, name: str, claim: Claim, forget: Forget, batch: int = 500
) -> int:
    """Remove everything `claim` finds, batch by batch; how many objects went."""
    removed = 0
    while True:
        async with db.transaction(name) as conn:
            keys = await claim(conn, batch)
            if keys:
                await blobs.delete(keys)
                await forget(conn, keys)
        removed += len(keys)
        if len(keys) < batch:
            return removed

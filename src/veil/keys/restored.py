"""What a database restored from a backup must forget: the one-time prekeys it still offers.

A backup is a moment in the past. Every one-time prekey handed out after that moment is unclaimed
again in the restored database, and the server cannot tell which ones they were; handing one out a
second time lets two senders start sessions on the same key (and a replayed first message be
accepted twice). So every one-time prekey unclaimed at the backup is retired, classical and ML-KEM
alike: none of them is ever handed out again, and claims fall back to the signed prekey (and the
last-resort ML-KEM key) until the devices upload new ones, which they do at their next key sync
(`GET /v1/keys/count` shows 0 left; the SDK tops up below its threshold).

Retired, not just deleted: a classical key is marked claimed (its row stays, as for any handed-out
key) and an ML-KEM key's id goes to the spent ids, so that a device re-sending an old upload
cannot put one of them back on offer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from veil.core.db import Connection, Database


@dataclass(frozen=True)
class RetiredPrekeys:
    classical: int
    post_quantum: int
    devices: int


async def retire_one_time_prekeys(conn: Connection, now: datetime) -> RetiredPrekeys:
    devices = await conn.fetchval(
        """SELECT count(*) FROM (
               SELECT device_id FROM one_time_prekeys WHERE claimed_at IS NULL
               UNION SELECT device_id FROM pq_one_time_prekeys) AS offering"""
    )
    classical = await conn.execute(
        "UPDATE one_time_prekeys SET claimed_at = $1 WHERE claimed_at IS NULL", now
    )
    post_quantum = await conn.fetchval(
        """WITH retired AS (DELETE FROM pq_one_time_prekeys RETURNING device_id, key_id),
                spent AS (INSERT INTO pq_spent_prekey_ids (device_id, key_id)
                          SELECT device_id, key_id FROM retired ON CONFLICT DO NOTHING)
           SELECT count(*) FROM retired"""
    )
    return RetiredPrekeys(int(classical.split()[-1]), int(post_quantum), int(devices))


async def forget_unsafe_prekeys(db: Database, now: datetime) -> RetiredPrekeys:
    """Retire every one-time prekey on offer, in one transaction (see the module doc)."""
    async with db.transaction("restore_retire_prekeys") as conn:
        return await retire_one_time_prekeys(conn, now)

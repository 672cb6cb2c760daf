"""SQL for post-quantum prekeys: a device's last-resort key and its one-time keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from veil.core.db import Connection
from veil.keys.pq_prekeys import ClaimedPqPrekey, PqPrekey


async def set_last_resort(conn: Connection, device_id: uuid.UUID, key: PqPrekey, now: datetime) -> None:
    """Set or replace the device's last-resort PQ prekey (the same key again changes nothing)."""
    await conn.execute(
        """INSERT INTO pq_last_resort_prekeys (device_id, key_id, public_key, signature, created_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (device_id) DO UPDATE SET
               key_id = EXCLUDED.key_id, public_key = EXCLUDED.public_key,
               signature = EXCLUDED.signature, created_at = EXCLUDED.created_at
           WHERE (pq_last_resort_prekeys.key_id, pq_last_resort_prekeys.public_key,
                  pq_last_resort_prekeys.signature)
                 IS DISTINCT FROM (EXCLUDED.key_id, EXCLUDED.public_key, EXCLUDED.signature)""",
        device_id,
        key.key_id,
        key.public_key,
        key.signature,
        now,
    )


async def add_one_time(
    conn: Connection, device_id: uuid.UUID, keys: list[PqPrekey], now: datetime
) -> list[int]:
    """Insert new one-time PQ keys in order; an identical re-upload of an unclaimed one is a
    no-op, and so is any upload of an id already handed out (it is never handed out twice).
    Returns the key ids already held with *other* bytes (the caller refuses the request)."""
    if not keys:
        return []
    ids = [key.key_id for key in keys]
    publics = [key.public_key for key in keys]
    signatures = [key.signature for key in keys]
    conflicts = await conn.fetch(
        """SELECT p.key_id FROM pq_one_time_prekeys p
           JOIN unnest($2::bigint[], $3::bytea[], $4::bytea[]) AS k(key_id, public_key, signature)
               ON k.key_id = p.key_id
           WHERE p.device_id = $1 AND (p.public_key <> k.public_key OR p.signature <> k.signature)""",
        device_id,
        ids,
        publics,
        signatures,
    )
    if conflicts:
        return [row["key_id"] for row in conflicts]
    await conn.execute(
        """INSERT INTO pq_one_time_prekeys (device_id, key_id, public_key, signature, created_at)
           SELECT $1, key_id, public_key, signature, $5
           FROM unnest($2::bigint[], $3::bytea[], $4::bytea[])
               WITH ORDINALITY AS k(key_id, public_key, signature, position)
           WHERE NOT EXISTS (
               SELECT 1 FROM pq_spent_prekey_ids s WHERE s.device_id = $1 AND s.key_id = k.key_id)
           ORDER BY position
           ON CONFLICT (device_id, key_id) DO NOTHING""",
        device_id,
        ids,
        publics,
        signatures,
        now,
    )
    return []


async def remaining_one_time(conn: Connection, device_id: uuid.UUID) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pq_one_time_prekeys WHERE device_id = $1", device_id
    )
    return count


async def forget_device_keys(conn: Connection, device_id: uuid.UUID) -> None:
    """Drop every PQ prekey of the device: signed by a signing key it no longer has, none of them
    would verify at a claimer any more."""
    await conn.execute("DELETE FROM pq_one_time_prekeys WHERE device_id = $1", device_id)
    await conn.execute("DELETE FROM pq_last_resort_prekeys WHERE device_id = $1", device_id)


async def claim(conn: Connection, device_id: uuid.UUID, *, one_time_allowed: bool) -> ClaimedPqPrekey | None:
    """Hand out the oldest one-time PQ key, deleting it and remembering its id (SKIP LOCKED:
    concurrent claimers take the next one instead of waiting for, then losing, the same one);
    without one, or when one-time keys are not `one_time_allowed` (the hourly budget is spent),
    the last-resort key; else None."""
    if one_time_allowed:
        row = await conn.fetchrow(
            """WITH next AS (
                   SELECT key_id FROM pq_one_time_prekeys WHERE device_id = $1
                   ORDER BY upload_seq LIMIT 1 FOR UPDATE SKIP LOCKED),
               taken AS (
                   DELETE FROM pq_one_time_prekeys p USING next
                   WHERE p.device_id = $1 AND p.key_id = next.key_id
                   RETURNING p.key_id, p.public_key, p.signature),
               spent AS (
                   INSERT INTO pq_spent_prekey_ids (device_id, key_id)
                   SELECT $1, key_id FROM taken ON CONFLICT DO NOTHING)
               SELECT key_id, public_key, signature FROM taken""",
            device_id,
        )
        if row is not None:
            return ClaimedPqPrekey(PqPrekey(**dict(row)), last_resort=False)
    row = await conn.fetchrow(
        "SELECT key_id, public_key, signature FROM pq_last_resort_prekeys WHERE device_id = $1", device_id
    )
    return ClaimedPqPrekey(PqPrekey(**dict(row)), last_resort=True) if row else None

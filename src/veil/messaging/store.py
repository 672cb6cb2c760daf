"""SQL for conversations, members, messages, receipts and cursors. No HTTP, no JSON."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from veil.core.db import Connection

MESSAGE_CHANNEL = "veil_messages"
EVENT_CHANNEL = "veil_events"


@dataclass(frozen=True)
class ConversationRecord:
    id: uuid.UUID
    type: str
    epoch: int
    last_seq: int
    encrypted_meta: bytes | None
    created_at: datetime


@dataclass(frozen=True)
class MemberRecord:
    user_id: uuid.UUID
    role: str
    state: str
    joined_after_seq: int


@dataclass(frozen=True)
class MessageRecord:
    conversation_id: uuid.UUID
    seq: int
    message_id: uuid.UUID
    sender_id: uuid.UUID
    sender_device_id: uuid.UUID
    content_type: str
    ciphertext: bytes
    nonce: bytes
    auth_tag: bytes
    parent_id: uuid.UUID | None
    key_epoch: int
    created_at: datetime


@dataclass(frozen=True)
class EventRecord:
    id: int
    epoch: int
    kind: str
    actor_id: uuid.UUID | None
    actor_device_id: uuid.UUID | None
    subject_id: uuid.UUID
    commit: bytes | None
    created_at: datetime


_CONVERSATION = "id, type, epoch, last_seq, encrypted_meta, created_at"
_MESSAGE = (
    "conversation_id, seq, message_id, sender_id, sender_device_id, content_type, ciphertext, nonce, "
    "auth_tag, parent_id, key_epoch, created_at"
)


async def insert_conversation(
    conn: Connection,
    conversation_id: uuid.UUID,
    kind: str,
    now: datetime,
    *,
    direct_pair: str | None = None,
    encrypted_meta: bytes | None = None,
) -> bool:
    """False when a direct conversation for this pair already exists."""
    inserted = await conn.fetchval(
        """INSERT INTO conversations (id, type, direct_pair, encrypted_meta, created_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (direct_pair) DO NOTHING RETURNING id""",
        conversation_id,
        kind,
        direct_pair,
        encrypted_meta,
        now,
    )
    return inserted is not None


async def user_is_active(conn: Connection, user_id: uuid.UUID) -> bool:
    return await conn.fetchval("SELECT 1 FROM users WHERE id = $1 AND status = 'active'", user_id) is not None


async def direct_conversation(conn: Connection, direct_pair: str) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM conversations WHERE direct_pair = $1", direct_pair
    )
    return found


async def conversation(
    conn: Connection, conversation_id: uuid.UUID, *, lock: bool = False
) -> ConversationRecord | None:
    query = f"SELECT {_CONVERSATION} FROM conversations WHERE id = $1"  # noqa: S608 - constant columns
    row = await conn.fetchrow(query + (" FOR UPDATE" if lock else ""), conversation_id)
    return ConversationRecord(**dict(row)) if row else None


async def members(conn: Connection, conversation_id: uuid.UUID) -> list[MemberRecord]:
    rows = await conn.fetch(
        """SELECT user_id, role, state, joined_after_seq FROM members
           WHERE conversation_id = $1 ORDER BY created_at, user_id""",
        conversation_id,
    )
    return [MemberRecord(**dict(row)) for row in rows]


async def membership(conn: Connection, conversation_id: uuid.UUID, user_id: uuid.UUID) -> MemberRecord | None:
    row = await conn.fetchrow(
        """SELECT user_id, role, state, joined_after_seq FROM members
           WHERE conversation_id = $1 AND user_id = $2""",
        conversation_id,
        user_id,
    )
    return MemberRecord(**dict(row)) if row else None


async def add_member(
    conn: Connection,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    role: str,
    state: str,
    joined_after_seq: int,
    invited_by: uuid.UUID | None,
    now: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO members
               (conversation_id, user_id, role, state, joined_after_seq, invited_by, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        conversation_id,
        user_id,
        role,
        state,
        joined_after_seq,
        invited_by,
        now,
    )


async def lock_invitations(conn: Connection, inviter: uuid.UUID, invitee: uuid.UUID) -> None:
    """Serialise invitations from one inviter to one invitee until the transaction ends."""
    await conn.execute(
        """SELECT pg_advisory_xact_lock(
               hashtextextended('invitations:' || $1::uuid::text || ':' || $2::uuid::text, 0))""",
        inviter,
        invitee,
    )


async def pending_invitations(conn: Connection, inviter: uuid.UUID, invitee: uuid.UUID) -> int:
    """Invitations from `inviter` that `invitee` has not answered yet, in any conversation."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM members WHERE user_id = $2 AND invited_by = $1 AND state = 'invited'",
        inviter,
        invitee,
    )
    return count


async def join(conn: Connection, conversation_id: uuid.UUID, user_id: uuid.UUID, after_seq: int) -> None:
    await conn.execute(
        """UPDATE members SET state = 'joined', joined_after_seq = $3
           WHERE conversation_id = $1 AND user_id = $2""",
        conversation_id,
        user_id,
        after_seq,
    )


async def delete_member(conn: Connection, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await conn.execute(
        "DELETE FROM members WHERE conversation_id = $1 AND user_id = $2", conversation_id, user_id
    )
    # Its devices' cursors go with it: nothing of this conversation is replayed to them again.
    await conn.execute(
        """DELETE FROM device_cursors WHERE conversation_id = $1
           AND device_id IN (SELECT id FROM sessions WHERE user_id = $2)""",
        conversation_id,
        user_id,
    )


async def set_role(conn: Connection, conversation_id: uuid.UUID, user_id: uuid.UUID, role: str) -> None:
    await conn.execute(
        "UPDATE members SET role = $3 WHERE conversation_id = $1 AND user_id = $2",
        conversation_id,
        user_id,
        role,
    )


async def bump_epoch(conn: Connection, conversation_id: uuid.UUID) -> int:
    epoch: int = await conn.fetchval(
        "UPDATE conversations SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch", conversation_id
    )
    return epoch


async def delete_conversation(conn: Connection, conversation_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM conversations WHERE id = $1", conversation_id)


async def record_event(
    conn: Connection,
    conversation_id: uuid.UUID,
    kind: str,
    *,
    actor_id: uuid.UUID,
    actor_device_id: uuid.UUID,
    subject_id: uuid.UUID,
    epoch: int,
    commit: bytes | None,
    now: datetime,
) -> None:
    """One membership change. Callers hold the conversation's row lock (or created the row in this
    transaction), so within a conversation the ids increase in commit order: `events_after` can
    page by id without ever skipping an event that commits later."""
    event_id = await conn.fetchval(
        """INSERT INTO membership_events
               (conversation_id, kind, actor_id, actor_device_id, subject_id, epoch, commit, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
        conversation_id,
        kind,
        actor_id,
        actor_device_id,
        subject_id,
        epoch,
        commit,
        now,
    )
    # Ids only; listeners read the event (and the current members) from the database.
    await conn.execute("SELECT pg_notify($1, $2)", EVENT_CHANNEL, f"membership:{event_id}")


async def last_event_id(conn: Connection, conversation_id: uuid.UUID) -> int:
    """The id of the conversation's latest membership event, 0 when it has none (an account purge
    may have deleted them all). Read it under the conversation's row lock: only then is it still
    the latest when the transaction records the next event."""
    latest: int = await conn.fetchval(
        "SELECT COALESCE(max(id), 0) FROM membership_events WHERE conversation_id = $1", conversation_id
    )
    return latest


async def events_after(
    conn: Connection, conversation_id: uuid.UUID, after_id: int, limit: int
) -> list[EventRecord]:
    rows = await conn.fetch(
        """SELECT id, epoch, kind, actor_id, actor_device_id, subject_id, commit, created_at
           FROM membership_events WHERE conversation_id = $1 AND id > $2 ORDER BY id LIMIT $3""",
        conversation_id,
        after_id,
        limit,
    )
    return [EventRecord(**dict(row)) for row in rows]


async def conversations_of(
    conn: Connection, user_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[ConversationRecord]:
    rows = await conn.fetch(
        f"""SELECT {", ".join("c." + c.strip() for c in _CONVERSATION.split(","))}
            FROM members m JOIN conversations c ON c.id = m.conversation_id
            WHERE m.user_id = $1 AND ($2::uuid IS NULL OR c.id > $2)
            ORDER BY c.id LIMIT $3""",  # noqa: S608 - constant columns
        user_id,
        after,
        limit,
    )
    return [ConversationRecord(**dict(row)) for row in rows]


async def message_by_sender(
    conn: Connection, sender_id: uuid.UUID, message_id: uuid.UUID
) -> tuple[int, datetime, bytes, uuid.UUID] | None:
    row = await conn.fetchrow(
        """SELECT seq, created_at, envelope_digest, conversation_id FROM messages
           WHERE sender_id = $1 AND message_id = $2""",
        sender_id,
        message_id,
    )
    return (row["seq"], row["created_at"], row["envelope_digest"], row["conversation_id"]) if row else None


async def messages_after(
    conn: Connection, conversation_id: uuid.UUID, after_seq: int, limit: int
) -> list[MessageRecord]:
    rows = await conn.fetch(
        f"""SELECT {_MESSAGE} FROM messages WHERE conversation_id = $1 AND seq > $2
            ORDER BY seq LIMIT $3""",  # noqa: S608 - constant columns
        conversation_id,
        after_seq,
        limit,
    )
    return [MessageRecord(**dict(row)) for row in rows]


async def messages_at(conn: Connection, keys: list[tuple[uuid.UUID, int]]) -> list[MessageRecord]:
    """The messages stored under these (conversation_id, seq) keys, in one statement; a key with
    no message (it was deleted meanwhile) is left out."""
    rows = await conn.fetch(
        f"""SELECT {_MESSAGE} FROM messages
            WHERE (conversation_id, seq) IN (SELECT * FROM unnest($1::uuid[], $2::bigint[]))""",  # noqa: S608
        [conversation_id for conversation_id, _ in keys],
        [seq for _, seq in keys],
    )
    return [MessageRecord(**dict(row)) for row in rows]


async def messages_before(
    conn: Connection, conversation_id: uuid.UUID, before_seq: int, floor_seq: int, limit: int
) -> list[MessageRecord]:
    rows = await conn.fetch(
        f"""SELECT {_MESSAGE} FROM messages WHERE conversation_id = $1 AND seq < $2 AND seq > $3
            ORDER BY seq DESC LIMIT $4""",  # noqa: S608 - constant columns
        conversation_id,
        before_seq,
        floor_seq,
        limit,
    )
    return [MessageRecord(**dict(row)) for row in rows]


async def raise_receipt(
    conn: Connection, conversation_id: uuid.UUID, user_id: uuid.UUID, kind: str, up_to_seq: int, now: datetime
) -> bool:
    """Move the receipt forward; False if it was already at or past `up_to_seq` (never twice)."""
    moved = await conn.fetchval(
        """INSERT INTO receipts AS r (conversation_id, user_id, type, up_to_seq, updated_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (conversation_id, user_id, type) DO UPDATE
               SET up_to_seq = EXCLUDED.up_to_seq, updated_at = EXCLUDED.updated_at
               WHERE r.up_to_seq < EXCLUDED.up_to_seq
           RETURNING up_to_seq""",
        conversation_id,
        user_id,
        kind,
        up_to_seq,
        now,
    )
    if moved is not None:
        payload = f"receipt:{conversation_id}:{user_id}:{kind}:{up_to_seq}"
        await conn.execute("SELECT pg_notify($1, $2)", EVENT_CHANNEL, payload)
    return moved is not None


@dataclass(frozen=True, order=True)
class Ack:
    """A device acknowledged everything up to `seq` in a conversation (cumulative)."""

    device_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    seq: int


async def advance_cursors(conn: Connection, acks: list[Ack]) -> None:
    """Move devices' cursors forward (never back), only in conversations their user is a joined
    member of and never past the last seq: one statement for any number of devices. Rows go in
    (device, conversation) order, so two processes writing overlapping batches cannot deadlock."""
    rows = sorted(acks)
    await conn.execute(
        """INSERT INTO device_cursors AS d (device_id, conversation_id, acked_seq)
           SELECT a.device_id, c.id, LEAST(a.seq, c.last_seq)
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[])
                WITH ORDINALITY AS a(device_id, conversation_id, user_id, seq, n)
           JOIN conversations c ON c.id = a.conversation_id
           JOIN members m ON m.conversation_id = c.id AND m.user_id = a.user_id AND m.state = 'joined'
           JOIN sessions s ON s.id = a.device_id  -- a device deleted meanwhile acknowledges nothing
           ORDER BY a.n
           ON CONFLICT (device_id, conversation_id) DO UPDATE
               SET acked_seq = GREATEST(d.acked_seq, EXCLUDED.acked_seq)""",
        [a.device_id for a in rows],
        [a.conversation_id for a in rows],
        [a.user_id for a in rows],
        [a.seq for a in rows],
    )


async def messages_for_member(
    conn: Connection, conversation_id: uuid.UUID, user_id: uuid.UUID, after_seq: int, limit: int
) -> list[MessageRecord]:
    """Messages after `after_seq`, but only while `user_id` is a joined member: a socket never
    delivers a conversation its user has just been removed from."""
    rows = await conn.fetch(
        f"""SELECT {_MESSAGE} FROM messages WHERE conversation_id = $1 AND seq > $3
                AND EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2
                            AND state = 'joined' AND joined_after_seq < messages.seq)
            ORDER BY seq LIMIT $4""",  # noqa: S608 - constant columns
        conversation_id,
        user_id,
        after_seq,
        limit,
    )
    return [MessageRecord(**dict(row)) for row in rows]


async def delivery_cursors(
    conn: Connection, user_id: uuid.UUID, device_id: uuid.UUID
) -> dict[uuid.UUID, int]:
    """Where replay starts for each joined conversation of this device: after what it acknowledged,
    and never before the user joined."""
    rows = await conn.fetch(
        """SELECT m.conversation_id, GREATEST(m.joined_after_seq, COALESCE(d.acked_seq, 0)) AS cursor
           FROM members m LEFT JOIN device_cursors d
               ON d.device_id = $2 AND d.conversation_id = m.conversation_id
           WHERE m.user_id = $1 AND m.state = 'joined'""",
        user_id,
        device_id,
    )
    return {row["conversation_id"]: row["cursor"] for row in rows}


@dataclass(frozen=True)
class SendOutcome:
    """What one send statement found: not a member, an earlier message with this id, a stale
    epoch, or the new message's seq."""

    member: bool
    epoch: int | None
    existing: tuple[int, datetime, bytes, uuid.UUID] | None
    seq: int | None


# One statement, one round trip: lock the conversation row (only if the sender is a joined
# member), look for an earlier message with this id, and only when there is none and the epoch
# matches, take the next seq, insert and notify. The unique (sender_id, message_id) constraint
# stays the final guard: a concurrent duplicate that committed after this statement's snapshot
# makes the insert fail, and the caller then reads the winner.
_SEND = f"""
WITH conv AS (
    SELECT c.id, c.epoch FROM conversations c
    WHERE c.id = $1 AND EXISTS (
        SELECT 1 FROM members m WHERE m.conversation_id = c.id AND m.user_id = $2 AND m.state = 'joined')
    FOR UPDATE OF c
), existing AS (
    SELECT seq, created_at, envelope_digest, conversation_id FROM messages
    WHERE sender_id = $2 AND message_id = $3
), bumped AS (
    UPDATE conversations SET last_seq = last_seq + 1
    WHERE id = (SELECT id FROM conv) AND (SELECT epoch FROM conv) = $10
        AND NOT EXISTS (SELECT 1 FROM existing)
    RETURNING last_seq
), inserted AS (
    INSERT INTO messages ({_MESSAGE}, envelope_digest)
    SELECT $1, last_seq, $3, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM bumped
    RETURNING seq
), notified AS (
    SELECT pg_notify('{MESSAGE_CHANNEL}', (SELECT id::text FROM conv) || ':' || seq) FROM inserted
)
SELECT (SELECT count(*) FROM conv) AS member, (SELECT epoch FROM conv) AS epoch,
       e.seq AS existing_seq, e.created_at AS existing_at, e.envelope_digest AS existing_digest,
       e.conversation_id AS existing_conversation,
       (SELECT seq FROM inserted) AS seq, (SELECT count(*) FROM notified) AS notified
FROM (SELECT 1) AS one LEFT JOIN existing e ON true
"""  # noqa: S608 - constant columns and channel


async def send_message(conn: Connection, message: MessageRecord, digest: bytes) -> SendOutcome:
    row = await conn.fetchrow(
        _SEND,
        message.conversation_id,
        message.sender_id,
        message.message_id,
        message.sender_device_id,
        message.content_type,
        message.ciphertext,
        message.nonce,
        message.auth_tag,
        message.parent_id,
        message.key_epoch,
        message.created_at,
        digest,
    )
    assert row is not None
    existing = None
    if row["existing_seq"] is not None:
        existing = (
            row["existing_seq"],
            row["existing_at"],
            row["existing_digest"],
            row["existing_conversation"],
        )
    return SendOutcome(bool(row["member"]), row["epoch"], existing, row["seq"])

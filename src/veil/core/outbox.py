"""The mail outbox: how a service sends email without waiting for the mail server.

A caller queues a mail in the transaction that makes the change the mail is about::

    async with db.transaction("password_reset") as conn:
        await store.insert_reset(conn, ...)
        await outbox.enqueue(conn, email, "Your Veil code", f"Your code is {code}.\\n")

The row and the change commit together: a rolled-back request sends nothing, a committed one is
never lost, and no transaction ever waits on SMTP. A NOTIFY on `CHANNEL`, delivered at commit,
wakes the delivery workers (`veil.core.mail_delivery`) of every process that sends mail; one of
them claims the row, sends it after that commit and deletes it, or retries with backoff.

So queuing never fails because the mail server is down: callers answer as if the mail was sent
(202), and it goes out when the server is back. Delivery is at least once: a worker that dies after
the server took a mail but before deleting the row sends it again once its lease is over.

Rows hold addresses and one-time codes: they live only until sent, or until the last attempt
failed; the erasure purge deletes those still queued for the erased address (`purge_recipient`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from veil.core.db import Connection

CHANNEL = "veil_mail_outbox"


async def enqueue(conn: Connection, to: str, subject: str, body: str) -> None:
    """Queue one plain-text mail to `to`, to be sent once the caller's transaction commits.

    Call it inside the transaction of the change the mail is about (`db.transaction(...)`): if
    that transaction rolls back, the mail is never sent. It never talks to the mail server and so
    never raises because the server is down; a request that queued its mail has done its part.
    Bodies may carry one-time codes (the row is deleted as soon as the mail is sent) but nothing
    that must not reach the mailbox: no token, key or message content.
    """
    await enqueue_many(conn, [to], subject, body)


async def enqueue_many(conn: Connection, recipients: Sequence[str], subject: str, body: str) -> None:
    """Queue the same mail to each of `recipients`, one message per address (nobody sees the
    others' addresses), in one statement; otherwise as `enqueue`."""
    if not recipients:
        return
    # One NOTIFY per statement is enough: a woken worker drains everything that is due.
    await conn.execute(
        """WITH queued AS (
                INSERT INTO mail_outbox (recipient, subject, body, created_at, next_attempt_at)
                SELECT r, $2, $3, now(), now() FROM unnest($1::text[]) AS r
                RETURNING 1
            )
            SELECT pg_notify($4, '') WHERE EXISTS (SELECT 1 FROM queued)""",
        list(recipients),
        subject,
        body,
        CHANNEL,
    )


async def purge_recipient(conn: Connection, address: str) -> int:
    """Drop every mail still queued for `address` (erasure); how many there were."""
    status = await conn.execute("DELETE FROM mail_outbox WHERE lower(recipient) = lower($1)", address)
    return int(status.split()[-1])


# What the delivery workers use. Times come from the database clock, the one `enqueue` stamps
# rows with, so processes whose clocks differ still agree on what is due.


@dataclass(frozen=True)
class QueuedMail:
    id: int
    recipient: str
    subject: str
    body: str
    # Including the one just claimed.
    attempts: int


async def claim(conn: Connection, limit: int, lease: timedelta) -> list[QueuedMail]:
    """Take up to `limit` due mails, oldest first, for `lease`: their next attempt moves past the
    lease, so another worker takes them over only if this one has not settled them by then.
    SKIP LOCKED lets workers in several processes claim at once without waiting on each other."""
    rows = await conn.fetch(
        """UPDATE mail_outbox m SET attempts = m.attempts + 1, next_attempt_at = clock_timestamp() + $2
           FROM (SELECT id FROM mail_outbox WHERE next_attempt_at <= clock_timestamp()
                 ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) due
           WHERE m.id = due.id
           RETURNING m.id, m.recipient, m.subject, m.body, m.attempts""",
        limit,
        lease,
    )
    return sorted((QueuedMail(**dict(row)) for row in rows), key=lambda mail: mail.id)


async def delete(conn: Connection, ids: Sequence[int]) -> None:
    """Sent, or given up: the row, its address and its code go at once."""
    await conn.execute("DELETE FROM mail_outbox WHERE id = ANY($1::bigint[])", list(ids))


async def retry_later(conn: Connection, mail_id: int, delay: timedelta, error_kind: str) -> None:
    await conn.execute(
        "UPDATE mail_outbox SET next_attempt_at = clock_timestamp() + $2, last_error = $3 WHERE id = $1",
        mail_id,
        delay,
        error_kind[:64],
    )


@dataclass(frozen=True)
class Depth:
    queued: int
    # Age of the oldest queued mail, 0 when there is none.
    oldest_seconds: float


async def depth(conn: Connection) -> Depth:
    row = await conn.fetchrow(
        """SELECT count(*) AS queued,
                  coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS oldest
           FROM mail_outbox"""
    )
    assert row is not None
    return Depth(int(row["queued"]), max(0.0, float(row["oldest"])))

"""The mail outbox against a real PostgreSQL: mail queued in a transaction goes out only if that
transaction commits, a NOTIFY wakes the worker at once, failures are retried with backoff and
then dropped without logging the address, and workers in several processes share the queue
without sending a mail twice. The SMTP side is a recording fake; the e2e tests use real servers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from structlog.testing import capture_logs

from veil.account.purge import purge_due_accounts
from veil.core import outbox
from veil.core.db import Database
from veil.core.listener import Notifications
from veil.core.mail_delivery import MailDelivery, RetryPolicy
from veil.core.metrics import Metrics
from veil.core.problems import BackendUnavailable

BODY = "Your code is 123456.\n"


class Recorder:
    """Takes every mail, optionally refusing the first `failures` attempts per address."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.sent: list[str] = []
        self.tried: dict[str, list[float]] = {}
        self._failures = failures
        self._delay = delay

    async def send(self, to: str, subject: str, body: str) -> None:
        self.tried.setdefault(to, []).append(time.monotonic())
        await asyncio.sleep(self._delay)
        if len(self.tried[to]) <= self._failures:
            raise BackendUnavailable("mail server unavailable") from ConnectionRefusedError()
        self.sent.append(to)


def mails(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value("veil_mail_outbox_mails_total", {"outcome": outcome})


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, max_size=4, timeout=5, metrics=Metrics())
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def delivery(
    db: Database, sender: Recorder, notifications: Notifications, policy: RetryPolicy | None = None
) -> MailDelivery:
    return MailDelivery(db, sender, Metrics(), notifications, policy or RetryPolicy(5, 0.2, 0.4, jitter=0))


async def queue(db: Database, *to: str) -> None:
    async with db.transaction("test_enqueue") as conn:
        for address in to:
            await outbox.enqueue(conn, address, "Your code", BODY)


async def drain(worker: MailDelivery, db: Database, timeout: float = 10) -> None:
    """Run rounds until the outbox is empty."""
    deadline = time.monotonic() + timeout
    while True:
        await worker.deliver_due()
        async with db.connection() as conn:
            if not await conn.fetchval("SELECT count(*) FROM mail_outbox"):
                return
        assert time.monotonic() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.05)


async def test_mail_of_a_rolled_back_transaction_is_never_sent(
    database: Database, notifications: Notifications, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    sender = Recorder()

    async def change_that_fails() -> None:
        async with database.transaction("test_rollback") as conn:
            await outbox.enqueue(conn, "rolled-back@example.org", "Your code", BODY)
            raise RuntimeError("the change failed after its mail was queued")

    with pytest.raises(RuntimeError):
        await change_that_fails()
    await queue(database, "committed@example.org")
    await drain(delivery(database, sender, notifications), database)
    assert sender.sent == ["committed@example.org"]
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 0


async def test_a_notify_wakes_the_worker_at_once(database: Database, notifications: Notifications) -> None:
    sender = Recorder()
    # Without the NOTIFY, the next look would be 5 s away.
    worker = delivery(database, sender, notifications, RetryPolicy(5, 60, 60, jitter=0))
    await worker.start()
    try:
        await asyncio.sleep(0.5)  # the listener is up and the first (empty) round is over
        queued = time.monotonic()
        await queue(database, "woken@example.org")
        while not sender.sent:
            assert time.monotonic() - queued < 2, "the worker was not woken by the NOTIFY"
            await asyncio.sleep(0.02)
    finally:
        await worker.close()


async def test_a_failed_attempt_is_retried_after_a_backoff(
    database: Database, notifications: Notifications, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    sender = Recorder(failures=2)
    metrics = Metrics()
    worker = MailDelivery(database, sender, metrics, notifications, RetryPolicy(5, 0.3, 0.6, jitter=0))
    await queue(database, "flaky@example.org")
    assert await worker.deliver_due()
    row = await db.fetchrow(
        "SELECT attempts, last_error, next_attempt_at - clock_timestamp() AS wait FROM mail_outbox"
    )
    assert row is not None
    # Only the kind of the error is kept: a server's reply text can quote the address.
    assert (row["attempts"], row["last_error"]) == (1, "ConnectionRefusedError")
    assert 0.1 < row["wait"].total_seconds() <= 0.3
    assert not await worker.deliver_due()  # not due yet: nothing is tried
    assert len(sender.tried["flaky@example.org"]) == 1
    await drain(worker, database)
    assert sender.sent == ["flaky@example.org"]
    first, second, third = sender.tried["flaky@example.org"]
    assert second - first >= 0.3  # the first delay
    assert third - second >= 0.6  # doubled
    assert mails(metrics, "retried") == 2
    assert mails(metrics, "sent") == 1
    assert mails(metrics, "failed") == 0


async def test_after_the_last_attempt_the_mail_is_dropped_and_logged_without_address_or_body(
    database: Database, notifications: Notifications, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    sender = Recorder(failures=100)
    metrics = Metrics()
    worker = MailDelivery(database, sender, metrics, notifications, RetryPolicy(3, 0.1, 0.1, jitter=0))
    await queue(database, "unlucky@example.org")
    with capture_logs() as logs:
        await drain(worker, database)
    assert len(sender.tried["unlucky@example.org"]) == 3
    assert sender.sent == []
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 0
    [dropped] = [entry for entry in logs if entry["event"] == "mail_dropped"]
    assert (dropped["attempts"], dropped["error"]) == (3, "ConnectionRefusedError")
    for entry in logs:
        assert "unlucky" not in repr(entry)
        assert "123456" not in repr(entry)
    assert mails(metrics, "retried") == 2
    assert mails(metrics, "failed") == 1


async def test_a_claimed_mail_is_leased_until_its_worker_settles_it_or_the_lease_ends(
    database: Database,
) -> None:
    await queue(database, "leased@example.org")
    async with database.transaction("test_claim") as conn:
        [mail] = await outbox.claim(conn, 10, timedelta(seconds=0.5))
    assert mail.attempts == 1
    async with database.transaction("test_claim") as conn:
        assert await outbox.claim(conn, 10, timedelta(seconds=0.5)) == []  # another worker: not yet
    await asyncio.sleep(0.6)  # the first worker died: its lease runs out
    async with database.transaction("test_claim") as conn:
        [again] = await outbox.claim(conn, 10, timedelta(seconds=0.5))
    assert (again.id, again.attempts) == (mail.id, 2)


async def test_workers_in_several_processes_share_the_queue_and_send_each_mail_once(
    database: Database, database_url: str, notifications: Notifications
) -> None:
    other = Database(database_url, max_size=4, timeout=5, metrics=Metrics())
    await other.open()
    try:
        first, second = Recorder(delay=0.05), Recorder(delay=0.05)
        addresses = [f"user-{n}@example.org" for n in range(40)]
        await queue(database, *addresses)
        await asyncio.gather(
            drain(delivery(database, first, notifications), database),
            drain(delivery(other, second, notifications), other),
        )
    finally:
        await other.close()
    assert sorted(first.sent + second.sent) == sorted(addresses)  # each once, none lost
    assert first.sent and second.sent  # both took part


async def test_queued_mail_for_an_erased_address_is_purged(
    database: Database, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    await queue(database, "Erased@Example.org", "kept@example.org")
    async with database.transaction("test_purge") as conn:
        assert await outbox.purge_recipient(conn, "erased@example.org") == 1
    assert [r["recipient"] for r in await db.fetch("SELECT recipient FROM mail_outbox")] == [
        "kept@example.org"
    ]


async def test_one_notice_to_many_is_one_mail_each(
    database: Database, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    async with database.transaction("test_many") as conn:
        await outbox.enqueue_many(conn, ["a@example.org", "b@example.org"], "Notice", "Body\n")
        await outbox.enqueue_many(conn, [], "Notice", "Body\n")
    rows = await db.fetch("SELECT recipient FROM mail_outbox ORDER BY id")
    assert [r["recipient"] for r in rows] == ["a@example.org", "b@example.org"]


async def test_the_erasure_purge_drops_mail_still_queued_for_the_address(
    database: Database, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    """A notice queued during the grace window (the mail server down since) must not outlive the
    account it was for."""
    now = datetime.now(UTC)
    await db.execute(
        """INSERT INTO users (id, email, password_hash, status, created_at, updated_at, disabled_at,
                              purge_after)
           VALUES ($1, 'erased@example.org', 'x', 'disabled', $2, $2, $2, $2)""",
        uuid.uuid4(),
        now - timedelta(days=31),
    )
    await queue(database, "erased@example.org", "someone-else@example.org")
    assert await purge_due_accounts(database, now) == 1
    assert [r["recipient"] for r in await db.fetch("SELECT recipient FROM mail_outbox")] == [
        "someone-else@example.org"
    ]


def test_retry_delays_double_up_to_the_cap_and_are_spread_at_random() -> None:
    exact = RetryPolicy(8, 30, 1800, jitter=0)
    assert [exact.delay(n).total_seconds() for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1800, 1800]
    spread = RetryPolicy(8, 30, 1800)
    delays = {spread.delay(1).total_seconds() for _ in range(50)}
    assert all(15 <= d <= 45 for d in delays)
    assert len(delays) > 40  # not one due time every worker would meet in step

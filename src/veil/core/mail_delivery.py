"""Draining the mail outbox (`veil.core.outbox`): one delivery worker in every process that sends mail.

A round claims up to `batch` due mails (SKIP LOCKED: workers in several processes share the queue
without waiting on each other) in a short transaction that leases them, commits, and only then
talks to the mail server, every mail of the batch at once. A mail the server took is deleted at
once; one it refused, or that timed out, is retried after a backoff that doubles from
`first_delay` up to `max_delay` (randomised, so that no worker keeps a mail to itself); after
`attempts` attempts it is dropped and the failure logged with the row's id and the kind of error
only, never the address or the body. A worker is woken by the NOTIFY `enqueue` sends at commit,
and otherwise looks for due retries every few seconds.

Delivery is at least once: if the process dies, or the database goes away, between the server
taking a mail and the row's deletion, the lease runs out and the mail is sent again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from veil.core import outbox
from veil.core.db import Database
from veil.core.listener import Notifications
from veil.core.logging import get_logger
from veil.core.metrics import Metrics
from veil.core.outbox import QueuedMail
from veil.core.problems import BackendUnavailable
from veil.core.resources import Resources
from veil.core.web.app import ServiceModule
from veil.core.worker import Worker

log = get_logger(__name__)

# Longest one mail may take, connection to last reply; the mailer's own timeout applies to each
# step of the conversation, so a server that answers slowly at every step is cut off here.
_SEND_DEADLINE = 30.0
# Claimed mails are not due for anyone else for this long: more than a batch can take to send
# and settle, so a live worker is never overtaken; the delay after which a dead one's are resent.
_LEASE = timedelta(seconds=2 * _SEND_DEADLINE + 60)
# How often an idle worker looks for due retries when no NOTIFY wakes it, at most.
_IDLE_SECONDS = 5.0


class Sender(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    first_delay: float
    max_delay: float
    # Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]. Without it, the worker
    # that failed a mail wakes from its idle wait just as that mail is due again and retries it
    # itself every time: one process whose mail server is unreachable would keep its failures
    # from the processes whose server works. Random due times give every worker a fair chance.
    jitter: float = 0.5

    def delay(self, attempts_made: int) -> timedelta:
        """The wait after the `attempts_made`-th failed attempt."""
        base = min(self.max_delay, self.first_delay * 2 ** (attempts_made - 1))
        factor = random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 (timing, not a secret)
        return timedelta(seconds=base * factor)


class MailDelivery:
    def __init__(
        self,
        db: Database,
        sender: Sender,
        metrics: Metrics,
        notifications: Notifications,
        policy: RetryPolicy,
        *,
        batch: int = 10,
    ) -> None:
        self._db = db
        self._sender = sender
        self._metrics = metrics
        self._policy = policy
        self._batch = batch
        idle = max(0.05, min(_IDLE_SECONDS, policy.first_delay))
        self._worker = Worker("mail-delivery", self.deliver_due, idle)
        self._notifications = notifications

    async def start(self) -> None:
        await self._notifications.subscribe(
            [outbox.CHANNEL],
            lambda _channel, _payload: self._worker.wake(),
            # Mail queued while the listener was down woke nobody: look now.
            on_up=self._worker.wake,
        )
        self._worker.start()

    async def close(self) -> None:
        await self._worker.close()

    async def deliver_due(self) -> bool:
        """One round: send what is due; False if nothing was."""
        async with self._db.transaction("mail_outbox_claim") as conn:
            claimed = await outbox.claim(conn, self._batch, _LEASE)
            seen = await outbox.depth(conn)
        self._metrics.mail_queued.set(seen.queued)
        self._metrics.mail_oldest.set(seen.oldest_seconds)
        if not claimed:
            return False
        errors = await asyncio.gather(*(self._attempt(mail) for mail in claimed))
        failed = [(mail, error) for mail, error in zip(claimed, errors, strict=True) if error is not None]
        done = [mail.id for mail, error in zip(claimed, errors, strict=True) if error is None]
        retried = [(mail, error) for mail, error in failed if mail.attempts < self._policy.attempts]
        dropped = [(mail, error) for mail, error in failed if mail.attempts >= self._policy.attempts]
        await self._settle(done + [mail.id for mail, _ in dropped], retried)
        self._metrics.mail.labels("sent").inc(len(done))
        self._metrics.mail.labels("retried").inc(len(retried))
        self._metrics.mail.labels("failed").inc(len(dropped))
        for mail, error in dropped:
            log.error("mail_dropped", mail_id=mail.id, attempts=mail.attempts, error=error)
        if retried:
            log.warning("mail_deferred", count=len(retried), errors=sorted({error for _, error in retried}))
        return True

    async def _attempt(self, mail: QueuedMail) -> str | None:
        """Hand one mail to the server; None if it took it, else the kind of failure."""
        try:
            async with asyncio.timeout(_SEND_DEADLINE):
                await self._sender.send(mail.recipient, mail.subject, mail.body)
        except BackendUnavailable as exc:
            return type(exc.__cause__ or exc).__name__
        except Exception as exc:  # one mail's failure is that mail's, retried within its bound
            return type(exc).__name__
        return None

    async def _settle(self, remove: Sequence[int], retried: Sequence[tuple[QueuedMail, str]]) -> None:
        async with self._db.transaction("mail_outbox_settle") as conn:
            await outbox.delete(conn, remove)
            for mail, error in retried:
                await outbox.retry_later(conn, mail.id, self._policy.delay(mail.attempts), error)


def _build(resources: Resources) -> MailDelivery:
    settings = resources.settings
    return MailDelivery(
        resources.db,
        resources.mailer,
        resources.metrics,
        resources.notifications,
        RetryPolicy(
            settings.mail_attempts, settings.mail_retry_first_seconds, settings.mail_retry_max_seconds
        ),
    )


# Served by every process whose services send mail (auth, account); any number of them may.
MODULE = ServiceModule("mail_delivery", [], build=_build)

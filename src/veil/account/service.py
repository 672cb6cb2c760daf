"""Data-subject rights: every request is confirmed by a code sent by email before it takes effect.

A code is six random digits, stored only as SHA-256 over (request id || code), valid for a short
time, for a few attempts, once. Confirmation runs in one transaction that holds the request row:
the code check, the effect (new email, erasure, export archive) and the consumption of the code
commit together or not at all, so a failure (the store down while the archive uploads) leaves the
code usable. Wrong codes are counted in a transaction of their own, which commits.

Mail (codes, the notice to the old address after an email change) is queued in the mail outbox in
the same transaction as the change it is about (`veil.core.outbox`) and sent after the commit: a
slow or unreachable mail server neither holds a transaction nor refuses a request; the mail goes
out when the server is back.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from veil.account import store
from veil.account.exports import ExportBuilder
from veil.account.store import AccountRecord, RequestRecord
from veil.auth.policy import normalize_email
from veil.core import outbox
from veil.core.blobstore import BlobStore
from veil.core.clock import Clock
from veil.core.db import Connection, Database
from veil.core.listener import Notifications
from veil.core.logging import get_logger
from veil.core.problems import Problem, conflict, forbidden, not_found, too_many_requests
from veil.core.security.authn import Principal
from veil.core.security.codes import code_hash, code_matches, new_code
from veil.core.security.passwords import Overloaded, Passwords
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key
from veil.core.security.sessions import SessionGuard, notify_revoked

log = get_logger("veil.security")

_PURPOSES = {
    "export": "a copy of your data",
    "erasure": "the deletion of your account",
    "email_change": "this address as your new Veil login",
}


@dataclass(frozen=True)
class AccountLimits:
    code_ttl: timedelta
    max_attempts: int
    erasure_grace: timedelta
    # One download URL lives `export_url_ttl` seconds (at most 300); the archive it points at lives
    # `export_archive_ttl`, and each status request presigns a fresh URL until then.
    export_url_ttl: int
    export_archive_ttl: int
    # How long a confirmation waits for its export before answering "still building".
    export_wait: float
    requests: Rate


# A queued export nobody built by then is given up (and swept).
_EXPORT_DEADLINE = timedelta(hours=1)


@dataclass(frozen=True)
class Confirmation:
    type: str
    download_url: str | None = None
    expires_at: datetime | None = None
    purge_after: datetime | None = None
    # An email change: the new login address.
    email: str | None = None
    # An export that is still being built: fetch it later with `export_status`.
    building: bool = False


@dataclass(frozen=True)
class RequestStatus:
    request: RequestRecord
    export: Confirmation | None


def _wrong_code(detail: str) -> Problem:
    return Problem(400, detail, slug="invalid-code", title="Invalid code")


class AccountService:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        passwords: Passwords,
        limiter: RateLimiter,
        sessions: SessionGuard,
        clock: Clock,
        limits: AccountLimits,
        notifications: Notifications,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._passwords = passwords
        self._limiter = limiter
        self._sessions = sessions
        self._clock = clock
        self._limits = limits
        self._exports = ExportBuilder(
            db, blobs, clock, timedelta(seconds=limits.export_archive_ttl), notifications
        )

    async def start(self) -> None:
        await self._exports.start()

    async def close(self) -> None:
        await self._exports.close()

    async def account(self, principal: Principal) -> AccountRecord:
        async with self._db.connection() as conn:
            found = await store.account(conn, principal.user_id)
        if found is None:
            raise not_found("No such account.")
        return found

    async def request(
        self, principal: Principal, kind: str, *, password: str | None = None, new_email: str | None = None
    ) -> uuid.UUID:
        """Record a request and email its code (to the new address for an email change)."""
        now = self._clock.now()
        verdict = await self._limiter.hit(
            limiter_key("account-requests", str(principal.user_id)), self._limits.requests, now.timestamp()
        )
        if not verdict.allowed:
            raise too_many_requests(verdict.retry_after_seconds)
        account = await self.account(principal)
        if password is not None and not await self._verify(account.password_hash, password):
            log.warning("security_event", kind="account_request_wrong_password", user_id=str(account.id))
            raise forbidden("The password is wrong.")
        recipient = normalize_email(new_email) if new_email is not None else account.email
        request_id = uuid.uuid4()
        code = new_code()
        request = RequestRecord(
            id=request_id,
            user_id=account.id,
            type=kind,
            new_email=recipient if kind == "email_change" else None,
            code_hash=code_hash(request_id, code),
            attempts=0,
            created_at=now,
            expires_at=now + self._limits.code_ttl,
            confirmed_at=None,
        )
        minutes = int(self._limits.code_ttl.total_seconds() // 60)
        async with self._db.transaction("account_request") as conn:
            await store.insert_request(conn, request)
            # Sent after the commit: a request is never left without its code, nor a code without
            # its request, and the answer does not wait for the mail server.
            # No oracle: whether the new address is taken shows only at confirmation (409), which
            # needs the code mailed to that address (ADR 0015).
            await outbox.enqueue(
                conn,
                recipient,
                "Your Veil confirmation code",
                f"Your code to confirm {_PURPOSES[kind]} is {code}.\n"
                f"It expires in {minutes} minutes and works once.\n\n"
                "If you did not ask for this, ignore this message and consider changing your password.\n",
            )
        log.info("security_event", kind="account_request", type=kind, user_id=str(account.id))
        return request_id

    async def confirm(self, principal: Principal, request_id: uuid.UUID, code: str) -> Confirmation:
        now = self._clock.now()
        wrong: str | None = None
        result: Confirmation | None = None
        ended: list[uuid.UUID] = []
        async with self._db.transaction("account_confirm") as conn:
            request = await store.lock_request(conn, request_id, principal.user_id)
            if request is None:
                raise not_found("No such request.")
            if request.confirmed_at is not None:
                raise _wrong_code("This request was already confirmed; its code cannot be used again.")
            if request.expires_at <= now:
                raise _wrong_code("The code has expired; make a new request.")
            if request.attempts >= self._limits.max_attempts:
                raise _wrong_code("Too many wrong codes; make a new request.")
            if not code_matches(request.code_hash, request.id, code):
                await store.count_attempt(conn, request.id)
                left = self._limits.max_attempts - request.attempts - 1
                wrong = f"The code is wrong; {left} attempts left."
            else:
                account = await store.account(conn, principal.user_id)
                if account is None:
                    raise not_found("No such account.")
                result, ended = await self._apply(conn, request, account, now)
                await store.mark_confirmed(conn, request.id, now)
                if request.type == "email_change":
                    # Told in the same commit as the change: never a change the old address misses.
                    await outbox.enqueue(
                        conn,
                        account.email,
                        "Your Veil login address was changed",
                        "The email address you use to sign in to Veil was changed to another address.\n"
                        "If this was not you, contact support at once.\n",
                    )
        if wrong is not None or result is None:  # raised after the commit, so the attempt counts
            raise _wrong_code(wrong or "The code is wrong.")
        self._sessions.revoked(ended)
        user = str(principal.user_id)
        log.info("security_event", kind="account_request_confirmed", type=result.type, user_id=user)
        if result.type == "export":
            return await self._wait_for_export(request_id)
        return result

    async def _apply(
        self, conn: Connection, request: RequestRecord, account: AccountRecord, now: datetime
    ) -> tuple[Confirmation, list[uuid.UUID]]:
        """Carry out a confirmed request: the answer, and the sessions it ended (an erasure's)."""
        if request.type == "email_change":
            assert request.new_email is not None
            try:
                await store.change_email(conn, account.id, request.new_email, now)
            except store.EmailTaken:
                raise conflict("An account with this email already exists.") from None
            return Confirmation("email_change", email=request.new_email), []
        if request.type == "erasure":
            purge_after = now + self._limits.erasure_grace
            ended = await store.disable_for_erasure(conn, account.id, now, purge_after)
            await notify_revoked(conn, ended)  # open sockets close within seconds
            return Confirmation("erasure", purge_after=purge_after), ended
        await store.queue_export(
            conn, secrets.token_urlsafe(32), account.id, request.id, now, now + _EXPORT_DEADLINE
        )
        return Confirmation("export", building=True), []

    async def status(self, principal: Principal, request_id: uuid.UUID) -> RequestStatus:
        """A request as its owner sees it; for an export, where to download it once built."""
        async with self._db.connection() as conn:
            request = await store.request_of(conn, request_id, principal.user_id)
            job = await store.export_of_request(conn, request_id) if request else None
        if request is None:
            raise not_found("No such request.")
        return RequestStatus(request, self._export_view(job) if job else None)

    def _export_view(self, job: store.ExportJob) -> Confirmation:
        if job.state != "ready":
            return Confirmation("export", building=True)
        now = self._clock.now()
        remaining = int((job.expires_at - now).total_seconds())
        if remaining <= 0:
            raise not_found("The export has expired; make a new request.")
        # The URL never outlives the archive, nor its own short lifetime.
        ttl = min(remaining, self._limits.export_url_ttl)
        return Confirmation(
            "export", self._blobs.presign_get(job.object_key, ttl), now + timedelta(seconds=ttl)
        )

    async def _wait_for_export(self, request_id: uuid.UUID) -> Confirmation:
        """The export if a builder finishes it within `export_wait`, else "still building"."""
        deadline = asyncio.get_running_loop().time() + self._limits.export_wait
        while True:
            async with self._db.connection() as conn:
                job = await store.export_of_request(conn, request_id)
            if job is not None and job.state == "ready":
                return self._export_view(job)
            if asyncio.get_running_loop().time() >= deadline:
                return Confirmation("export", building=True)
            await asyncio.sleep(0.05)

    async def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return await self._passwords.verify(stored_hash, password)
        except Overloaded:
            raise Problem(503, "Too many password checks are in progress; retry shortly.") from None

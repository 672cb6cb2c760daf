"""Changing the password of a signed-in account.

The caller proves again that they know the current password: an access token alone (perhaps
stolen from a device) must not be enough to take over the account. Every attempt, right or wrong,
takes a slot of a per-user budget *before* the Argon2 check, so concurrent guesses cannot exceed
it and a token holder cannot guess at the speed of the hash. A wrong password is 403.

On success, one transaction stores the new hash (only if the old one is still in place, so two
concurrent changes cannot both win), ends every other session of the account (their devices'
keys and queued device messages go with them, and their sockets close), drops a pending password
reset (a code mailed before must not undo the change) and queues a notice to the account's
address. The caller's own session stays signed in.
"""

from __future__ import annotations

from veil.account import store
from veil.auth import recovery_store
from veil.auth.recovery import check_new_password_field
from veil.core import outbox
from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.logging import get_logger
from veil.core.problems import Problem, forbidden, not_found, too_many_requests, unavailable
from veil.core.security.authn import Principal
from veil.core.security.passwords import Overloaded, Passwords
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key
from veil.core.security.sessions import SessionGuard, notify_revoked

log = get_logger("veil.security")

WRONG_PASSWORD = "The current password is wrong."  # noqa: S105 - a message, not a password


def password_change_key(user_id: object) -> str:
    return limiter_key("password-change", str(user_id))


class PasswordChange:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        limiter: RateLimiter,
        sessions: SessionGuard,
        clock: Clock,
        attempts: Rate,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._limiter = limiter
        self._sessions = sessions
        self._clock = clock
        self._attempts = attempts

    async def change(self, principal: Principal, current_password: str, new_password: str) -> None:
        check_new_password_field(new_password, "new_password")
        now = self._clock.now()
        verdict = await self._limiter.hit(
            password_change_key(principal.user_id), self._attempts, now.timestamp()
        )
        if not verdict.allowed:
            log.warning("security_event", kind="rate_limited", scope="password_change")
            raise too_many_requests(verdict.retry_after_seconds)
        async with self._db.connection() as conn:
            account = await store.account(conn, principal.user_id)
        if account is None:
            raise not_found("No such account.")
        if not await self._verify(account.password_hash, current_password):
            log.warning("security_event", kind="password_change_wrong_password", user_id=str(account.id))
            raise forbidden(WRONG_PASSWORD)
        new_hash = await self._hash(new_password)
        async with self._db.transaction("account_password_change") as conn:
            if not await store.replace_password_hash(conn, account.id, account.password_hash, new_hash, now):
                raise forbidden(WRONG_PASSWORD)  # changed meanwhile: what was checked is no longer it
            ended = await store.end_other_sessions(conn, account.id, principal.session_id, now)
            await notify_revoked(conn, ended)  # their open sockets close within seconds
            await recovery_store.delete_resets(conn, account.id)
            await outbox.enqueue(
                conn,
                account.email,
                "Your Veil password was changed",
                "The password of your Veil account was changed, and every other session was signed\n"
                "out.\n"
                "If this was not you, reset your password at once with `veil-client reset-password`\n"
                "(a code is sent to this address) and contact support.\n",
            )
        self._sessions.revoked(ended)
        log.info(
            "security_event", kind="password_changed", user_id=str(account.id), sessions_ended=len(ended)
        )

    async def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return await self._passwords.verify(stored_hash, password)
        except Overloaded:
            raise _busy() from None

    async def _hash(self, password: str) -> str:
        try:
            return await self._passwords.hash(password)
        except Overloaded:
            raise _busy() from None


def _busy() -> Problem:
    return unavailable("Too many password checks are in progress; retry shortly.")

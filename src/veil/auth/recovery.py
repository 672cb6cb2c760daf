"""Password reset by email, for someone who cannot sign in.

`request` mails a six-digit code to the account's address, if there is an active account with it;
whether there is one never shows: the answer is the same either way, and so, nearly, is the work
before it (a rate-limit hit and one transaction; a known address adds a row and a queued mail to
that transaction, never a wait on the mail server). The code is stored only as SHA-256 over
(reset id || code), with a fresh id per request. Reset mails are limited per address (known or
not), so nobody can bomb a mailbox; a request over that budget gets the same 202 and sends
nothing (a 429 would let anyone who spends the budget of someone else's address lock its owner
out of their own reset). For the same reason a new request does not void older codes: an account
keeps its newest few pending resets (LIVE_RESETS_PER_ACCOUNT), and the right code of any of them
works, so requests made by a third party never stop the owner's code.

`confirm` takes the code and the new password. A wrong, expired, used or dropped code, an unknown
address and an exhausted code are one and the same 400, so nothing is learnt from it. A wrong code
counts an attempt against every pending reset of the account, so several live codes do not give
a guesser more tries. The new password is hashed before the code is looked at, so a right and a
wrong code cost the same. One transaction holding the account's reset rows then sets the new hash,
deletes every pending reset (single use), ends every session of the account (their devices go
with them: a reset never hands anyone the old keys) and forgets the account's known-device tokens
(a device that signed in with the old password is known no more); the old password stops working
at commit. After the commit the failed-login budgets of the account and of the client's address
are cleared (the limiter may live outside the database). Wrong codes are counted in a transaction
that commits, before the 400 is raised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from veil.auth import lockout, signup_store
from veil.auth import recovery_store as store
from veil.auth.policy import check_new_password, normalize_email
from veil.auth.store import update_password_hash
from veil.core import outbox
from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.logging import get_logger
from veil.core.problems import FieldError, Problem, unavailable, validation_failed
from veil.core.security.codes import code_hash, code_matches, new_code
from veil.core.security.passwords import Overloaded, Passwords
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key
from veil.core.security.sessions import SessionGuard, notify_revoked

log = get_logger("veil.security")

# One answer for every way a confirmation can fail: nothing to tell an unknown address from a
# wrong code, or a used code from an expired one.
INVALID_RESET = "The code is wrong, expired or already used; ask for a new one."

# Pending resets an account keeps; a further request drops the oldest. As many as the default
# per-address budget mails in an hour, so the codes a third party has mailed cannot push out the
# owner's own before the budget stops them.
LIVE_RESETS_PER_ACCOUNT = 5


def login_failure_keys(email: str, ip: str) -> list[str]:
    """The failed-login budgets (veil.auth.lockout) a reset clears: the account's, and the one of
    the address the reset came from. Its owner has just proved they hold the mailbox."""
    return [lockout.account_key(email), lockout.address_key(email, ip)]


@dataclass(frozen=True)
class RecoveryLimits:
    code_ttl: timedelta
    max_attempts: int
    # Reset mails per address, whether or not an account has it.
    requests_per_address: Rate


def invalid_reset() -> Problem:
    return Problem(400, INVALID_RESET, slug="invalid-code", title="Invalid code")


def check_new_password_field(password: str, field: str) -> None:
    """`check_new_password`, with the errors placed on the request's own field name."""
    try:
        check_new_password(password)
    except Problem as problem:
        errors = [FieldError((field,), error.msg) for error in problem.errors or []]
        raise validation_failed(errors) from None


class PasswordRecovery:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        limiter: RateLimiter,
        sessions: SessionGuard,
        clock: Clock,
        limits: RecoveryLimits,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._limiter = limiter
        self._sessions = sessions
        self._clock = clock
        self._limits = limits

    async def request(self, email: str) -> None:
        """Mail a reset code if an active account has this address; the same outcome otherwise."""
        canonical = normalize_email(email)
        now = self._clock.now()
        verdict = await self._limiter.hit(
            limiter_key("password-reset", canonical), self._limits.requests_per_address, now.timestamp()
        )
        if not verdict.allowed:
            # The same 202 as ever, and no mail: a 429 here would be a way to stop the owner's
            # own reset just by asking for resets of their address.
            log.warning("security_event", kind="rate_limited", scope="password_reset_address")
            return
        reset_id = uuid.uuid4()
        code = new_code()
        minutes = int(self._limits.code_ttl.total_seconds() // 60)
        async with self._db.transaction("auth_password_reset_request") as conn:
            await store.delete_expired(conn, now)
            user_id = await store.active_user_id(conn, canonical)
            if user_id is not None:
                await store.add_reset(
                    conn,
                    user_id,
                    reset_id,
                    code_hash(reset_id, code),
                    now,
                    now + self._limits.code_ttl,
                    keep=LIVE_RESETS_PER_ACCOUNT,
                )
                # Queued in this transaction, sent by the outbox workers after the commit.
                await outbox.enqueue(
                    conn,
                    canonical,
                    "Your Veil password reset code",
                    f"Your code to reset your Veil password is {code}.\n"
                    f"It expires in {minutes} minutes and works once.\n\n"
                    "Resetting signs you out everywhere and removes your devices' keys: you will set\n"
                    "up your devices again. If you did not ask for this, ignore this message; your\n"
                    "password stays as it is.\n",
                )
        log.info(
            "security_event",
            kind="password_reset_requested",
            user_id=str(user_id) if user_id else None,
        )

    async def confirm(self, email: str, code: str, new_password: str, ip: str) -> None:
        canonical = normalize_email(email)
        check_new_password_field(new_password, "new_password")
        new_hash = await self._hash(new_password)
        now = self._clock.now()
        ended: list[uuid.UUID] = []
        user_id: uuid.UUID | None = None
        async with self._db.transaction("auth_password_reset_confirm") as conn:
            usable = [
                reset
                for reset in await store.lock_resets(conn, canonical)
                if reset.status == "active"
                and reset.expires_at > now
                and reset.attempts < self._limits.max_attempts
            ]
            # Every usable code is compared, so the time taken does not tell which one matched.
            matches = [r for r in usable if code_matches(r.code_hash, r.id, code)]
            if matches:
                user_id = matches[0].user_id
                await update_password_hash(conn, user_id, new_hash, now)
                await store.delete_resets(conn, user_id)
                ended = await store.end_every_session(conn, user_id, now)
                await notify_revoked(conn, ended)  # open sockets close within seconds
                await signup_store.forget_devices(conn, user_id)
                await outbox.enqueue(
                    conn,
                    canonical,
                    "Your Veil password was reset",
                    "The password of your Veil account was reset with a code sent to this address.\n"
                    "Every session was signed out and its device keys removed.\n"
                    "If this was not you, reset your password again at once and contact support.\n",
                )
            elif usable:
                await store.count_attempts(conn, [r.id for r in usable])
        if user_id is None:  # raised after the commit, so a wrong attempt counts
            log.warning("security_event", kind="password_reset_failed")
            raise invalid_reset()
        self._sessions.revoked(ended)
        # After the commit: the limiter may be another store (memory) than this transaction's.
        await self._limiter.forget(login_failure_keys(canonical, ip))
        log.info("security_event", kind="password_reset", user_id=str(user_id), sessions_ended=len(ended))

    async def _hash(self, password: str) -> str:
        try:
            return await self._passwords.hash(password)
        except Overloaded:
            raise unavailable("Too many password checks are in progress; retry shortly.") from None

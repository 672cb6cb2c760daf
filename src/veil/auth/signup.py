"""Sign-up with email verification, without an account oracle (docs/adr/0015).

`request` answers the same way, in the same time, whether or not the address has an account: the
password is checked and hashed either way, and one mail is queued either way (the outbox sends it
after the commit, veil.core.outbox) (a six-digit code to a
new address, a short notice to an existing account's owner). No account exists until `verify`
confirms a code. Each request is a pending row of its own that expires, so a code creates the
account with the password of the request it was mailed for, and nobody can replace or cancel
someone else's pending sign-up. Codes are stored only as SHA-256 over (sign-up id || code), work
once, expire and allow a few attempts; every way a code can fail gives one and the same 400.
Over the per-address mail budget the answer is still 202 (and nothing is mailed), so nobody can
block someone else's sign-up with a 429.

Registration modes: open, invite (an invite code from `veil invites create`, used up by one at
each account it creates) and closed (403).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from veil.auth import signup_store as store
from veil.auth.policy import check_new_password, normalize_email
from veil.core import outbox
from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.logging import get_logger
from veil.core.problems import Problem, forbidden, unavailable
from veil.core.security.codes import code_hash, code_matches, new_code
from veil.core.security.passwords import Overloaded, Passwords
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key

log = get_logger("veil.security")

RegistrationMode = Literal["open", "invite", "closed"]

WRONG_CODE = "The code is wrong, has expired or was already used; sign up again for a new one."


@dataclass(frozen=True)
class SignupPolicy:
    mode: RegistrationMode
    code_ttl: timedelta
    max_attempts: int
    mails_per_address: Rate


def signup_mail_key(email: str) -> str:
    """The per-address budget of sign-up mails (the purge forgets it with the account)."""
    return limiter_key("signup-mail", email)


def invite_code_hash(code: str) -> bytes:
    return hashlib.sha256(code.strip().encode()).digest()


def _wrong_code() -> Problem:
    return Problem(400, WRONG_CODE, slug="invalid-code", title="Invalid code")


class SignupService:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        limiter: RateLimiter,
        clock: Clock,
        policy: SignupPolicy,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._limiter = limiter
        self._clock = clock
        self._policy = policy

    async def request(self, email: str, password: str, invite_code: str | None) -> None:
        """Start a sign-up: mail a code (or, to an existing account's owner, a notice)."""
        if self._policy.mode == "closed":
            raise forbidden("Registration is closed on this server.")
        canonical = normalize_email(email)
        check_new_password(password)
        now = self._clock.now()
        invite_id = await self._invite(invite_code, now)
        # Hashed whether or not the address is taken, so both answers take the same time.
        password_hash = await self._hash(password)
        # Per address, whether or not it has an account: nobody can mail-bomb a mailbox. Over the
        # budget the answer stays the same 202 (a 429 would let anyone block someone's sign-up).
        verdict = await self._limiter.hit(
            signup_mail_key(canonical), self._policy.mails_per_address, now.timestamp()
        )
        signup_id, code = uuid.uuid4(), new_code()
        signup = store.Signup(
            id=signup_id,
            email=canonical,
            password_hash=password_hash,
            code_hash=code_hash(signup_id, code),
            invite_id=invite_id,
            attempts=0,
            expires_at=now + self._policy.code_ttl,
        )
        minutes = int(self._policy.code_ttl.total_seconds() // 60)
        async with self._db.transaction("auth_signup") as conn:
            # Either way one mail is queued in this transaction and sent after it commits.
            taken = await store.email_in_use(conn, canonical)
            if not verdict.allowed:
                log.warning("security_event", kind="rate_limited", scope="signup_mail")
            elif taken:
                await outbox.enqueue(
                    conn,
                    canonical,
                    "Someone tried to sign up to Veil with your address",
                    "Someone asked to create a Veil account with this email address, which already has\n"
                    "one. Nothing was changed. If it was you, sign in instead; if you forgot your password,\n"
                    "reset it by email (`veil-client reset-password`).\n",
                )
            else:
                await store.insert_signup(conn, signup, now)
                await outbox.enqueue(
                    conn,
                    canonical,
                    "Your Veil sign-up code",
                    f"Your code to finish signing up to Veil is {code}.\n"
                    f"It expires in {minutes} minutes and works once.\n\n"
                    "If you did not ask for this, ignore this message: no account exists without the code.\n",
                )
        log.info("security_event", kind="signup_requested")

    async def verify(self, email: str, code: str) -> uuid.UUID:
        """Create the account of the pending sign-up whose code this is."""
        canonical = normalize_email(email)
        now = self._clock.now()
        user_id = uuid.uuid4()
        created = False
        async with self._db.transaction("auth_signup_verify") as conn:
            live = await store.lock_live_signups(conn, canonical, now, self._policy.max_attempts)
            match = next((s for s in live if code_matches(s.code_hash, s.id, code)), None)
            if match is None:
                # Which request a wrong code was meant for is unknown: it counts against all.
                await store.count_attempt(conn, [s.id for s in live])
            elif self._admits(match):
                invite = match.invite_id
                if invite is not None and not await store.use_invite(conn, invite, now):
                    raise forbidden("The invite code was used up or has expired meanwhile.")
                try:
                    await store.create_verified_user(conn, user_id, canonical, match.password_hash, now)
                    created = True
                except store.EmailTaken:
                    pass  # signed up meanwhile by another request: the same 400
                await store.delete_signups_of(conn, canonical)
        if not created:  # raised after the commit, so a wrong attempt counts
            log.warning("security_event", kind="signup_code_refused")
            raise _wrong_code()
        log.info("security_event", kind="registered", user_id=str(user_id))
        return user_id

    def _admits(self, signup: store.Signup) -> bool:
        """Whether the registration mode in force now still lets this sign-up through: a server that
        closed registration, or became invite-only, after the request refuses it."""
        if self._policy.mode == "closed":
            return False
        return self._policy.mode == "open" or signup.invite_id is not None

    async def _invite(self, code: str | None, now: datetime) -> uuid.UUID | None:
        if self._policy.mode != "invite":
            return None
        if not code:
            raise forbidden("Registration on this server needs an invite code.")
        async with self._db.connection() as conn:
            invite_id = await store.usable_invite(conn, invite_code_hash(code), now)
        if invite_id is None:
            raise forbidden("The invite code is not valid (unknown, used up or expired).")
        return invite_id

    async def _hash(self, password: str) -> str:
        try:
            return await self._passwords.hash(password)
        except Overloaded:
            raise unavailable("Too many sign-ups are in progress; retry shortly.") from None


async def create_invite(db: Database, clock: Clock, *, uses: int, lifetime: timedelta) -> str:
    """A new invite code (shown once; only its hash is kept)."""
    # Hex, not base64url: a code that starts with "-" reads as an option on a command line.
    code = secrets.token_hex(16)
    now = clock.now()
    async with db.transaction("auth_invite_create") as conn:
        await store.insert_invite(conn, uuid.uuid4(), invite_code_hash(code), uses, now, now + lifetime)
    return code

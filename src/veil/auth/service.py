"""Auth use cases: login, refresh, logout, list and revoke sessions (sign-up: veil.auth.signup).

Knows nothing of HTTP: callers pass plain values (the client address, the user agent) and get
domain results or `Problem`s.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from veil.auth import signup_store, store
from veil.auth.lockout import LoginThrottle
from veil.auth.policy import normalize_email
from veil.core.addresses import is_ip
from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.logging import get_logger
from veil.core.metrics import Metrics
from veil.core.problems import Problem, not_found, too_many_requests, unauthorized, unavailable
from veil.core.security.authn import Principal
from veil.core.security.passwords import Overloaded, Passwords
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key
from veil.core.security.sessions import SessionGuard, notify_revoked
from veil.core.security.tokens import AccessTokens

log = get_logger("veil.security")

# One body for unknown email and wrong password (and for a disabled account): no enumeration.
INVALID_CREDENTIALS = "Invalid email or password."


@dataclass(frozen=True)
class AuthLimits:
    per_ip: Rate
    failed_logins_per_account: Rate


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: uuid.UUID
    user_id: uuid.UUID
    # Only from a login: marks this client as a known device in later logins.
    device_token: str | None = None


@dataclass(frozen=True)
class ClientInfo:
    ip: str
    user_agent: str | None


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _new_token() -> str:
    """A refresh or device token: 256 bits from the OS CSPRNG; only its SHA-256 is stored."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


class AuthService:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        tokens: AccessTokens,
        limiter: RateLimiter,
        sessions: SessionGuard,
        clock: Clock,
        *,
        limits: AuthLimits,
        refresh_ttl: timedelta,
        device_token_ttl: timedelta,
        metrics: Metrics,
    ) -> None:
        self._db = db
        self._passwords = passwords
        self._tokens = tokens
        self._limiter = limiter
        self._sessions = sessions
        self._clock = clock
        self._limits = limits
        self._refresh_ttl = refresh_ttl
        self._device_token_ttl = device_token_ttl
        self._throttle = LoginThrottle(limiter, limits.failed_logins_per_account)
        self._failures = metrics.login_failures

    async def check_client_rate(self, client: ClientInfo) -> None:
        """The per-IP limit shared by sign-up, its verification, password reset, login and refresh."""
        decision = await self._limiter.hit(
            limiter_key("auth-ip", client.ip), self._limits.per_ip, self._clock.now().timestamp()
        )
        if not decision.allowed:
            log.warning("security_event", kind="rate_limited", scope="auth_ip", ip=client.ip)
            raise too_many_requests(decision.retry_after_seconds)

    async def login(
        self,
        email: str,
        password: str,
        device_name: str | None,
        client: ClientInfo,
        device_token: str | None = None,
    ) -> IssuedTokens:
        canonical = normalize_email(email)
        now = self._clock.now()
        presented = _hash_token(device_token) if device_token else None
        async with self._db.connection() as conn:
            user = await store.user_by_email(conn, canonical)
            known = (
                presented is not None
                and user is not None
                and await signup_store.known_device(conn, presented, user.id, now)
            )
        # The failure slot is taken before the password is checked (docs/adr/0015).
        try:
            admission = await self._throttle.admit(
                canonical, client.ip, presented if known else None, now.timestamp()
            )
        except Problem:
            self._failures["throttled"].inc()
            raise
        # Always one Argon2 verification, against a dummy hash when there is no such user.
        try:
            matches = await self._verify(user.password_hash if user else None, password)
        except BaseException as exc:  # overloaded (503) or cancelled: no guess was made, so no failure
            await self._throttle.give_back(admission, now.timestamp())
            if isinstance(exc, Problem):
                self._failures["overloaded"].inc()
            raise
        if user is None or not matches or user.status != "active":
            reason = (
                "unknown_email" if user is None else "wrong_password" if not matches else "account_inactive"
            )
            self._failures[reason].inc()
            log.warning(
                "security_event", kind="login_failed", ip=client.ip, user_id=str(user.id) if user else None
            )
            raise unauthorized(INVALID_CREDENTIALS)
        await self._throttle.give_back(admission, now.timestamp())

        rehash = await self._hash(password) if self._passwords.needs_rehash(user.password_hash) else None
        session_id = uuid.uuid4()
        refresh_token = _new_token()
        # A known device keeps its token; any other client gets a new one.
        issued_device_token = device_token if known and device_token else _new_token()
        expires_at = now + self._refresh_ttl
        async with self._db.transaction("auth_login") as conn:
            # The password checked above must still be the account's: a reset or change that
            # committed meanwhile ends this login too. The row stays share-locked until the
            # session is in, so a reset or change that comes later also ends it.
            if await store.lock_password_hash(conn, user.id) != user.password_hash:
                self._failures["password_changed"].inc()
                raise unauthorized(INVALID_CREDENTIALS)
            if rehash is not None:
                await store.update_password_hash(conn, user.id, rehash, now)
            await store.insert_session(
                conn,
                session_id=session_id,
                user_id=user.id,
                device_name=device_name,
                ip=client.ip if is_ip(client.ip) else None,
                user_agent=(client.user_agent or "")[:256] or None,
                now=now,
                expires_at=expires_at,
            )
            await store.insert_refresh_token(conn, _hash_token(refresh_token), session_id, now)
            await signup_store.remember_device(
                conn, _hash_token(issued_device_token), user.id, now, now + self._device_token_ttl
            )
        log.info(
            "security_event", kind="login", user_id=str(user.id), session_id=str(session_id), ip=client.ip
        )
        issued = self._issue(user.id, session_id, refresh_token, expires_at, now)
        return replace(issued, device_token=issued_device_token)

    async def refresh(self, refresh_token: str, client: ClientInfo) -> IssuedTokens:
        now = self._clock.now()
        token_hash = _hash_token(refresh_token)
        new_token = _new_token()
        async with self._db.transaction("auth_refresh") as conn:
            session_id = await store.consume_refresh_token(conn, token_hash, now)
            session = await store.active_session(conn, session_id, now) if session_id else None
            if session is not None:
                await store.insert_refresh_token(conn, _hash_token(new_token), session.id, now)
                await store.touch_session(conn, session.id, client.ip if is_ip(client.ip) else None, now)
        if session is not None:
            return self._issue(session.user_id, session.id, new_token, session.expires_at, now)
        if session_id is None:
            await self._revoke_on_reuse(token_hash, client)
        raise unauthorized("The refresh token is invalid, expired or revoked.")

    async def _revoke_on_reuse(self, token_hash: bytes, client: ClientInfo) -> None:
        """A token that was already rotated is being presented again: whoever holds it, the
        session's token family is compromised, so the whole session ends (RFC 9700 4.14)."""
        now = self._clock.now()
        async with self._db.transaction("auth_refresh_reuse") as conn:
            session_id = await store.session_of_used_token(conn, token_hash)
            if session_id is None:
                return
            revoked = await store.revoke_session(conn, session_id, "refresh_reuse", now)
            if revoked:
                await notify_revoked(conn, [session_id])
        if revoked:
            self._sessions.revoked([session_id])
        log.warning("security_event", kind="refresh_reuse", session_id=str(session_id), ip=client.ip)

    async def logout(self, principal: Principal) -> None:
        await self._revoke(principal.user_id, principal.session_id, "logout")

    async def revoke_session(self, principal: Principal, session_id: uuid.UUID) -> None:
        if not await self._revoke(principal.user_id, session_id, "revoked"):
            raise not_found("No such session.")

    async def _revoke(self, user_id: uuid.UUID, session_id: uuid.UUID, reason: str) -> bool:
        async with self._db.transaction("auth_revoke_session") as conn:
            revoked = await store.revoke_user_session(conn, user_id, session_id, reason, self._clock.now())
            if revoked:
                await notify_revoked(conn, [session_id])
        if revoked:
            self._sessions.revoked([session_id])
            log.info("security_event", kind="session_revoked", reason=reason, session_id=str(session_id))
        return revoked

    async def sessions(self, principal: Principal) -> list[store.SessionRecord]:
        async with self._db.connection() as conn:
            return await store.active_sessions_of(conn, principal.user_id, self._clock.now())

    def _issue(
        self,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        refresh_token: str,
        expires_at: datetime,
        now: datetime,
    ) -> IssuedTokens:
        return IssuedTokens(
            access_token=self._tokens.issue(user_id, session_id, now),
            expires_in=self._tokens.ttl_seconds,
            refresh_token=refresh_token,
            refresh_expires_in=max(0, int((expires_at - now).total_seconds())),
            session_id=session_id,
            user_id=user_id,
        )

    async def _hash(self, password: str) -> str:
        try:
            return await self._passwords.hash(password)
        except Overloaded:
            raise _busy() from None

    async def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return await self._passwords.verify(stored_hash, password)
        except Overloaded:
            raise _busy() from None


def _busy() -> Problem:
    return unavailable("Too many sign-ins are in progress; retry shortly.")

"""Authenticating a request: a valid access token *and* a session that is still active."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from veil.core.clock import Clock
from veil.core.security.sessions import SessionGuard
from veil.core.security.tokens import AccessTokens, InvalidToken


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user and the session (which is also the device)."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    # When the access token that authenticated this caller expires (epoch seconds), if it did.
    token_expires_at: int | None = field(default=None, compare=False)


class Authenticator:
    def __init__(self, tokens: AccessTokens, sessions: SessionGuard, clock: Clock) -> None:
        self._tokens = tokens
        self._sessions = sessions
        self._clock = clock

    async def authenticate(self, bearer_token: str) -> Principal:
        """Raise InvalidToken unless the token verifies and its session is active right now."""
        now = self._clock.now()
        claims = self._tokens.verify(bearer_token, now)
        if not await self._sessions.is_active(claims.session_id, now):
            raise InvalidToken
        return Principal(claims.user_id, claims.session_id, claims.expires_at)

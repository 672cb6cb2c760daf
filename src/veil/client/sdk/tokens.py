"""The session's token pair as the client keeps it, and what a refused refresh means.

Both tokens are kept in the keystore, the access token too: a process that finds a pair another
process of the same profile just obtained uses it instead of refreshing again (docs/adr/0020).
Times are wall-clock seconds, because they are compared by other processes than the one that
wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veil.client.sdk.models import VeilError

# Refresh this long before the access token expires, so a request never races its expiry.
REFRESH_MARGIN_SECONDS = 30.0
# A refusal this close to the session's end is put down to its expiry (clocks differ a little).
_EXPIRY_SLACK_SECONDS = 60.0


class SessionEndedError(VeilError):
    """The server refused the refresh token (401): this device's session is over and it must sign
    in again. `expired`: the session reached the end of its lifetime (30 days from login); if not,
    it was revoked (a logout or sign-out elsewhere, a password change, an operator, or a refresh
    token presented twice, which the server takes for theft)."""

    def __init__(self, refusal: VeilError, *, expired: bool) -> None:
        super().__init__(refusal.status, refusal.title, refusal.detail, refusal.problem, refusal.retry_after)
        self.expired = expired


@dataclass(frozen=True)
class SessionTokens:
    refresh_token: str
    refresh_expires_at: float | None  # None in keystores written before it was kept
    access_token: str | None = None
    access_renew_at: float = 0.0  # the access token's expiry less the margin

    @classmethod
    def issued(cls, pair: Mapping[str, Any], now: float) -> SessionTokens:
        """The tokens of a login or refresh answer (`expires_in`, `refresh_expires_in`: seconds)."""
        refresh_lifetime = pair.get("refresh_expires_in")
        return cls(
            refresh_token=str(pair["refresh_token"]),
            refresh_expires_at=None if refresh_lifetime is None else now + float(refresh_lifetime),
            access_token=str(pair["access_token"]),
            access_renew_at=now + max(0.0, float(pair["expires_in"]) - REFRESH_MARGIN_SECONDS),
        )

    def access_due(self, now: float) -> bool:
        """Whether the access token must be renewed before the next request."""
        return self.access_token is None or now >= self.access_renew_at

    def ended(self, refusal: VeilError, now: float) -> SessionEndedError:
        """The error for the server's refusal of this refresh token at `now`."""
        expired = (
            self.refresh_expires_at is not None and now >= self.refresh_expires_at - _EXPIRY_SLACK_SECONDS
        )
        return SessionEndedError(refusal, expired=expired)


def tokens_state(tokens: SessionTokens | None) -> dict[str, Any]:
    """The keystore members (of `veil_http`) that hold `tokens`."""
    if tokens is None:
        return {"refresh_token": None}
    return {
        "refresh_token": tokens.refresh_token,
        "refresh_expires_at": tokens.refresh_expires_at,
        "access_token": tokens.access_token,
        "access_renew_at": tokens.access_renew_at,
    }


def tokens_from_state(extra: Mapping[str, Any]) -> SessionTokens | None:
    """The tokens kept in `veil_http`; None when signed out. Keystores written before the access
    token was kept hold only the refresh token: the first request then refreshes."""
    refresh = extra.get("refresh_token")
    if not isinstance(refresh, str):
        return None
    access = extra.get("access_token")
    refresh_expires_at = extra.get("refresh_expires_at")
    return SessionTokens(
        refresh_token=refresh,
        refresh_expires_at=None if refresh_expires_at is None else float(refresh_expires_at),
        access_token=access if isinstance(access, str) else None,
        access_renew_at=float(extra.get("access_renew_at") or 0.0),
    )
